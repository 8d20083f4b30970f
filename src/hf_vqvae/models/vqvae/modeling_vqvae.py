"""VQ-VAE (van den Oord et al. 2017) and hierarchical VQ-VAE-2 (Razavi et al. 2019) as Hugging Face models.

Levels are indexed top (coarsest) first. Encoding runs bottom-up through the encoders, then quantizes top-down:
each lower level's quantizer input is its encoder output concatenated with a decoding of the quantized upper
levels (VQ-VAE-2 Fig. 2a); the decoder reads every level, the upper ones upsampled to the bottom resolution.

`forward`, `encode` and `decode_code` have no Python branch on a tensor's value: `torch.compile` traces the training
forward without a graph break, `torch.export` exports `encode` and `decode_code` (value checks become in-graph
assertions when traced). Before the first compiled training step, call `initialize_codebooks` on a batch (k-means).
Channels-last weights and inputs (`model.to(memory_format=torch.channels_last)`) run every layer in that layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .blocks import DECODERS, ENCODERS, Upsampler
from .config_helpers import MAX_IMAGE_SIDE  # noqa: F401  (diffusers copies only the modules a component imports directly)
from .configuration_vqvae import VQVAE2Config, VQVAEConfig
from .modeling_helpers import StrictLoadingMixin, check_failed
from .quantizer import VectorQuantizer


@dataclass
class VQEncoderOutput(ModelOutput):
    """
    Output of `encode`.

    Args:
        codes (`list[torch.LongTensor]`): one `(batch, H_l, W_l)` code map per level, top level first.
        quantized (`list[torch.FloatTensor]`): the code vectors `(batch, embedding_dim, H_l, W_l)` per level, with the
            straight-through gradient.
        loss (`torch.FloatTensor` of shape `()`): `codebook_loss + beta * commitment_loss`.
        codebook_loss (`torch.FloatTensor` of shape `()`): sum over levels of ‖sg[z_e] - e‖² (zero with EMA updates).
        commitment_loss (`torch.FloatTensor` of shape `()`): sum over levels of ‖z_e - sg[e]‖², before beta.
        perplexity (`torch.FloatTensor` of shape `(num_levels,)`): code perplexity of this batch per level.
        usage (`torch.LongTensor` of shape `(num_levels, num_embeddings)`): how often each code was chosen per level.
    """

    codes: list[torch.LongTensor] | None = None
    quantized: list[torch.FloatTensor] | None = None
    loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    usage: torch.LongTensor | None = None


@dataclass
class VQModelOutput(ModelOutput):
    """
    Output of `forward`.

    Args:
        loss (`torch.FloatTensor` of shape `()`): `reconstruction_loss + codebook_loss + beta * commitment_loss`
            (paper eq. 3, with a Gaussian likelihood of fixed variance, i.e. the MSE).
        reconstruction (`torch.FloatTensor` of shape `(batch, num_channels, height, width)`): the decoded images.
        reconstruction_loss (`torch.FloatTensor` of shape `()`): mean squared error to the input.
        codebook_loss, commitment_loss, perplexity, usage, codes: as in [`VQEncoderOutput`].
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    usage: torch.LongTensor | None = None
    codes: list[torch.LongTensor] | None = None


class VQPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    """Weights init, safetensors-only loading and the shared encode/decode machinery of both families."""

    main_input_name = "pixel_values"
    base_model_prefix = "vq"
    supports_gradient_checkpointing = False
    # A code's count of steps since it was last used starts again from zero when absent: a fine-tune that turns
    # dead-code restarts on (or off) loads a checkpoint without (or with) these counters. Nothing else may be missing
    # or left over (see `from_pretrained`).
    _keys_to_ignore_on_load_missing = {r"^quantizers\.\d+\.steps_since_used$"}
    _keys_to_ignore_on_load_unexpected = {r"^quantizers\.\d+\.steps_since_used$"}

    def __init__(self, config):
        super().__init__(config)
        levels = config.level_downsamples
        num_levels = len(levels)
        hidden, dim = config.hidden_channels, config.embedding_dim
        blocks = dict(residual_channels=config.residual_channels, num_residual_blocks=config.num_residual_blocks)
        encoder, decoder = ENCODERS[config.architecture], DECODERS[config.architecture]
        # encoders[l] reads the image (bottom level) or the output of encoders[l + 1].
        self.encoders = nn.ModuleList(
            encoder(config.num_channels if level == num_levels - 1 else hidden, hidden, num_downsamples=down, **blocks)
            for level, down in enumerate(levels)
        )
        # Level l > 0 quantizes [decoded upper levels, its encoder output] (rosinality: quantize_conv_b).
        self.pre_quantizers = nn.ModuleList(
            nn.Conv2d(hidden if level == 0 else dim + hidden, dim, kernel_size=1) for level in range(num_levels)
        )
        self.quantizers = nn.ModuleList(_make_quantizer(config) for _ in range(num_levels))
        # condition_decoders[l - 1] decodes levels 0..l-1 (at level l-1's resolution) to level l's resolution.
        self.condition_decoders = nn.ModuleList(
            decoder(dim * level, dim, hidden, num_upsamples=levels[level - 1], **blocks) for level in range(1, num_levels)
        )
        # upsamplers["j_to_k"] brings level j's code vectors to level k's resolution.
        self.upsamplers = nn.ModuleDict(
            {f"{j}_to_{k}": Upsampler(dim, sum(levels[j:k])) for k in range(1, num_levels) for j in range(k)}
        )
        self.decoder = decoder(dim * num_levels, config.num_channels, hidden, num_upsamples=levels[-1], **blocks)
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------------------------

    def encode(self, pixel_values: torch.FloatTensor) -> VQEncoderOutput:
        """Images in [-1, 1], `(batch, num_channels, H, W)` -> codes and code vectors per level, top first."""
        self._check_pixel_values(pixel_values)
        features = self._encoder_features(pixel_values)
        quantized, outputs = [], []
        for level, quantizer in enumerate(self.quantizers):
            output = quantizer(self._quantizer_input(features, quantized, level))  # reads (B, D, H_l, W_l)
            quantized.append(output.quantized)
            outputs.append(output)
        return VQEncoderOutput(
            codes=[output.indices for output in outputs],
            quantized=quantized,
            loss=sum(output.loss for output in outputs),
            codebook_loss=sum(output.codebook_loss for output in outputs),
            commitment_loss=sum(output.commitment_loss for output in outputs),
            perplexity=torch.stack([output.perplexity for output in outputs]),
            usage=torch.stack([output.usage for output in outputs]),
        )

    @torch.no_grad()
    def initialize_codebooks(self, pixel_values: torch.FloatTensor) -> list[int]:
        """k-means-initialise on this batch every level's codebook that still waits for it; returns those levels.

        Top level first, each on its quantizer's inputs given the initialised levels above it: what the first eager
        training step does inside `forward`. A compiled forward cannot branch on whether that is needed, so call
        this on a first batch before compiling (`scripts/train.py --torch_compile` does). No-op once initialised
        (after a first training step or `from_pretrained`); no EMA update, restart or gradient.
        """
        if all(bool(quantizer.initialized) for quantizer in self.quantizers):
            return []
        self._check_pixel_values(pixel_values)
        features = self._encoder_features(pixel_values)
        quantized, initialized = [], []
        for level, quantizer in enumerate(self.quantizers):
            latents = self._quantizer_input(features, quantized, level)  # (B, D, H_l, W_l)
            if quantizer.initialize_codebook(latents):
                initialized.append(level)
            flat = latents.movedim(1, -1).reshape(-1, quantizer.embedding_dim)  # (B H_l W_l, D)
            codes = quantizer.nearest_code(flat).reshape(latents.shape[0], *latents.shape[2:])  # (B, H_l, W_l)
            quantized.append(quantizer.embed(codes).to(latents.dtype))
        return initialized

    def decode(self, quantized: list[torch.FloatTensor]) -> torch.FloatTensor:
        """Code vectors per level (top first) -> images `(batch, num_channels, H, W)` in about [-1, 1]."""
        return self.decoder(self._gather_upper_levels(quantized, len(quantized) - 1))

    def decode_code(self, codes: list[torch.LongTensor] | torch.LongTensor) -> torch.FloatTensor:
        """Code maps per level (top first, `(batch, H_l, W_l)` LongTensors) -> images `(batch, C, H, W)`."""
        codes = self._check_codes(codes)
        return self.decode([quantizer.embed(level_codes) for quantizer, level_codes in zip(self.quantizers, codes)])

    def forward(self, pixel_values: torch.FloatTensor, return_dict: bool = True) -> VQModelOutput:
        encoded = self.encode(pixel_values)
        reconstruction = self.decode(encoded.quantized)
        reconstruction_loss = F.mse_loss(reconstruction.float(), pixel_values.float())
        output = VQModelOutput(
            loss=reconstruction_loss + encoded.loss,
            reconstruction=reconstruction,
            reconstruction_loss=reconstruction_loss,
            codebook_loss=encoded.codebook_loss,
            commitment_loss=encoded.commitment_loss,
            perplexity=encoded.perplexity,
            usage=encoded.usage,
            codes=encoded.codes,
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------------------------

    def _encoder_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        features = [None] * len(self.encoders)
        hidden = pixel_values
        for level in reversed(range(len(self.encoders))):  # bottom level first
            hidden = self.encoders[level](hidden)
            features[level] = hidden
        return features

    def _quantizer_input(self, features: list[torch.Tensor], quantized: list[torch.Tensor], level: int) -> torch.Tensor:
        """Level `level`'s quantizer input (B, D, H_l, W_l) from its encoder features and the upper levels' codes."""
        inputs = features[level]  # (B, hidden, H_l, W_l)
        if level > 0:
            upper = self._gather_upper_levels(quantized, level - 1)  # (B, D * level, H_{l-1}, W_{l-1})
            condition = self.condition_decoders[level - 1](upper)  # (B, D, H_l, W_l)
            inputs = torch.cat([condition, inputs], dim=1)  # (B, D + hidden, H_l, W_l)
        return self.pre_quantizers[level](inputs)

    def _gather_upper_levels(self, quantized: list[torch.Tensor], target: int) -> torch.Tensor:
        """Levels 0..target concatenated on channels, each brought to level `target`'s resolution."""
        upsampled = [self.upsamplers[f"{level}_to_{target}"](quantized[level]) for level in range(target)]
        return torch.cat([*upsampled, quantized[target]], dim=1)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        channels = self.config.num_channels
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"pixel_values must be a (batch, {channels}, height, width) tensor, got {shape}")
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the model expects {channels}; "
                f"convert the images with the model's image processor (it converts RGB/grayscale)"
            )
        factor = 2**self.config.total_downsamples
        height, width = pixel_values.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the total downsampling factor {factor}; "
                f"resize or crop to a multiple of {factor} (e.g. {height // factor * factor or factor}x"
                f"{width // factor * factor or factor}) with the image processor"
            )
        if check_failed(torch.isfinite(pixel_values).all(), "pixel_values contains NaN or Inf values"):
            raise ValueError("pixel_values contains NaN or Inf values; check the image loading and normalisation")

    def _check_codes(self, codes) -> list[torch.LongTensor]:
        if isinstance(codes, torch.Tensor):
            codes = [codes]
        codes = list(codes)
        levels = self.config.num_levels
        if len(codes) != levels:
            raise ValueError(f"decode_code expects {levels} code map(s), top level first, got {len(codes)}")
        bottom = codes[-1]
        if bottom.dim() != 3:
            raise ValueError(f"each code map must have shape (batch, height, width), got {tuple(bottom.shape)}")
        factor = 2 ** self.config.level_downsamples[-1]
        expected = self.config.latent_shapes([bottom.shape[1] * factor, bottom.shape[2] * factor])
        for level, (level_codes, shape) in enumerate(zip(codes, expected)):
            wanted = (bottom.shape[0], *shape)
            if tuple(level_codes.shape) != wanted:
                raise ValueError(
                    f"code map of level {level} has shape {tuple(level_codes.shape)}, expected {wanted} to match the "
                    f"bottom level's {tuple(bottom.shape)} (levels differ by the factors {self.config.level_downsamples})"
                )
        return codes

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default initialisation, not transformers' N(0, 0.02) (which would silently change the model).
        if isinstance(module, VectorQuantizer):
            # transformers runs this on a module with any tensor missing from the checkpoint (a fine-tune that turns
            # dead-code restarts on misses only their counters): keep what was loaded, the EMA statistics included.
            tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            module.reset_parameters(keep=frozenset(n for n, t in tensors if getattr(t, "_is_hf_initialized", False)))
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()


