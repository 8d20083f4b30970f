"""Convert rosinality/vq-vae-2-pytorch `VQVAE` checkpoints (e.g. its FFHQ-256 `vqvae_560.pt`) to [`VQVAE2Model`].

Rosinality's modules keep our `nn.Sequential` indices, so the conversion renames prefixes (bottom level `*_b`,
top level `*_t`; our levels are indexed top first) and transposes the codebook statistics, which rosinality
stores as (D, K) where ours are (K, D):

    enc_b.* -> encoders.1.*            enc_t.* -> encoders.0.*
    quantize_conv_t.* -> pre_quantizers.0.*          quantize_conv_b.* -> pre_quantizers.1.*
    dec_t.* -> condition_decoders.0.*  upsample_t.* -> upsamplers.0_to_1.blocks.0.*      dec.* -> decoder.*
    quantize_{t,b}.embed (D, K) -> quantizers.{0,1}.codebook (K, D)
    quantize_{t,b}.cluster_size (K,) -> quantizers.{0,1}.ema_cluster_size (K,)
    quantize_{t,b}.embed_avg (D, K) -> quantizers.{0,1}.ema_embed_sum (K, D)

Checkpoints are read with `torch.load(weights_only=True)` only: a file that pickles anything but tensors and
plain containers is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping

import torch

from ..models.vqvae import VQVAE2Config, VQVAE2Model

ROSINALITY_PRESET = "rosinality-ffhq256"

# (rosinality prefix, our prefix); the quantizer prefixes are followed by a field of QUANTIZER_FIELDS.
PREFIXES = (
    ("enc_b.", "encoders.1."),
    ("enc_t.", "encoders.0."),
    ("quantize_conv_t.", "pre_quantizers.0."),
    ("quantize_conv_b.", "pre_quantizers.1."),
    ("dec_t.", "condition_decoders.0."),
    ("upsample_t.", "upsamplers.0_to_1.blocks.0."),
    ("dec.", "decoder."),
    ("quantize_t.", "quantizers.0."),
    ("quantize_b.", "quantizers.1."),
)
# rosinality quantizer field -> (our field, stored transposed)
QUANTIZER_FIELDS = {
    "embed": ("codebook", True),
    "cluster_size": ("ema_cluster_size", False),
    "embed_avg": ("ema_embed_sum", True),
}
_QUANTIZER_PREFIXES = ("quantizers.0.", "quantizers.1.")


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def load_rosinality_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a rosinality checkpoint (a plain state dict saved with `torch.save`) safely.

    Only `torch.load(path, map_location="cpu", weights_only=True)` is used, so nothing in the file is executed.
    A `module.` prefix on every key (a model saved inside `DataParallel`) is removed.

    Raises:
        ValueError: the file is missing or unreadable, holds objects other than tensors (refused for safety),
            or is not a dict of name -> tensor.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path} does not exist or is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(_refusal_message(path, error)) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"could not read {path} as a torch.save checkpoint ({error}); is it truncated?") from None
    return _strip_data_parallel_prefix(_require_plain_state_dict(loaded, path))


def convert_rosinality_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: VQVAE2Config | None = None
) -> dict[str, torch.Tensor]:
    """Rosinality `VQVAE` state dict -> a complete state dict of our [`VQVAE2Model`] for `config`.

    `config` defaults to the `rosinality-ffhq256` preset. The quantizers' buffers that rosinality lacks are
    filled in: `initialized` is True (the codebook is trained; no k-means initialisation runs), `ema_steps`
    is 0 (rosinality keeps no step count; without EMA bias correction, as in rosinality, the count only counts
    and changes no value), `steps_since_used` (with a dead-code threshold) starts at 0.

    Raises:
        ValueError: listing every missing and every unexpected key by its rosinality name, and every tensor whose
            shape differs from the model's (both shapes, in rosinality's layout); or a config rosinality's
            checkpoints cannot fill.
    """
    config = _default_config(config)
    _check_config_is_convertible(config)
    target = _target_tensors(config)
    key_map = _rosinality_key_map(target)
    _check_keys_and_shapes(state_dict, key_map, target)
    converted = {}
    for rosinality_key, (our_key, transposed) in key_map.items():
        tensor = state_dict[rosinality_key]
        converted[our_key] = tensor.t().contiguous() if transposed else tensor.clone()
    converted.update(_buffers_without_counterpart(target))
    return converted


def convert_rosinality_checkpoint(path: str | os.PathLike, config: VQVAE2Config | None = None) -> VQVAE2Model:
    """A rosinality checkpoint file -> a [`VQVAE2Model`] in eval mode (config: the `rosinality-ffhq256` preset)."""
    config = _default_config(config)
    converted = convert_rosinality_state_dict(load_rosinality_state_dict(path), config)
    model = VQVAE2Model(config)
    model.load_state_dict(converted, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def _refusal_message(path: str, error: pickle.UnpicklingError) -> str:
    # torch's own reason, without its advice to allowlist the offending global.
    reason = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", str(error))
    detail = reason.group(1) if reason else str(error).split(". ")[0]
    if "Unsupported global" in detail:
        what = "holds pickled objects other than tensors"
    else:
        what = "is not a plain torch.save file of tensors the safe loader can read"
    return (
        f"{path} {what} ({detail}). It was refused for safety: it was read with torch.load(weights_only=True) and "
        f"nothing in it was executed. If you trust its source, load it once in a separate trusted environment and "
        f"re-save only the model's weights as a plain state dict of tensors, e.g. "
        f"torch.save(model.state_dict(), 'vqvae_plain.pt'), then convert that file."
    )


def _require_plain_state_dict(loaded: object, path: str) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"{path} holds a {type(loaded).__name__}, not a state dict; expected a dict of parameter name -> tensor "
            f"as written by torch.save(model.state_dict(), path)"
        )
    not_tensors = [f"{key!r} ({type(value).__name__})" for key, value in loaded.items()
                   if not (isinstance(key, str) and isinstance(value, torch.Tensor))]  # fmt: skip
    if not_tensors:
        raise ValueError(
            f"{path} holds a dict that is not a plain state dict: entries {', '.join(not_tensors)} are not "
            f"name -> tensor. If the weights are wrapped (e.g. under 'model'), re-save just them: "
            f"torch.save(checkpoint['model'], 'vqvae_plain.pt')"
        )
    return dict(loaded)


def _strip_data_parallel_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "module."
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


# ----------------------------------------------------------------------------------------------------------------
# Mapping
# ----------------------------------------------------------------------------------------------------------------


def _default_config(config: VQVAE2Config | None) -> VQVAE2Config:
    return VQVAE2Config.from_preset(ROSINALITY_PRESET) if config is None else config


def _check_config_is_convertible(config: VQVAE2Config) -> None:
    if not isinstance(config, VQVAE2Config) or config.num_levels != 2:
        raise ValueError(
            f"rosinality checkpoints have two levels (top and bottom); got {type(config).__name__} with "
            f"level_downsamples={getattr(config, 'level_downsamples', None)}. Use VQVAE2Config.from_preset("
            f"'{ROSINALITY_PRESET}')"
        )
    if config.ema_decay is None:
        raise ValueError("rosinality's quantizers are EMA quantizers; the config needs ema_decay (0.99), not None")
    if config.ema_bias_correction:
        raise ValueError(
            "rosinality's EMA statistics are not bias-corrected (they start from the codebook, not from zero); "
            "use a config with ema_bias_correction=False"
        )


def _target_tensors(config: VQVAE2Config) -> dict[str, torch.Tensor]:
    """Our model's state dict for `config` on the meta device (shapes and dtypes, no memory)."""
    with torch.device("meta"):
        return VQVAE2Model(config).state_dict()


