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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .config_helpers import check_int
from .configuration_pixelcnn_prior import PixelCNNPriorConfig
from .layers import CausalSelfAttention, ConditioningStack, GatedMaskedConvLayer
from .modeling_helpers import (
    StrictLoadingMixin,
    check_class_labels,
    check_code_map,
    check_fixed_codes,
    check_no_condition,
    check_sampling,
)
from .sampling import IncrementalSampler, NaiveSampler, autoregressive_sample


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


class PixelCNNPriorPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
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
        class_labels: torch.LongTensor | int | None = None,
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
            class_labels (`torch.LongTensor` of shape `(batch_size,)` or `int`, *optional*): required iff
                `num_classes > 0`; an int gives every sample that class.
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
        check_int("batch_size", batch_size, 1)
        check_sampling(temperature, top_k, top_p)
        height, width = self._sample_shape(shape, condition_codes)
        codes_shape = (batch_size, height, width)
        if isinstance(class_labels, int) and not isinstance(class_labels, bool):
            class_labels = torch.full((batch_size,), class_labels, dtype=torch.long, device=self.device)
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
        return check_code_map(name, codes, self.config.num_embeddings)

    def _check_class_labels(self, class_labels, batch_size: int) -> torch.LongTensor | None:
        return check_class_labels(class_labels, batch_size, self.config.num_classes)

    def _check_condition_codes(self, condition_codes, codes_shape: tuple[int, int, int]) -> torch.LongTensor | None:
        config = self.config
        size, factor = config.condition_num_embeddings, config.condition_upsample_factor
        if size == 0:
            check_no_condition(condition_codes)
            return None
        if condition_codes is None:
            raise ValueError(
                f"this prior is conditioned on the upper level's codes (condition_num_embeddings={size}); pass "
                f"condition_codes, a (batch, height / {factor}, width / {factor}) LongTensor"
            )
        condition_codes = check_code_map("condition_codes", condition_codes, size, "condition_num_embeddings")
        batch, height, width = codes_shape
        got, expected = tuple(condition_codes.shape), (batch, height // factor, width // factor)
        if height % factor or width % factor or got != expected:
            raise ValueError(
                f"condition_codes have shape {got}, inconsistent with codes of shape {codes_shape} and "
                f"condition_upsample_factor={factor}: the condition map is upsampled {factor}x to the code map, so "
                f"it must have shape (batch, height / {factor}, width / {factor})"
                + (f" = {expected}" if not (height % factor or width % factor) else "")
            )
        return condition_codes

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
        return check_fixed_codes(fixed_codes, fixed_mask, codes_shape, self.config.num_embeddings, self.device)


__all__ = ["PixelCNNPriorModel", "PixelCNNPriorOutput", "PixelCNNPriorPreTrainedModel"]
