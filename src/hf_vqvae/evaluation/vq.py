"""Evaluation of a VQ-VAE / VQ-VAE-2: reconstruction error overall and from the top levels only, codebook usage."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .metrics import RunningMoments, codebook_health, eval_mode, pixel_batches, psnr, squared_error_sum, ssim_per_image

# The VQ models read pixels in [-1, 1]; x_01 = (x + 1) / 2, so squared errors scale by (1 / 2)² = 1 / 4.
_VQ_RANGE = (-1.0, 1.0)
_TO_01_SCALE = 1.0 / (_VQ_RANGE[1] - _VQ_RANGE[0]) ** 2
_RANGE_TOLERANCE = 1e-3


def evaluate_vq(model, batches: Iterable[dict], max_batches: int | None = None) -> dict:
    """
    Reconstruction and codebook metrics of a [`VQVAEModel`] or [`VQVAE2Model`] over an eval set.

    Runs in eval mode under `torch.no_grad()` (so EMA codebooks and dead-code restarts stay untouched) and restores
    every module's training flag afterwards. Reconstructions are the raw decoder outputs (not clamped).

    Args:
        model: a VQ model; pixels in [-1, 1].
        batches: an iterable of `{"pixel_values": (B, C, H, W)}` in [-1, 1], e.g. from `batches_for_rank`.
        max_batches (`int`, *optional*): evaluate at most this many batches.

    Returns:
        `dict` (Python numbers) with, where MSE is the mean over every pixel value (images × channels × H × W):
        - `num_images`: images evaluated;
        - `mse`: reconstruction MSE in the model's [-1, 1] units;
        - `mse_01`: the same in [0, 1] pixel units (= `mse` / 4);
        - `psnr`: 10 log10(1 / `mse_01`) in dB (data range 1; `inf` for a perfect reconstruction);
        - `pixel_variance`: population variance of all the pixel values of the evaluated images (every image,
          channel and position pooled, one mean), in [-1, 1] units;
        - `normalized_mse`: `mse` / `pixel_variance` (unit-free, the same in [0, 1] units; 1.0 is as good as
          predicting the mean pixel everywhere; NaN when every pixel value is equal);
        - `ssim`: mean structural similarity (Wang et al. 2004; 11x11 Gaussian window) of the full reconstructions,
          clamped to the pixel range as they are shown, to the images, both in [0, 1];
        - for each level l = 0 .. num_levels − 1 (top first), the reconstruction decoded from the quantized latents
          of levels 0..l with zeros in place of levels l+1.. (l = num_levels − 1 is the full reconstruction):
          `mse_levels_0_to_{l}` ([-1, 1] units), `mse_01_levels_0_to_{l}` ([0, 1] units), `psnr_levels_0_to_{l}`
          (dB);
        - per level, from the code histogram aggregated over the whole eval set (see `codebook_health`):
          `codebook_usage_level_{l}` (fraction of codes used at least once), `codebook_dead_codes_level_{l}`
          (codes never used), `codebook_perplexity_level_{l}`.
    """
    num_levels, num_codes = model.config.num_levels, model.config.num_embeddings
    level_errors = [0.0] * num_levels  # Σ squared error of the levels-0..l reconstructions, [-1, 1] units
    usage = torch.zeros(num_levels, num_codes, dtype=torch.long)
    moments, num_images, ssim_sum = RunningMoments(), 0, 0.0
    with eval_mode(model):
        for pixels in pixel_batches(batches, max_batches):
            pixels = _check_range(pixels.to(model.device))
            encoded = model.encode(pixels.to(model.dtype))
            for level in range(num_levels):
                reconstruction = model.decode(_top_levels(encoded.quantized, level))
                level_errors[level] += squared_error_sum(reconstruction, pixels)
            ssim_sum += float(ssim_per_image(_to_01(reconstruction.clamp(*_VQ_RANGE)), _to_01(pixels)).sum())
            for level, codes in enumerate(encoded.codes):
                usage[level] += torch.bincount(codes.flatten(), minlength=num_codes).cpu()
            moments.update(pixels)
            num_images += pixels.shape[0]
    return {
        "num_images": num_images,
        **_error_metrics(level_errors, moments),
        "ssim": ssim_sum / num_images if num_images else float("nan"),
        **codebook_health(usage),
    }


def _to_01(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - _VQ_RANGE[0]) / (_VQ_RANGE[1] - _VQ_RANGE[0])


def _top_levels(quantized: list[torch.Tensor], last: int) -> list[torch.Tensor]:
    """Levels 0..`last` as they are, zeros for the levels below."""
    return [q if level <= last else torch.zeros_like(q) for level, q in enumerate(quantized)]


def _error_metrics(level_errors: list[float], moments: RunningMoments) -> dict:
    count = moments.count
    mse = level_errors[-1] / count
    metrics = {
        "mse": mse,
        "mse_01": mse * _TO_01_SCALE,
        "psnr": psnr(mse * _TO_01_SCALE),
        "pixel_variance": moments.variance,
        "normalized_mse": mse / moments.variance if moments.variance > 0 else float("nan"),
    }
    for level, error in enumerate(level_errors):
        level_mse = error / count
        metrics[f"mse_levels_0_to_{level}"] = level_mse
        metrics[f"mse_01_levels_0_to_{level}"] = level_mse * _TO_01_SCALE
        metrics[f"psnr_levels_0_to_{level}"] = psnr(level_mse * _TO_01_SCALE)
    return metrics


def _check_range(pixels: torch.Tensor) -> torch.Tensor:
    low, high = _VQ_RANGE
    if pixels.numel() and (pixels.min() < low - _RANGE_TOLERANCE or pixels.max() > high + _RANGE_TOLERANCE):
        raise ValueError(
            f"VQ models read pixels in [-1, 1], got values in [{pixels.min().item():.3g}, {pixels.max().item():.3g}]; "
            f"build the batches with value_range=(-1, 1) (ImageTransform or VQImageProcessor)"
        )
    return pixels
