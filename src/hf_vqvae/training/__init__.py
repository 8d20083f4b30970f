"""Small, tested pieces that scripts/train.py composes: arguments, model building, checkpoints, the loop.

The names below are imported on first use (PEP 562), not with the package: the loop and the checkpoints need
`accelerate` and `datasets` (the `[train]` extra), while inference code such as scripts/sample.py imports only
`hf_vqvae.training.artifacts` and must work with a bare `pip install hf_vqvae`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the submodule that defines it
_EXPORTS = {
    "ModelArguments": "arguments",
    "TrainArguments": "arguments",
    "parse_config_overrides": "arguments",
    "TrainingState": "checkpointing",
    "find_checkpoint": "checkpointing",
    "list_checkpoints": "checkpointing",
    "TrainingInterrupted": "interrupts",
    "EmptyEpochError": "loop",
    "NonFiniteLossError": "loop",
    "train": "loop",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from .arguments import ModelArguments, TrainArguments, parse_config_overrides
    from .checkpointing import TrainingState, find_checkpoint, list_checkpoints
    from .interrupts import TrainingInterrupted
    from .loop import EmptyEpochError, NonFiniteLossError, train


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = sorted(_EXPORTS)
