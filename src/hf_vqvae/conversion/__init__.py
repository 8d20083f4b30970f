"""Converters from other projects' checkpoints to this library's models."""

from .rosinality import (
    convert_rosinality_checkpoint,
    convert_rosinality_state_dict,
    load_rosinality_state_dict,
)

__all__ = ["convert_rosinality_checkpoint", "convert_rosinality_state_dict", "load_rosinality_state_dict"]
