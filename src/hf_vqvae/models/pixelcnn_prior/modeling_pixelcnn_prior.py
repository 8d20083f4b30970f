"""Gated PixelCNN prior over VQ-VAE codes (van den Oord et al. 2016; VQ-VAE 2017; VQ-VAE-2 2019) as a HF model.

The prior factorises p(c) = ∏_t p(c_t | c_<t, y, s) over a (H, W) code map in raster (row-major) order, with an
optional class label y (eq. 4 of the Gated PixelCNN paper) and an optional spatial condition s computed from the
upper level's codes (eq. 5; the VQ-VAE-2 bottom prior). Network:

    codes (B, H, W) -> embedding (B, C, H, W) -> gated layer, mask 'A' -> num_layers gated layers, mask 'B'
    (with causal self-attention blocks between some of them) -> sum of the layers' skip outputs
    -> ReLU, 1x1 conv, ReLU, 1x1 conv -> logits (B, K, H, W)

See `layers.py` for the stacks and their masks and `sampling.py` for the naive and the cached samplers. `forward`
has no Python branch on a tensor's value (value checks become in-graph assertions when traced), so `torch.compile`
traces the training forward without a graph break.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_pixelcnn_prior import PixelCNNPriorConfig
from .layers import CausalSelfAttention, ConditioningStack, GatedMaskedConvLayer
from .sampling import IncrementalSampler, NaiveSampler, autoregressive_sample, check_sampling_arguments


@dataclass
class PixelCNNPriorOutput(ModelOutput):
    """
    Output of [`PixelCNNPriorModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): mean cross-entropy of the codes under the logits, in nats per code
            (the negative log-likelihood -log p(c) / (H W), averaged over the batch).
        logits (`torch.FloatTensor` of shape `(batch, num_embeddings, height, width)`): unnormalised log-probabilities
            of every code at every position, given the codes before it in raster order (and the conditions).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


def _integer_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and not value.dtype.is_floating_point and not value.is_complex() and (
        value.dtype != torch.bool
    )


def _check_failed(condition: torch.Tensor, traced_message: str) -> bool:
    """Whether the bool tensor `condition` is False, for a value check that then raises a `ValueError`.

    Traced (torch.compile, torch.export), a Python branch on a tensor's value would break the graph: the check
    becomes an in-graph assertion (`torch._assert_async`, a RuntimeError with `traced_message`) and this returns
    False. Duplicated from models/vqvae/quantizer.py (self-contained folder); tests keep the copies equal.
    """
    if torch.compiler.is_compiling():
        torch._assert_async(condition, traced_message)
        return False
    return not bool(condition)


def _shape(value):
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


class PixelCNNPriorPreTrainedModel(PreTrainedModel):
    """Weights init (PyTorch's default) and safetensors-only loading."""

    config_class = PixelCNNPriorConfig
    main_input_name = "codes"
    base_model_prefix = "prior"
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default initialisation, not transformers' N(0, 0.02) (which would silently change the model).
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding, nn.LayerNorm)):
            module.reset_parameters()

    # Duplicated from models/vqvae/modeling_vqvae.py: this folder must import nothing outside itself, so that a
    # saved model loads with trust_remote_code=True where hf_vqvae is not installed.
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
        _require_safetensors(path)
        return_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        kwargs.setdefault("use_safetensors", True)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        except Exception as error:
            _raise_if_unreadable(path, error)
            raise
        if not allow_partial_load:
            _require_complete_load(path, type(model).__name__, info, ignore_mismatched)
        return (model, info) if return_info else model


class PixelCNNPriorModel(PixelCNNPriorPreTrainedModel):
    r"""
    Gated PixelCNN prior over a map of VQ-VAE codes, optionally class-conditional, spatially conditioned on an upper
    level's codes (VQ-VAE-2 bottom prior) and with causal self-attention (VQ-VAE-2 top prior).

    Example:

    ```python
    >>> import torch
    >>> from hf_vqvae.models.pixelcnn_prior import PixelCNNPriorConfig, PixelCNNPriorModel
    >>> model = PixelCNNPriorModel(PixelCNNPriorConfig.from_preset("mnist")).eval()
    >>> codes = torch.randint(0, 128, (2, 7, 7))
    >>> output = model(codes, class_labels=torch.tensor([3, 5]))
    >>> output.logits.shape, output.loss.shape  # loss: nats per code
    (torch.Size([2, 128, 7, 7]), torch.Size([]))
    >>> model.sample(4, class_labels=torch.tensor([0, 1, 2, 3]), generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 7, 7])
    ```
    """

    def __init__(self, config: PixelCNNPriorConfig):
        super().__init__(config)
        channels = config.hidden_channels
        condition_channels = config.condition_hidden_channels if config.condition_num_embeddings > 0 else 0
        self.embedding = nn.Embedding(config.num_embeddings, channels)
        self.condition_stack = (
            ConditioningStack(
                config.condition_num_embeddings,
                config.condition_hidden_channels,
                config.condition_num_residual_blocks,
                config.condition_upsample_factor,
            )
            if condition_channels
            else None
        )
        num_gated = config.num_layers + 1  # layers[0] has mask 'A', layers[1:] mask 'B'
        self.layers = nn.ModuleList(
            GatedMaskedConvLayer(
                channels,
                config.first_kernel_size if index == 0 else config.kernel_size,
                mask_type="A" if index == 0 else "B",
                has_residual_output=index < num_gated - 1,  # the last layer's h_out would never be read
                num_classes=config.num_classes,
                condition_channels=condition_channels,
                dropout=config.dropout,
            )
            for index in range(num_gated)
        )
        # attention_blocks[a] runs on the horizontal stack after layers[attention_positions[a]].
        self.attention_positions = list(config.attention_positions)
        self.attention_blocks = nn.ModuleList(
            CausalSelfAttention(channels, config.num_heads, config.dropout) for _ in self.attention_positions
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(channels, config.num_embeddings, kernel_size=1),
        )
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------------------------

    def forward(
        self,
        codes: torch.LongTensor,
        class_labels: torch.LongTensor | None = None,
        condition_codes: torch.LongTensor | None = None,
        return_dict: bool = True,
    ) -> PixelCNNPriorOutput:
        """
        Args:
            codes (`torch.LongTensor` of shape `(batch, height, width)`): code indices in [0, num_embeddings).
            class_labels (`torch.LongTensor` of shape `(batch,)`, *optional*): required iff `num_classes > 0`.
            condition_codes (`torch.LongTensor` of shape `(batch, height / f, width / f)`, *optional*): the upper
                level's codes, f = `condition_upsample_factor`; required iff `condition_num_embeddings > 0`.

        Returns:
            [`PixelCNNPriorOutput`]: logits `(batch, num_embeddings, height, width)` and the mean cross-entropy.
        """
        codes = self._check_codes(codes, "codes")
        class_labels = self._check_class_labels(class_labels, codes.shape[0])
        condition_codes = self._check_condition_codes(condition_codes, tuple(codes.shape))
        spatial = self.condition_stack(condition_codes) if self.condition_stack is not None else None
        logits = self._logits(codes, class_labels, spatial)
        loss = F.cross_entropy(logits.float(), codes)
        output = PixelCNNPriorOutput(loss=loss, logits=logits)
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        shape: tuple[int, int] | list[int] | None = None,
        class_labels: torch.LongTensor | None = None,
        condition_codes: torch.LongTensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        fixed_codes: torch.LongTensor | None = None,
        fixed_mask: torch.BoolTensor | None = None,
    ) -> torch.LongTensor:
        """
        Ancestral sampling of `(batch_size, H, W)` codes in raster order, in eval mode (the mode is restored).

        Args:
            batch_size (`int`): number of code maps.
            shape (`(H, W)`, *optional*): code map size; defaults to `config.code_shape`, else to the size implied by
                `condition_codes`.
            class_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): required iff `num_classes > 0`.
            condition_codes (`torch.LongTensor` of shape `(batch_size, H / f, W / f)`, *optional*): upper-level
                codes; required iff `condition_num_embeddings > 0`.
            temperature (`float`, defaults to 1.0): logits are divided by it before filtering.
            top_k (`int`, *optional*): keep only the k most probable codes at every position.
            top_p (`float`, *optional*): keep only the nucleus of the codes whose probability reaches top_p.
            generator (`torch.Generator`, *optional*): the source of randomness; one `torch.multinomial` draw for
                the whole batch per position, identical for both samplers.
            use_cache (`bool`, defaults to True): the incremental sampler (cached vertical stack, per-row horizontal
                stack, attention key/value cache); False runs the full network once per position (H * W passes).
                Both give the same codes for the same generator state.
            fixed_codes (`torch.LongTensor` of shape `(batch_size, H, W)`, *optional*): codes to keep where
                `fixed_mask` is True (completion / inpainting); what is fixed conditions what follows it.
            fixed_mask (`torch.BoolTensor` of shape `(batch_size, H, W)`, *optional*): where to keep `fixed_codes`.

        Returns:
            `torch.LongTensor` of shape `(batch_size, H, W)`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        check_sampling_arguments(temperature, top_k, top_p)
        height, width = self._sample_shape(shape, condition_codes)
        codes_shape = (batch_size, height, width)
        class_labels = self._check_class_labels(class_labels, batch_size)
        condition_codes = self._check_condition_codes(condition_codes, codes_shape)
        fixed_codes, fixed_mask = self._check_fixed(fixed_codes, fixed_mask, codes_shape)
        device = self.device
        class_labels = class_labels.to(device) if class_labels is not None else None
        condition_codes = condition_codes.to(device) if condition_codes is not None else None
        was_training = self.training
        self.eval()
        try:
            spatial = self.condition_stack(condition_codes) if self.condition_stack is not None else None
            sampler_class = IncrementalSampler if use_cache else NaiveSampler
            sampler = sampler_class(self, batch_size, height, width, class_labels, spatial)
            return autoregressive_sample(
                sampler, height, width, temperature, top_k, top_p, generator, fixed_codes, fixed_mask
            )
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------------------------

    def _logits(
        self, codes: torch.Tensor, class_labels: torch.Tensor | None, spatial: torch.Tensor | None
    ) -> torch.Tensor:
        """Validated codes (B, H, W), labels (B,) or None, condition map (B, Cc, H, W) or None -> (B, K, H, W)."""
        embedded = self.embedding(codes).permute(0, 3, 1, 2)  # (B, C, H, W)
        vertical, horizontal, skip_total = embedded, embedded, 0
        blocks = dict(zip(self.attention_positions, self.attention_blocks))
        for index, layer in enumerate(self.layers):
            vertical, horizontal, skip = layer(vertical, horizontal, layer.condition(class_labels, spatial))
            skip_total = skip_total + skip
            if index in blocks:
                horizontal = blocks[index](horizontal)
        return self.head(skip_total)

    def _check_codes(self, codes, name: str) -> torch.LongTensor:
        size = self.config.num_embeddings
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            raise ValueError(f"{name} must be a (batch, height, width) LongTensor of code indices, got {_shape(codes)}")
        if not _integer_tensor(codes):
            raise ValueError(f"{name} must hold integer code indices (torch.long), got dtype {codes.dtype}")
        if codes.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(codes.shape)}); pass at least one code")
        if _check_failed(((codes >= 0) & (codes < size)).all(), f"{name} must lie in [0, {size})"):
            low, high = int(codes.min()), int(codes.max())
            raise ValueError(
                f"{name} must lie in [0, {size}) (num_embeddings={size}), got values in [{low}, {high}]; were they "
                f"produced by a VQ-VAE with another codebook size?"
            )
        return codes.long()

    def _check_class_labels(self, class_labels, batch_size: int) -> torch.LongTensor | None:
        num_classes = self.config.num_classes
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
        if not _integer_tensor(class_labels) or tuple(class_labels.shape) != (batch_size,):
            dtype = f" of dtype {class_labels.dtype}" if isinstance(class_labels, torch.Tensor) else ""
            raise ValueError(
                f"class_labels must be a ({batch_size},) LongTensor (one label per code map), got "
                f"{_shape(class_labels)}{dtype}"
            )
        in_range = ((class_labels >= 0) & (class_labels < num_classes)).all()
        if _check_failed(in_range, f"class_labels must lie in [0, {num_classes})"):
            low, high = int(class_labels.min()), int(class_labels.max())
            raise ValueError(
                f"class_labels must lie in [0, {num_classes}) (num_classes={num_classes}), got values in "
                f"[{low}, {high}]"
            )
        return class_labels.long()

    def _check_condition_codes(self, condition_codes, codes_shape: tuple[int, int, int]) -> torch.LongTensor | None:
        config = self.config
        size, factor = config.condition_num_embeddings, config.condition_upsample_factor
        if size == 0:
            if condition_codes is not None:
                raise ValueError(
                    "condition_codes were given but this prior has no spatial condition (condition_num_embeddings=0); "
                    "drop them or use a config with condition_num_embeddings > 0 (a VQ-VAE-2 bottom prior)"
                )
            return None
        batch, height, width = codes_shape
        if condition_codes is None:
            raise ValueError(
                f"this prior is conditioned on the upper level's codes (condition_num_embeddings={size}); pass "
                f"condition_codes, a (batch, height / {factor}, width / {factor}) LongTensor"
            )
        if not isinstance(condition_codes, torch.Tensor) or condition_codes.dim() != 3:
            raise ValueError(
                f"condition_codes must be a (batch, height, width) LongTensor, got {_shape(condition_codes)}"
            )
        if not _integer_tensor(condition_codes):
            raise ValueError(f"condition_codes must hold integer code indices, got dtype {condition_codes.dtype}")
        got = tuple(condition_codes.shape)
        expected = (batch, height // factor, width // factor)
        if height % factor or width % factor or got != expected:
            raise ValueError(
                f"condition_codes have shape {got}, inconsistent with codes of shape {codes_shape} and "
                f"condition_upsample_factor={factor}: the condition map is upsampled {factor}x to the code map, so "
                f"it must have shape (batch, height / {factor}, width / {factor})"
                + (f" = {expected}" if not (height % factor or width % factor) else "")
            )
        in_range = ((condition_codes >= 0) & (condition_codes < size)).all()
        if _check_failed(in_range, f"condition_codes must lie in [0, {size})"):
            low, high = int(condition_codes.min()), int(condition_codes.max())
            raise ValueError(
                f"condition_codes must lie in [0, {size}) (condition_num_embeddings={size}), got values in "
                f"[{low}, {high}]"
            )
        return condition_codes.long()

    def _sample_shape(self, shape, condition_codes) -> tuple[int, int]:
        if shape is None:
            if self.config.code_shape is not None:
                shape = self.config.code_shape
            elif self.config.condition_num_embeddings > 0 and isinstance(condition_codes, torch.Tensor):
                factor = self.config.condition_upsample_factor
                shape = [condition_codes.shape[-2] * factor, condition_codes.shape[-1] * factor]
            else:
                raise ValueError("pass shape=(height, width): this config has no code_shape to default to")
        if isinstance(shape, (int, str)) or len(shape) != 2 or not all(
            not isinstance(v, bool) and isinstance(v, int) and v >= 1 for v in shape
        ):
            raise ValueError(f"shape must be (height, width) with positive integers, got {shape!r}")
        return int(shape[0]), int(shape[1])

    def _check_fixed(self, fixed_codes, fixed_mask, codes_shape):
        if fixed_codes is None and fixed_mask is None:
            return None, None
        if fixed_codes is None or fixed_mask is None:
            raise ValueError("fixed_codes and fixed_mask go together: pass both (or neither)")
        if not isinstance(fixed_mask, torch.Tensor) or fixed_mask.dtype != torch.bool:
            dtype = f" of dtype {fixed_mask.dtype}" if isinstance(fixed_mask, torch.Tensor) else ""
            raise ValueError(
                f"fixed_mask must be a bool tensor of shape {codes_shape}, got {_shape(fixed_mask)}{dtype}"
            )
        for name, value in (("fixed_codes", fixed_codes), ("fixed_mask", fixed_mask)):
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != codes_shape:
                raise ValueError(
                    f"{name} must have shape (batch_size, height, width) = {codes_shape}, got {_shape(value)}"
                )
        if not _integer_tensor(fixed_codes):
            raise ValueError(f"fixed_codes must hold integer code indices, got dtype {fixed_codes.dtype}")
        size = self.config.num_embeddings
        kept = fixed_codes[fixed_mask]
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= size):
            raise ValueError(
                f"fixed_codes must lie in [0, {size}) (num_embeddings) where fixed_mask is True, got values in "
                f"[{int(kept.min())}, {int(kept.max())}]"
            )
        return fixed_codes.long().to(self.device), fixed_mask.to(self.device)


# Duplicated from models/vqvae/modeling_vqvae.py with `from_pretrained` (self-contained folder, see above).
def _require_safetensors(path: str) -> None:
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise ValueError(
            f"{path} has no model.safetensors; this library loads weights only from safetensors. "
            f"Save the model with save_pretrained, or convert pickled weights with a trusted tool first"
        )


def _raise_if_unreadable(path: str, error: Exception) -> None:
    """A clear `ValueError` for a truncated or corrupt safetensors file; any other error is left to the caller."""
    if "safetensor" in type(error).__name__.lower() or "deserializ" in str(error).lower():
        raise ValueError(
            f"could not read the weights in {path}: the safetensors file is truncated or corrupt ({error}); "
            f"save or download it again"
        ) from error


def _require_complete_load(path: str, model_name: str, info: dict, ignore_mismatched: bool) -> None:
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


__all__ = ["PixelCNNPriorModel", "PixelCNNPriorOutput", "PixelCNNPriorPreTrainedModel"]
