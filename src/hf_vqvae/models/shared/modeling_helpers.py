"""Strict safetensors loading, traced-safe value checks, and the input checks both priors share."""

from __future__ import annotations

import math
import os

import torch


def check_failed(condition: torch.Tensor, traced_message: str) -> bool:
    """Whether the bool tensor `condition` is False, for a value check that then raises a `ValueError`.

    Traced (torch.compile, torch.export), a Python branch on a tensor's value would break the graph: the check
    becomes an in-graph assertion (`torch._assert_async`, a RuntimeError with `traced_message`) and this returns
    False.
    """
    if torch.compiler.is_compiling():
        torch._assert_async(condition, traced_message)
        return False
    return not bool(condition)


def is_integer_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and not (value.is_floating_point() or value.is_complex()) and (
        value.dtype != torch.bool
    )


def shape_of(value):
    """A tensor's shape, or the type name of anything else, for error messages."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


class StrictLoadingMixin:
    """`from_pretrained` from safetensors only, strict, with clear errors for broken folders. Put it before
    `PreTrainedModel` in the bases."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, allow_partial_load: bool = False, **kwargs):
        """As `PreTrainedModel.from_pretrained`, safetensors only, strict, with clear errors for broken folders.

        A weight of the model missing from the checkpoint, a weight of the checkpoint that the model does not have,
        or one of another shape raises a `ValueError` naming them, instead of a model with randomly initialised
        layers. `allow_partial_load=True` loads the weights that match and initialises the rest (to fine-tune from
        part of a model); `ignore_mismatched_sizes=True` allows only the shape differences. With
        `output_loading_info=True` it returns `(model, loading_info)` as transformers does.
        """
        path = os.fspath(pretrained_model_name_or_path)
        require_safetensors(path)
        return_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        kwargs.setdefault("use_safetensors", True)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        except Exception as error:
            raise_if_unreadable(path, error)
            raise
        if not allow_partial_load:
            require_complete_load(path, type(model).__name__, info, ignore_mismatched)
        return (model, info) if return_info else model


def require_safetensors(path: str) -> None:
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise ValueError(
            f"{path} has no model.safetensors; this library loads weights only from safetensors. "
            f"Save the model with save_pretrained, or convert pickled weights with a trusted tool first"
        )


def raise_if_unreadable(path: str, error: Exception) -> None:
    """A clear `ValueError` for a truncated or corrupt safetensors file; any other error is left to the caller."""
    if "safetensor" in type(error).__name__.lower() or "deserializ" in str(error).lower():
        raise ValueError(
            f"could not read the weights in {path}: the safetensors file is truncated or corrupt ({error}); "
            f"save or download it again"
        ) from error


def require_complete_load(path: str, model_name: str, info: dict, ignore_mismatched: bool) -> None:
    """Raise a `ValueError` naming the weights a load would leave randomly initialised or would drop."""
    mismatched = [f"{key} (shape {list(saved)} in the file, {list(wanted)} in the model)" for key, saved, wanted in
                  info["mismatched_keys"]]  # fmt: skip
    problems = [
        (sorted(info["missing_keys"]), "weight(s) of the model missing from the checkpoint"),
        (sorted(info["unexpected_keys"]), "weight(s) in the checkpoint that the model does not have"),
        ([] if ignore_mismatched else sorted(mismatched), "weight(s) of another shape"),
    ]
    found = [f"{len(keys)} {what} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})" for keys, what in
             problems if keys]  # fmt: skip
    if found:
        raise ValueError(
            f"{path} does not hold the weights of this {model_name}: {'; '.join(found)}. Loaded as is, the model would "
            f"have randomly initialised layers or drop saved weights. Check that its config.json and model.safetensors "
            f"come from the same saved model (save it again with save_pretrained), or pass allow_partial_load=True to "
            f"load only the matching weights (e.g. to fine-tune from part of a model)"
        )


# ----------------------------------------------------------------------------------------------------------------
# The priors' inputs
# ----------------------------------------------------------------------------------------------------------------


