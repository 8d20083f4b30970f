"""Evaluation of a VAE: the ELBO and an importance-sampled NLL in nats per example and in bits per dimension."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .metrics import BINARIZE_MODES, eval_mode, pixel_batches, psnr, squared_error_sum
from .metrics import binarize as binarize_pixels


def evaluate_vae(
    model,
    batches: Iterable[dict],
    num_samples: int = 0,
    max_batches: int | None = None,
    generator: torch.Generator | None = None,
    binarize: str = "none",
    chunk_size: int = 100,
) -> dict:
    """
    Likelihood and reconstruction metrics of a [`VAEModel`] over an eval set.

    Runs in eval mode under `torch.no_grad()` and restores every module's training flag afterwards. Everything
    random is drawn from `generator` (on the model's device), batch by batch in this order: the dynamic
    binarisation, the ELBO's latent samples (`model(x, generator=...)`), then the importance samples
    (`model.log_likelihood(x, num_samples, generator=...)`); the same seed gives the same numbers.

    Args:
        model: a VAE; pixels in [0, 1].
        batches: an iterable of `{"pixel_values": (B, C, H, W)}` in [0, 1], e.g. from `batches_for_rank`.
        num_samples (`int`, defaults to 0): importance samples K per image for log p(x); 0 skips the NLL.
        max_batches (`int`, *optional*): evaluate at most this many batches.
        generator (`torch.Generator`, *optional*): source of every random number (see above).
        binarize (`str`, defaults to `"none"`): for a Bernoulli decoder, how each batch is binarised first:
            `"none"`, `"dynamic"` (x ~ Bernoulli(pixel)) or `"threshold"` (x = pixel > 0.5).
        chunk_size (`int`, defaults to 100): importance samples decoded at a time (memory only).

    Returns:
        `dict` (Python numbers), with D = C·H·W the number of pixel values per image:
        - `num_images`, `num_dims` (D), `num_samples` (K), `binarize`;
        - `elbo`: mean ELBO (eq. 10, the config's `num_latent_samples` L) in nats per example;
        - `elbo_bits_per_dim`: −`elbo` / (D ln 2), positive, an upper bound on the NLL in bits per dimension;
        - `kl`, `reconstruction_log_likelihood`: the ELBO's two terms, mean nats per example;
        - with K > 0: `nll` = −mean log p(x) (importance-sampled, nats per example; a stochastic upper bound of the
          true NLL that tightens as K grows) and `nll_bits_per_dim` = `nll` / (D ln 2);
        - `mse_01`: MSE in [0, 1] units between the decoder mean for the ELBO's first latent sample and the
          evaluated (binarised, if asked) pixels, over every pixel value; `psnr`: 10 log10(1 / `mse_01`) in dB.
    """
    _check_vae_args(model, num_samples, binarize)
    sums = dict(elbo=0.0, kl=0.0, reconstruction_log_likelihood=0.0, nll=0.0, squared_error=0.0)
    num_images, num_dims = 0, None
    with eval_mode(model):
        for pixels in pixel_batches(batches, max_batches):
            pixels = binarize_pixels(pixels.to(model.device, model.dtype), binarize, generator)
            output = model(pixels, generator=generator)
            sums["elbo"] += float(output.elbo.double().sum())
            sums["kl"] += float(output.kl.double().sum())
            sums["reconstruction_log_likelihood"] += float(output.reconstruction_log_likelihood.double().sum())
            sums["squared_error"] += squared_error_sum(output.reconstruction, pixels)
            if num_samples > 0:
                log_px = model.log_likelihood(pixels, num_samples, chunk_size=chunk_size, generator=generator)  # (B,)
                sums["nll"] -= float(log_px.double().sum())
            num_images += pixels.shape[0]
            num_dims = pixels[0].numel()
    return _vae_metrics(sums, num_images, num_dims, num_samples, binarize)


def _vae_metrics(sums: dict, num_images: int, num_dims: int, num_samples: int, mode: str) -> dict:
    nats_to_bits_per_dim = 1.0 / (num_dims * math.log(2))
    elbo = sums["elbo"] / num_images
    mse_01 = sums["squared_error"] / (num_images * num_dims)
    metrics = {
        "num_images": num_images,
        "num_dims": num_dims,
        "num_samples": num_samples,
        "binarize": mode,
        "elbo": elbo,
        "elbo_bits_per_dim": -elbo * nats_to_bits_per_dim,
        "kl": sums["kl"] / num_images,
        "reconstruction_log_likelihood": sums["reconstruction_log_likelihood"] / num_images,
    }
    if num_samples > 0:
        nll = sums["nll"] / num_images
        metrics.update(nll=nll, nll_bits_per_dim=nll * nats_to_bits_per_dim)
    metrics.update(mse_01=mse_01, psnr=psnr(mse_01))
    return metrics


def _check_vae_args(model, num_samples, mode: str) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(
            f"num_samples must be an integer >= 0 (0 skips the importance-sampled NLL), got {num_samples!r}"
        )
    if mode not in BINARIZE_MODES:
        raise ValueError(f"unknown binarize mode {mode!r}; choose one of: {', '.join(BINARIZE_MODES)}")
    distribution = model.config.decoder_distribution
    if mode != "none" and distribution != "bernoulli":
        raise ValueError(
            f"binarize={mode!r} is for a Bernoulli decoder; this VAE's decoder is {distribution!r}, which models "
            f"grey levels in [0, 1]: use binarize='none'"
        )
