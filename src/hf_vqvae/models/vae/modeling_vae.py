"""The VAE of Kingma & Welling 2013, "Auto-Encoding Variational Bayes" (arXiv:1312.6114), as a Hugging Face model.

q(z|x) = N(z; μ(x), diag σ²(x)) (appendix C.2), p(z) = N(0, I), and p(x|z) Bernoulli (appendix C.1) or Gaussian
(appendix C.2, eq. 12). Training maximises the SGVB estimator of the ELBO with the analytic KL term (eq. 10):

    L(θ, φ; x) ≈ ½ Σ_j (1 + log σ_j² − μ_j² − σ_j²) + 1/L Σ_l log p(x | z_l),   z_l = μ + σ ⊙ ε_l,   ε_l ~ N(0, I).

Log-likelihoods are in nats, summed over pixels (per example). This folder imports nothing outside itself (see
`configuration_vae.py`), so a saved model loads with `trust_remote_code=True` where hf_vqvae is not installed.
`forward` has no Python branch on a tensor's value, so `torch.compile` traces it without a graph break.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .config_helpers import check_int
from .configuration_vae import VAEConfig
from .modeling_helpers import StrictLoadingMixin, check_failed

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEEncoderOutput(ModelOutput):
    """
    Output of `encode`: the approximate posterior q(z|x) and one reparameterised sample from it.

    Args:
        mean (`torch.FloatTensor` of shape `(batch, latent_dim)`): μ of q(z|x).
        log_variance (`torch.FloatTensor` of shape `(batch, latent_dim)`): log σ² of q(z|x).
        latent (`torch.FloatTensor` of shape `(batch, latent_dim)`): z = μ + σ ⊙ ε, ε ~ N(0, I) (paper §2.4).
    """

    mean: torch.FloatTensor | None = None
    log_variance: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None


@dataclass
class VAEDecoderOutput(ModelOutput):
    """
    Output of `decode`: the decoder distribution p(x|z).

    Args:
        mean (`torch.FloatTensor` of shape `(batch, num_channels, height, width)`): the Bernoulli probabilities, or
            the Gaussian mean (squashed into (0, 1) by a sigmoid).
        logits (`torch.FloatTensor` of shape `(batch, num_channels, height, width)`, *optional*): Bernoulli
            logits (None for a Gaussian decoder).
        log_variance (`torch.FloatTensor` of shape `(batch, num_channels, height, width)`, *optional*): the
            Gaussian log σ² per pixel, learned (eq. 12) or the config's constant (None for a Bernoulli decoder).
    """

    mean: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    log_variance: torch.FloatTensor | None = None


@dataclass
class VAEModelOutput(ModelOutput):
    """
    Output of `forward`.

    Args:
        loss (`torch.FloatTensor` of shape `()`): the negative ELBO averaged over the batch, in nats per example.
        elbo (`torch.FloatTensor` of shape `(batch,)`): the SGVB estimate of the ELBO per example (eq. 10).
        reconstruction_log_likelihood (`torch.FloatTensor` of shape `(batch,)`): 1/L Σ_l log p(x | z_l).
        kl (`torch.FloatTensor` of shape `(batch,)`): KL(q(z|x) ‖ N(0, I)), analytic (appendix B).
        reconstruction (`torch.FloatTensor` of shape `(batch, num_channels, height, width)`): the decoder mean for
            the first sample z_1.
        latent_mean (`torch.FloatTensor` of shape `(batch, latent_dim)`): μ of q(z|x).
        latent_log_variance (`torch.FloatTensor` of shape `(batch, latent_dim)`): log σ² of q(z|x).
    """

    loss: torch.FloatTensor | None = None
    elbo: torch.FloatTensor | None = None
    reconstruction_log_likelihood: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_log_variance: torch.FloatTensor | None = None


def _activation(name: str) -> nn.Module:
    return {"tanh": nn.Tanh, "relu": nn.ReLU}[name]()


def _conv_grid(config: VAEConfig) -> tuple[int, int, int]:
    """(channels, height, width) of the last convolution's output."""
    height, width = config.image_hw
    factor = 2 ** len(config.conv_channels)
    return config.conv_channels[-1], height // factor, width // factor