def check_code_map(name: str, codes, num_embeddings: int, field: str = "num_embeddings") -> torch.LongTensor:
    """A (batch, height, width) map of integer code indices in [0, num_embeddings), not empty; returned as long."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
        raise ValueError(f"{name} must be a (batch, height, width) LongTensor of code indices, got {shape_of(codes)}")
    if not is_integer_tensor(codes):
        raise ValueError(f"{name} must hold integer code indices (torch.long), got dtype {codes.dtype}")
    if codes.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(codes.shape)}); pass at least one code")
    if check_failed(((codes >= 0) & (codes < num_embeddings)).all(), f"{name} must lie in [0, {num_embeddings})"):
        low, high = int(codes.min()), int(codes.max())
        raise ValueError(
            f"{name} must lie in [0, {num_embeddings}) ({field}={num_embeddings}), got values in [{low}, {high}]; "
            f"were they produced by a VQ-VAE with another codebook size?"
        )
    return codes.long()


def check_class_labels(class_labels, batch_size: int, num_classes: int) -> torch.LongTensor | None:
    """None for an unconditional prior (which refuses labels); else (batch_size,) labels in [0, num_classes)."""
    if num_classes == 0:
        if class_labels is not None:
            raise ValueError(
                "class_labels were given but this prior is not class-conditional (num_classes=0); drop them or "
                "use a config with num_classes > 0"
            )
        return None
    if class_labels is None:
        raise ValueError(
            f"this prior is class-conditional (num_classes={num_classes}); pass class_labels, a ({batch_size},) "
            f"LongTensor of labels in [0, {num_classes})"
        )
    if not is_integer_tensor(class_labels) or tuple(class_labels.shape) != (batch_size,):
        dtype = f" of dtype {class_labels.dtype}" if isinstance(class_labels, torch.Tensor) else ""
        raise ValueError(
            f"class_labels must be a ({batch_size},) LongTensor (one label per code map), got "
            f"{shape_of(class_labels)}{dtype}"
        )
    in_range = ((class_labels >= 0) & (class_labels < num_classes)).all()
    if check_failed(in_range, f"class_labels must lie in [0, {num_classes})"):
        low, high = int(class_labels.min()), int(class_labels.max())
        raise ValueError(
            f"class_labels must lie in [0, {num_classes}) (num_classes={num_classes}), got values in [{low}, {high}]"
        )
    return class_labels.long()


def check_no_condition(condition_codes) -> None:
    if condition_codes is not None:
        raise ValueError(
            "condition_codes were given but this prior has no spatial condition (condition_num_embeddings=0); "
            "drop them or use a config with condition_num_embeddings > 0 (a VQ-VAE-2 lower-level prior)"
        )


def check_sampling(temperature, top_k, top_p) -> None:
    """ValueErrors for a bad temperature (a finite number > 0), top-k (None or >= 1) or top-p (None or in (0, 1])."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature!r}; use a small value (e.g. 1e-3) or "
            f"top_k=1 for greedy decoding"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1 (1 is greedy decoding), got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0
    ):
        raise ValueError(f"top_p must be None or a number in (0, 1] (nucleus sampling mass), got {top_p!r}")


def check_fixed_codes(fixed_codes, fixed_mask, codes_shape: tuple[int, int, int], num_embeddings: int, device):
    """(None, None), or the codes to keep and where, for completion / inpainting: both of shape `codes_shape`."""
    if fixed_codes is None and fixed_mask is None:
        return None, None
    if fixed_codes is None or fixed_mask is None:
        raise ValueError("fixed_codes and fixed_mask go together: pass both (or neither)")
    if not isinstance(fixed_mask, torch.Tensor) or fixed_mask.dtype != torch.bool:
        dtype = f" of dtype {fixed_mask.dtype}" if isinstance(fixed_mask, torch.Tensor) else ""
        raise ValueError(f"fixed_mask must be a bool tensor of shape {codes_shape}, got {shape_of(fixed_mask)}{dtype}")
    for name, value in (("fixed_codes", fixed_codes), ("fixed_mask", fixed_mask)):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != codes_shape:
            raise ValueError(f"{name} must have shape (batch_size, height, width) = {codes_shape}, got {shape_of(value)}")
    if not is_integer_tensor(fixed_codes):
        raise ValueError(f"fixed_codes must hold integer code indices, got dtype {fixed_codes.dtype}")
    kept = fixed_codes[fixed_mask]
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= num_embeddings):
        raise ValueError(
            f"fixed_codes must lie in [0, {num_embeddings}) (num_embeddings) where fixed_mask is True, got values in "
            f"[{int(kept.min())}, {int(kept.max())}]"
        )
    return fixed_codes.long().to(device), fixed_mask.to(device)
