# GENERATED from src/hf_vqvae/models/shared/config_helpers.py by scripts/generate_model_helpers.py: do not edit.
# A saved model folder loads with trust_remote_code=True, which carries only this folder's files, hence the copy.
"""Checks of config values and the config mixin (presets, a model_type guard on loading) of every model family.

Imports no torch: a config module (and so `AutoConfig`) loads without it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

# The largest image side (pixels) a config accepts: far above every preset (1024) and every training resolution, small
# enough that a typo (image_size=2**22) fails here, naming the field, instead of in an allocation of terabytes.
MAX_IMAGE_SIDE = 8192


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    too_big = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")


def is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(options)}")


def check_image_size(value: Any) -> int | list[int]:
    """`image_size` as stored: an integer, or [height, width] as a list; each side in [1, MAX_IMAGE_SIDE]."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"image_size must be an integer or [height, width], got {value!r}")
        check_int("image_size height", value[0], 1, MAX_IMAGE_SIDE)
        check_int("image_size width", value[1], 1, MAX_IMAGE_SIDE)
        return list(value)
    check_int("image_size (an integer or [height, width])", value, 1, MAX_IMAGE_SIDE)
    return value


def image_hw(image_size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    return int(image_size[0]), int(image_size[1])


class ConfigMixin:
    """`from_preset(name, **overrides)` and `list_presets()` over a class-level `PRESETS` table, and a
    `from_pretrained` that refuses a config of another model_type. Put it before `PreTrainedConfig` in the bases."""

    PRESETS = {}  # name -> keyword arguments; filled by each config class

    @classmethod
    def list_presets(cls) -> list[str]:
        """Names accepted by `from_preset`."""
        return sorted(cls.PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """The named architecture from the papers (an architecture, not weights); keywords override any field."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known presets: {', '.join(cls.list_presets())}")
        return cls(**{**copy.deepcopy(cls.PRESETS[name]), **overrides})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **dict(kwargs))
        found = config_dict.get("model_type")
        if found is not None and found != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a config of model_type {found!r}, not {cls.model_type!r}; "
                f"load it with AutoModel.from_pretrained (after `import hf_vqvae`) or the matching class"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
