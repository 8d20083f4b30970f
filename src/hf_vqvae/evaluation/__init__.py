"""Evaluation of the models over an iterable of batches `{"pixel_values": (B, C, H, W)}`: pure functions returning
dicts of Python numbers (see each function's docstring for its keys and units), used by `scripts/evaluate.py` and
the training loop."""

from .metrics import (
    BINARIZE_MODES,
    binarize,
    codebook_health,
    codebook_health_per_level,
    histogram_perplexity,
    psnr,
    ssim_per_image,
    to_jsonable,
)
from .sample_quality import (
    FeatureNetwork,
    classification_accuracy_score,
    compare,
    frechet_distance,
    frechet_distance_from_moments,
    kernel_distance,
    precision_recall,
)
from .vae import evaluate_vae
from .vq import evaluate_vq

__all__ = [
    "BINARIZE_MODES",
    "FeatureNetwork",
    "binarize",
    "classification_accuracy_score",
    "codebook_health",
    "codebook_health_per_level",
    "compare",
    "evaluate_vae",
    "evaluate_vq",
    "frechet_distance",
    "frechet_distance_from_moments",
    "histogram_perplexity",
    "kernel_distance",
    "precision_recall",
    "psnr",
    "ssim_per_image",
    "to_jsonable",
]