class VAEEncoder(nn.Module):
    """Images `(batch, C, H, W)` -> μ and log σ² of q(z|x), each `(batch, latent_dim)` (appendix C.2)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        height, width = config.image_hw
        if config.architecture == "mlp":
            # h = tanh(W3 x + b3): eq. 12 with x and z swapped (appendix C.2)
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(config.num_channels * height * width, config.hidden_size),
                _activation(config.hidden_activation),
            )  # fmt: skip
            features = config.hidden_size
        else:
            layers, in_channels = [], config.num_channels
            for out_channels in config.conv_channels:  # each halves H and W
                layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)]
                layers += [_activation(config.hidden_activation)]
                in_channels = out_channels
            self.body = nn.Sequential(*layers, nn.Flatten())
            channels, grid_h, grid_w = _conv_grid(config)
            features = channels * grid_h * grid_w
        # [μ, log σ²] = [W4 h + b4, W5 h + b5]: eq. 12 with x and z swapped, as one layer.
        self.head = nn.Linear(features, 2 * config.latent_dim)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.head(self.body(pixel_values)).chunk(2, dim=-1)  # (B, J) each
        return mean, log_variance


class VAEDecoder(nn.Module):
    """Latents `(batch, latent_dim)` -> raw outputs `(batch, k * C, H, W)`: k = 2 with a learned variance, else 1."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        height, width = config.image_hw
        learned = config.decoder_distribution == "gaussian" and config.learn_decoder_variance
        out_channels = config.num_channels * (2 if learned else 1)
        if config.architecture == "mlp":
            # h = tanh(W3 z + b3); [μ, log σ²] = [W4 h + b4, W5 h + b5] (eq. 12), as one output layer.
            self.body = nn.Sequential(
                nn.Linear(config.latent_dim, config.hidden_size), _activation(config.hidden_activation),
                nn.Linear(config.hidden_size, out_channels * height * width),
                nn.Unflatten(1, (out_channels, height, width)),
            )  # fmt: skip
        else:
            grid = _conv_grid(config)
            layers = [nn.Linear(config.latent_dim, math.prod(grid)), _activation(config.hidden_activation)]
            layers += [nn.Unflatten(1, grid)]
            channels = list(reversed(config.conv_channels))  # mirror of the encoder
            for in_ch, out_ch in zip(channels, channels[1:] + [out_channels]):  # each doubles H and W
                layers += [nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)]
                layers += [_activation(config.hidden_activation)]
            self.body = nn.Sequential(*layers[:-1])  # no activation after the output layer

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.body(latent)


class VAEPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    """Weights init (the paper's N(0, σ) or PyTorch's default) and safetensors-only loading."""

    config_class = VAEConfig
    main_input_name = "pixel_values"
    base_model_prefix = "vae"
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if not isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            return
        std = self.config.initializer_range
        if std is None:
            module.reset_parameters()  # PyTorch's default; transformers guards torch.nn.init while this runs
            return
        init.normal_(module.weight, mean=0.0, std=std)  # the paper: parameters ~ N(0, 0.01)
        if module.bias is not None:
            init.zeros_(module.bias)