def _make_quantizer(config) -> VectorQuantizer:
    return VectorQuantizer(
        config.num_embeddings,
        config.embedding_dim,
        beta=config.beta,
        ema_decay=config.ema_decay,
        ema_epsilon=config.ema_epsilon,
        ema_bias_correction=config.ema_bias_correction,
        kmeans_init=config.kmeans_init,
        kmeans_iters=config.kmeans_iters,
        dead_code_threshold=config.dead_code_threshold,
        rotation_trick=config.rotation_trick,
        use_cosine_sim=config.use_cosine_sim,
        codebook_dim=config.codebook_dim,
    )


class VQVAEModel(VQPreTrainedModel):
    r"""
    VQ-VAE (van den Oord et al. 2017): encoder, vector quantizer, decoder; one level of codes.

    Example:

    ```python
    >>> import torch
    >>> from hf_vqvae import VQVAEConfig, VQVAEModel
    >>> model = VQVAEModel(VQVAEConfig.from_preset("mnist")).eval()
    >>> codes = model.encode(torch.zeros(2, 1, 28, 28)).codes  # [LongTensor (2, 7, 7)]
    >>> model.decode_code(codes).shape
    torch.Size([2, 1, 28, 28])
    ```
    """

    config_class = VQVAEConfig


class VQVAE2Model(VQPreTrainedModel):
    r"""
    VQ-VAE-2 (Razavi et al. 2019): a hierarchy of quantized latents, top level first.

    Example:

    ```python
    >>> import torch
    >>> from hf_vqvae import VQVAE2Config, VQVAE2Model
    >>> config = VQVAE2Config(image_size=32, hidden_channels=32, residual_channels=8, level_downsamples=[1, 2])
    >>> model = VQVAE2Model(config).eval()
    >>> [c.shape for c in model.encode(torch.zeros(1, 3, 32, 32)).codes]
    [torch.Size([1, 4, 4]), torch.Size([1, 8, 8])]
    ```
    """

    config_class = VQVAE2Config


__all__ = ["VQVAEModel", "VQVAE2Model", "VQPreTrainedModel", "VQEncoderOutput", "VQModelOutput"]
