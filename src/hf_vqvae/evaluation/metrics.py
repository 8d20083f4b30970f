"""Metric helpers shared by the evaluators and the training loop: PSNR, SSIM, codebook health, running pixel moments,
binarisation and JSON conversion."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

BINARIZE_MODES = ("none", "dynamic", "threshold")


def psnr(mse_01: float, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range² / MSE); `inf` for MSE = 0."""
    if mse_01 < 0:
        raise ValueError(f"mse must be >= 0, got {mse_01}")
    return math.inf if mse_01 == 0 else 10.0 * math.log10(data_range**2 / mse_01)


# SSIM's constants (Wang et al. 2004, "Image Quality Assessment: From Error Visibility to Structural Similarity"):
# an 11x11 Gaussian window of standard deviation 1.5, K1 = 0.01, K2 = 0.03.
_SSIM_WINDOW, _SSIM_SIGMA, _SSIM_K1, _SSIM_K2 = 11, 1.5, 0.01, 0.03


def ssim_per_image(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity of each image to its reference, `(B, C, H, W)` -> `(B,)` in float64.

    The SSIM map of Wang et al. (2004, eq. 13) over the positions where the whole 11x11 Gaussian window fits (no
    padding), averaged over positions and channels. Images smaller than the window are compared with a window of
    their own size.
    """
    if images.shape != references.shape or images.dim() != 4:
        raise ValueError(f"SSIM compares two (B, C, H, W) batches of one shape, got {tuple(images.shape)} and "
                         f"{tuple(references.shape)}")  # fmt: skip
    channels = images.shape[1]
    size = min(_SSIM_WINDOW, *images.shape[-2:])
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    gauss = torch.exp(-(axis**2) / (2 * _SSIM_SIGMA**2))
    window = torch.outer(gauss, gauss) / gauss.sum() ** 2  # (size, size), sums to 1
    window = window.expand(channels, 1, size, size).to(images.device)

    def local_mean(x):  # Gaussian-weighted mean around each position, per channel
        return torch.nn.functional.conv2d(x, window, groups=channels)

    x, y = images.double(), references.double()
    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x, var_y = local_mean(x * x) - mu_x**2, local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def codebook_health(usage_window: torch.Tensor) -> dict:
    """
    How well each level's codebook is used, from usage counts summed over a window (e.g. a logging interval or a
    whole eval set), as one flat dict of numbers (ready for a tracker or JSON).

    Args:
        usage_window (`torch.Tensor` of shape `(num_levels, K)` or `(K,)`): how often each code was chosen; a 1-D
            tensor counts as one level. Counts must be >= 0 (integers or floats such as EMA cluster sizes).

    Returns:
        `dict` with, for each level `l` (top level first):
        - `codebook_usage_level_{l}`: fraction of the K codes used at least once, in [0, 1];
        - `codebook_dead_codes_level_{l}`: number of codes with count 0 (an int);
        - `codebook_perplexity_level_{l}`: exp(entropy in nats) of the normalised histogram, in [1, K]; 1.0 for an
          empty window (all counts 0), the quantizer's own convention.
    """
    return {
        f"codebook_{name}_level_{level}": value
        for level, health in enumerate(codebook_health_per_level(usage_window))
        for name, value in health.items()
    }


def codebook_health_per_level(usage_window: torch.Tensor) -> list[dict]:
    """
    The same as `codebook_health`, one dict per level (top first) with keys `usage` (fraction of codes used),
    `dead_codes` (codes with count 0) and `perplexity`.
    """
    levels = []
    for counts in _check_usage(usage_window):
        used = int((counts > 0).sum())
        health = {"usage": used / counts.numel(), "dead_codes": counts.numel() - used}
        levels.append({**health, "perplexity": histogram_perplexity(counts)})
    return levels


def histogram_perplexity(counts: torch.Tensor) -> float:
    """exp(−Σ p log p) of the histogram `counts` (K,) normalised to probabilities; 1.0 when all counts are 0."""
    counts = counts.detach().double().cpu()
    total = counts.sum()
    if total <= 0:
        return 1.0
    probs = counts[counts > 0] / total
    return float(torch.exp(-(probs * probs.log()).sum()))


def _check_usage(usage_window) -> torch.Tensor:
    if not isinstance(usage_window, torch.Tensor):
        raise ValueError(f"usage_window must be a tensor of counts (num_levels, K), got {type(usage_window).__name__}")
    counts = usage_window.detach()
    if counts.dim() == 1:
        counts = counts[None]
    if counts.dim() != 2 or counts.shape[1] == 0:
        raise ValueError(f"usage_window must have shape (num_levels, K) or (K,), got {tuple(usage_window.shape)}")
    if not torch.isfinite(counts.double()).all() or (counts < 0).any():
        raise ValueError("usage_window must hold finite counts >= 0")
    return counts


def binarize(pixels: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """
    Binarise images in [0, 1] `(B, C, H, W)`: `"none"` returns them as they are, `"dynamic"` samples
    x ~ Bernoulli(pixel) with `generator` (on the pixels' device), `"threshold"` returns (pixel > 0.5) as floats.
    """
    if mode not in BINARIZE_MODES:
        raise ValueError(f"unknown binarize mode {mode!r}; choose one of: {', '.join(BINARIZE_MODES)}")
    if mode == "dynamic":
        return torch.bernoulli(pixels.clamp(0.0, 1.0), generator=generator)
    if mode == "threshold":
        return (pixels > 0.5).to(pixels.dtype)
    return pixels


class RunningMoments:
    """Count, mean and population variance of every value seen, merged batch by batch in float64 (Chan et al.)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        values = values.detach().double()
        count = values.numel()
        if count == 0:
            return
        mean = float(values.mean())
        m2 = float((values - mean).pow(2).sum())
        total = self.count + count
        delta = mean - self.mean
        self.m2 += m2 + delta**2 * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    @property
    def variance(self) -> float:
        """Population variance (divides by the count, not count − 1)."""
        return self.m2 / self.count if self.count else math.nan


def squared_error_sum(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Σ (prediction − target)² over every element, accumulated in float64."""
    return float((prediction.double() - target.double()).pow(2).sum())


def to_jsonable(metrics):
    """Tensors, NumPy scalars/arrays, tuples and nested dicts -> Python floats, ints, lists and dicts for `json`."""
    if isinstance(metrics, dict):
        return {str(key): to_jsonable(value) for key, value in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [to_jsonable(value) for value in metrics]
    if isinstance(metrics, torch.Tensor):
        return metrics.item() if metrics.dim() == 0 else metrics.tolist()
    if isinstance(metrics, np.ndarray):
        return metrics.tolist()
    if isinstance(metrics, np.generic):
        return metrics.item()
    if isinstance(metrics, (bool, str)) or metrics is None:
        return metrics
    if isinstance(metrics, numbers.Integral):
        return int(metrics)
    if isinstance(metrics, numbers.Real):
        return float(metrics)
    raise ValueError(f"cannot convert a {type(metrics).__name__} to JSON: {metrics!r}")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with `model.eval()` and `torch.no_grad()`, then restore each module's training flag."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes.items():
            module.training = training


def pixel_batches(batches: Iterable, max_batches: int | None) -> Iterator[torch.Tensor]:
    """The `pixel_values` `(B, C, H, W)` of each batch, at most `max_batches` of them; errors when there is none."""
    bad = isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    if max_batches is not None and bad:
        raise ValueError(f"max_batches must be an integer >= 1 or None, got {max_batches!r}")
    seen = 0
    for batch in batches:
        if max_batches is not None and seen >= max_batches:
            break
        pixels = batch.get("pixel_values") if isinstance(batch, dict) else None
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
            found = type(pixels).__name__ if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(f"each batch must be a dict with a (B, C, H, W) tensor under 'pixel_values', got {found}")
        seen += 1
        yield pixels
    if seen == 0:
        raise ValueError("no batches to evaluate: the eval data is empty (check the eval split and max_eval_samples)")