def _rosinality_key_map(target: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, bool]]:
    """rosinality key -> (our key, stored transposed) for every tensor of ours that has a rosinality counterpart."""
    key_map = {}
    for our_key in target:
        rosinality_key, transposed = _rosinality_name(our_key)
        if rosinality_key is not None:
            key_map[rosinality_key] = (our_key, transposed)
    return key_map


def _rosinality_name(our_key: str) -> tuple[str | None, bool]:
    """Rosinality's name for one of our keys and whether it is transposed; (None, False) for our own buffers."""
    for rosinality_prefix, our_prefix in PREFIXES:
        if not our_key.startswith(our_prefix):
            continue
        rest = our_key[len(our_prefix):]
        if our_prefix not in _QUANTIZER_PREFIXES:
            return rosinality_prefix + rest, False
        for field, (our_field, transposed) in QUANTIZER_FIELDS.items():
            if rest == our_field:
                return rosinality_prefix + field, transposed
        return None, False
    raise ValueError(f"no rosinality counterpart is known for {our_key!r}; is the config rosinality's?")


def _buffers_without_counterpart(target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our quantizer buffers rosinality has no tensor for: trained (`initialized`), counters at zero."""
    filled = {}
    for our_key, tensor in target.items():
        if _rosinality_name(our_key)[0] is not None:
            continue
        value = True if our_key.endswith(".initialized") else 0
        filled[our_key] = torch.full(tensor.shape, value, dtype=tensor.dtype)
    return filled


def _check_keys_and_shapes(
    state_dict: Mapping[str, torch.Tensor],
    key_map: Mapping[str, tuple[str, bool]],
    target: Mapping[str, torch.Tensor],
) -> None:
    missing = [key for key in key_map if key not in state_dict]
    unexpected = [key for key in state_dict if key not in key_map]
    mismatched = []
    for key, (our_key, transposed) in key_map.items():
        if key not in state_dict:
            continue
        expected = tuple(target[our_key].shape)
        expected = expected[::-1] if transposed else expected
        found = tuple(getattr(state_dict[key], "shape", ()))
        if not isinstance(state_dict[key], torch.Tensor) or found != expected:
            mismatched.append(f"{key}: checkpoint {found}, model expects {expected}")
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
    if problems:
        raise ValueError(
            "the state dict does not match rosinality's VQVAE layout for this config: " + " | ".join(problems)
            + ". Was it saved from rosinality's VQVAE with the same channel/embedding settings as the config?"
        )
