"""Image datasets for training and evaluation, through `datasets`: a Hub id, a local folder laid out like a Hub
dataset repo, an `imagefolder`, or the offline default (scikit-learn's bundled 8x8 digits), streamed or not."""

from .loading import DEFAULT_DATASET, DataArguments, ImageSplits, load_image_splits
from .pipeline import BatchStats, ImageTransform, batches_for_rank, default_num_workers

__all__ = [
    "DEFAULT_DATASET",
    "BatchStats",
    "DataArguments",
    "ImageSplits",
    "ImageTransform",
    "batches_for_rank",
    "default_num_workers",
    "load_image_splits",
]