class VAEModel(VAEPreTrainedModel):
    r"""
    Variational autoencoder (Kingma & Welling 2013): Gaussian q(z|x), N(0, I) prior, Bernoulli or Gaussian p(x|z).

    Inputs are images in [0, 1] of shape `(batch, num_channels, height, width)` (for a Bernoulli decoder:
    probabilities or binary values); `VQImageProcessor(value_range=[0, 1])` produces them.

    Example:

    ```python
    >>> import torch
    >>> from hf_vqvae import VAEConfig, VAEModel
    >>> model = VAEModel(VAEConfig.from_preset("mnist-paper")).eval()
    >>> images = torch.rand(2, 1, 28, 28)
    >>> output = model(images, generator=torch.Generator().manual_seed(0))
    >>> output.elbo.shape, output.reconstruction.shape
    (torch.Size([2]), torch.Size([2, 1, 28, 28]))
    >>> model.sample(4).shape
    torch.Size([4, 1, 28, 28])
    >>> model.log_likelihood(images, num_samples=50).shape  # importance-sampled log p(x), nats
    torch.Size([2])
    ```
    """

    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        self.encoder = VAEEncoder(config)
        self.decoder = VAEDecoder(config)
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------------------------

    def encode(self, pixel_values: torch.FloatTensor, generator: torch.Generator | None = None) -> VAEEncoderOutput:
        """Images in [0, 1] `(batch, C, H, W)` -> q(z|x) and one sample z = μ + σ ⊙ ε (paper §2.4)."""
        self._check_pixel_values(pixel_values)
        mean, log_variance = self.encoder(pixel_values)  # (B, J) each
        noise = self._noise(mean.shape, generator)  # ε: (B, J)
        latent = mean + torch.exp(0.5 * log_variance) * noise  # z = μ + σ ⊙ ε (§2.4)
        return VAEEncoderOutput(mean=mean, log_variance=log_variance, latent=latent)

    def decode(self, latent: torch.FloatTensor) -> VAEDecoderOutput:
        """Latents `(batch, latent_dim)` -> p(x|z): mean `(batch, C, H, W)` and logits or log-variance."""
        self._check_latent(latent)
        raw = self.decoder(latent)  # (B, k * C, H, W)
        if self.config.decoder_distribution == "bernoulli":
            return VAEDecoderOutput(mean=torch.sigmoid(raw), logits=raw)  # appendix C.1: y = f_σ(W2 h + b2)
        if self.config.learn_decoder_variance:
            raw, log_variance = raw.chunk(2, dim=1)  # (B, C, H, W) each; eq. 12
        else:
            log_variance = torch.full_like(raw, float(self.config.decoder_log_variance))  # (B, C, H, W)
        return VAEDecoderOutput(mean=torch.sigmoid(raw), log_variance=log_variance)  # mean in (0, 1) (§5, Frey)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        num_latent_samples: int | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> VAEModelOutput:
        """The SGVB estimate of the ELBO (eq. 10) with L = `num_latent_samples` (default: the config's)."""
        num = self.config.num_latent_samples if num_latent_samples is None else num_latent_samples
        check_int("num_latent_samples", num, 1)
        self._check_pixel_values(pixel_values)
        mean, log_variance = self.encoder(pixel_values)  # (B, J) each
        latents = self._reparameterize(mean, log_variance, num, generator)  # (L, B, J)
        decoded = self.decode(latents.flatten(0, 1))  # (L * B, C, H, W) fields
        log_px = self._log_likelihood_given_latent(pixel_values, decoded, num)  # (L, B)
        reconstruction_log_likelihood = log_px.mean(dim=0)  # 1/L Σ_l log p(x | z_l): (B,)
        kl = _kl_to_standard_normal(mean, log_variance)  # (B,)
        elbo = reconstruction_log_likelihood - kl  # eq. 10
        output = VAEModelOutput(
            loss=-elbo.mean(),
            elbo=elbo,
            reconstruction_log_likelihood=reconstruction_log_likelihood,
            kl=kl,
            reconstruction=decoded.mean[: pixel_values.shape[0]],  # decoder mean of z_1: (B, C, H, W)
            latent_mean=mean,
            latent_log_variance=log_variance,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.FloatTensor:
        """Decoder means `(num_samples, C, H, W)` in [0, 1] for z ~ N(0, I)."""
        check_int("num_samples", num_samples, 1)
        latent = self._noise((num_samples, self.config.latent_dim), generator)  # z ~ N(0, I): (N, J)
        return self.decode(latent).mean

    @torch.no_grad()
    def log_likelihood(
        self,
        pixel_values: torch.FloatTensor,
        num_samples: int = 1000,
        chunk_size: int = 100,
        generator: torch.Generator | None = None,
    ) -> torch.FloatTensor:
        """
        Importance-sampled estimate of log p(x) per example, `(batch,)` in nats, with q(z|x) as the proposal:

            log p(x) ≈ logsumexp_k [log p(x | z_k) + log p(z_k) − log q(z_k | x)] − log K,   z_k ~ q(z|x).

        It is a stochastic lower bound of log p(x) that tightens as `num_samples` K grows (K = 1 is the ELBO without
        the analytic KL). The decoder runs on `chunk_size` samples at a time, so memory stays bounded; the noise for
        all K samples (K × batch × latent_dim numbers) is drawn first, so the result does not depend on `chunk_size`.
        """
        check_int("num_samples", num_samples, 1)
        check_int("chunk_size", chunk_size, 1)
        self._check_pixel_values(pixel_values)
        mean, log_variance = self.encoder(pixel_values)  # (B, J) each
        noise = self._noise((num_samples, *mean.shape), generator)  # ε: (K, B, J)
        total = None  # running logsumexp over the chunks seen so far: (B,)
        for chunk in noise.split(chunk_size, dim=0):  # (k, B, J)
            log_weights = self._log_importance_weights(pixel_values, mean, log_variance, chunk)  # (k, B)
            chunk_total = torch.logsumexp(log_weights, dim=0)  # (B,)
            total = chunk_total if total is None else torch.logaddexp(total, chunk_total)
        return total - math.log(num_samples)

    # ------------------------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------------------------

    def _reparameterize(self, mean, log_variance, num_samples: int, generator) -> torch.Tensor:
        noise = self._noise((num_samples, *mean.shape), generator)  # ε_l ~ N(0, I): (L, B, J)
        return mean + torch.exp(0.5 * log_variance) * noise  # z_l = μ + σ ⊙ ε_l (§2.4): (L, B, J)

    def _log_importance_weights(self, pixel_values, mean, log_variance, noise) -> torch.Tensor:
        """log p(x | z) + log p(z) − log q(z | x) for z = μ + σ ⊙ ε, one per row of `noise` (k, B, J) -> (k, B)."""
        latents = mean + torch.exp(0.5 * log_variance) * noise  # (k, B, J)
        decoded = self.decode(latents.flatten(0, 1))  # (k * B, C, H, W) fields
        log_px = self._log_likelihood_given_latent(pixel_values, decoded, noise.shape[0])  # (k, B)
        log_pz = (-0.5 * (_LOG_2PI + latents.float() ** 2)).sum(-1)  # log N(z; 0, I): (k, B)
        log_qz = _log_normal(latents.float(), mean.float(), log_variance.float()).sum(-1)  # (k, B)
        return log_px + log_pz - log_qz

    def _log_likelihood_given_latent(self, pixel_values, decoded: VAEDecoderOutput, num: int) -> torch.Tensor:
        """log p(x | z) summed over pixels, for `num` latents per image stacked sample-major -> (num, B)."""
        target = pixel_values.float().expand(num, *pixel_values.shape).flatten(0, 1)  # (num * B, C, H, W)
        if self.config.decoder_distribution == "bernoulli":
            # appendix C.1: log p(x|z) = Σ x log y + (1 − x) log(1 − y), y = sigmoid(logits)
            per_pixel = -F.binary_cross_entropy_with_logits(decoded.logits.float(), target, reduction="none")
        else:
            per_pixel = _log_normal(target, decoded.mean.float(), decoded.log_variance.float())  # eq. 12
        return per_pixel.sum(dim=(1, 2, 3)).view(num, pixel_values.shape[0])

    def _noise(self, shape, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal noise of `shape` on the model's device and dtype."""
        return torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        channels, (height, width) = self.config.num_channels, self.config.image_hw
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"pixel_values must be a (batch, {channels}, {height}, {width}) tensor, got {shape}")
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the model expects {channels}; "
                f"convert the images with the image processor (VQImageProcessor(num_channels={channels}))"
            )
        if tuple(pixel_values.shape[2:]) != (height, width):
            raise ValueError(
                f"pixel_values has size {tuple(pixel_values.shape[2:])} but this VAE reads only {height}x{width} "
                f"images (height x width; its linear layers see whole images); resize them with the image processor"
            )
        if check_failed(torch.isfinite(pixel_values).all(), "pixel_values contains NaN or Inf values"):
            raise ValueError("pixel_values contains NaN or Inf values; check the image loading and normalisation")
        in_range = ((pixel_values >= 0) & (pixel_values <= 1)).all()
        if check_failed(in_range, "pixel_values must lie in [0, 1]"):
            raise ValueError(
                f"pixel_values must lie in [0, 1] (the {self.config.decoder_distribution} decoder models intensities "
                f"in [0, 1]), got values in [{pixel_values.min().item():.3g}, {pixel_values.max().item():.3g}]; "
                f"use VQImageProcessor(value_range=[0, 1]) or map [-1, 1] images with (x + 1) / 2"
            )

    def _check_latent(self, latent: torch.Tensor) -> None:
        dim = self.config.latent_dim
        if not isinstance(latent, torch.Tensor) or latent.dim() != 2 or latent.shape[1] != dim:
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent)
            raise ValueError(f"latent must be a (batch, {dim}) tensor (latent_dim = {dim}), got {shape}")


def _log_normal(x: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; mean, exp(log_variance))."""
    return -0.5 * (_LOG_2PI + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))


def _kl_to_standard_normal(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over latent dimensions: (B, J) -> (B,)."""
    mean, log_variance = mean.float(), log_variance.float()
    # −KL = ½ Σ_j (1 + log σ_j² − μ_j² − σ_j²)  (eq. 10, appendix B)
    return -0.5 * (1 + log_variance - mean**2 - log_variance.exp()).sum(dim=-1)


__all__ = ["VAEModel", "VAEPreTrainedModel", "VAEEncoderOutput", "VAEDecoderOutput", "VAEModelOutput"]
