"""Small, tested pieces that scripts/train.py composes: arguments, model building, checkpoints, the loop."""

from .arguments import ModelArguments, TrainArguments, parse_config_overrides
from .checkpointing import TrainingState, find_checkpoint, list_checkpoints
from .interrupts import TrainingInterrupted
from .loop import EmptyEpochError, NonFiniteLossError, train

__all__ = [
    "EmptyEpochError",
    "ModelArguments",
    "NonFiniteLossError",
    "TrainArguments",
    "TrainingInterrupted",
    "TrainingState",
    "find_checkpoint",
    "list_checkpoints",
    "parse_config_overrides",
    "train",
]
