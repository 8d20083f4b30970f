"""Finding the train and eval splits and their image column; errors before training starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import datasets
import numpy as np
from datasets import Dataset, IterableDataset

DEFAULT_DATASET = "sklearn-digits"
_EVAL_SPLIT_NAMES = ("test", "validation", "valid", "eval")


@dataclass
class DataArguments:
    """Where the images come from and how they are prepared."""

    dataset_name: str = field(
        default=DEFAULT_DATASET,
        metadata={
            "help": f"A Hub dataset id, a local folder laid out like a Hub dataset repo (e.g. ../shared/datasets/mnist), "
            f"or '{DEFAULT_DATASET}' (scikit-learn's bundled 1,797 8x8 digits: no network needed)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's configuration name, if any."})
    train_data_dir: str | None = field(
        default=None, metadata={"help": "A folder of images (an `imagefolder`); replaces --dataset_name."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split to evaluate on; default: 'test' or 'validation' if present, else a held-out fraction."},
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of the train split held out for evaluation when there is no eval split."}
    )
    image_column: str | None = field(
        default=None, metadata={"help": "Column holding the images; detected when the dataset has one image column."}
    )
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of downloading it first."})
    resolution: int | None = field(
        default=None, metadata={"help": "Training resolution; default: the model config's image_size."}
    )
    center_crop: bool = field(default=True, metadata={"help": "Centre-crop to the resolution (else random crops)."})
    random_flip: bool = field(default=False, metadata={"help": "Flip training images horizontally at random."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training images: a seeded random subset (a stream's first)."}
    )
    max_eval_samples: int | None = field(
        default=512, metadata={"help": "Evaluate on at most this many images: a seeded random subset (a stream's first)."}
    )
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "Shuffle buffer of a streamed dataset."})

    def __post_init__(self):
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must lie in (0, 1), got {self.eval_fraction}")
        for name in ("max_train_samples", "max_eval_samples", "resolution"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {value}")


@dataclass
class ImageSplits:
    """Raw (undecoded) train and eval datasets and the name of their image column."""

    train: Dataset | IterableDataset
    eval: Dataset | IterableDataset
    image_column: str
    source: str


def load_image_splits(args: DataArguments, seed: int = 0) -> ImageSplits:
    """Load the splits, find the image column, and keep images undecoded (decoding errors are handled later)."""
    source = args.train_data_dir or args.dataset_name
    if args.train_data_dir is None and args.dataset_name == DEFAULT_DATASET:
        return _sklearn_digits_splits(args, seed)
    loaded = _load(args)
    if args.train_split not in loaded:
        raise ValueError(f"{source} has no split {args.train_split!r}; its splits: {', '.join(loaded)}")
    train = loaded[args.train_split]
    eval_name = args.eval_split or next((name for name in _EVAL_SPLIT_NAMES if name in loaded), None)
    if args.eval_split is not None and args.eval_split not in loaded:
        raise ValueError(f"{source} has no split {args.eval_split!r}; its splits: {', '.join(loaded)}")
    image_column = detect_image_column(train, args.image_column, source)
    if eval_name is not None:
        evaluation = loaded[eval_name]
    else:
        train, evaluation = _hold_out(train, args, seed)
    train, evaluation = (_limit(split, limit, seed) for split, limit in ((train, args.max_train_samples), (evaluation, args.max_eval_samples)))
    train, evaluation = (split.cast_column(image_column, datasets.Image(decode=False)) for split in (train, evaluation))
    _check_not_empty(train, source, "train")
    train, evaluation = (_without_empty_labels(split) for split in (train, evaluation))
    return ImageSplits(train=train, eval=evaluation, image_column=image_column, source=source)


def detect_image_column(dataset, requested: str | None, source: str) -> str:
    features = dataset.features
    if features is None:
        raise ValueError(f"{source} does not declare its features; pass --image_column")
    columns = list(features)
    images = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if requested is not None:
        if requested not in features:
            raise ValueError(f"{source} has no column {requested!r}; its columns: {', '.join(columns)}")
        _check_holds_images(dataset, requested, source, images)
        return requested
    if len(images) == 1:
        return images[0]
    if not images:
        raise ValueError(f"{source} has no image column (columns: {', '.join(columns)}); pass --image_column")
    raise ValueError(f"{source} has several image columns ({', '.join(images)}); choose one with --image_column")


def _check_holds_images(dataset, column: str, source: str, image_columns: list[str]) -> None:
    """An `Image` column, or strings naming image files; anything else (a caption, a label) would otherwise be
    skipped image by image, and training would never form a batch."""
    feature = dataset.features[column]
    if isinstance(feature, datasets.Image):
        return
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        first = next(iter(dataset.select_columns([column]).take(1)), {}).get(column)
        if isinstance(first, str) and os.path.isfile(first):
            return
    hint = f"its image columns: {', '.join(image_columns)}" if image_columns else "it has no image column"
    raise ValueError(f"--image_column {column!r} of {source} holds {feature}, not images or image file paths; {hint}")


def _load(args: DataArguments):
    try:
        if args.train_data_dir is not None:
            if not os.path.isdir(args.train_data_dir):
                raise ValueError(f"--train_data_dir {args.train_data_dir} is not a folder")
            return datasets.load_dataset("imagefolder", data_dir=args.train_data_dir, streaming=args.streaming)
        return datasets.load_dataset(args.dataset_name, args.dataset_config, streaming=args.streaming)
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        raise ValueError(f"could not load the dataset {args.train_data_dir or args.dataset_name}: {error}") from error
    except ValueError as error:
        if "corresponds to no data" in str(error):
            raise ValueError(
                f"a split of {args.train_data_dir or args.dataset_name} is empty ({error}); check the dataset and --train_split"
            ) from error
        raise


def _hold_out(train, args: DataArguments, seed: int):
    if isinstance(train, IterableDataset):
        # A stream cannot be split at random without reading it: hold out its first examples, a fixed count.
        count = args.max_eval_samples or 512
        return train.skip(count), train.take(count)
    parts = train.train_test_split(test_size=args.eval_fraction, seed=seed)
    return parts["train"], parts["test"]


def _limit(split, limit: int | None, seed: int):
    """At most `limit` examples: a seeded random subset, kept in file order, of a split on disk (files are often
    sorted by label: CIFAR-10's are, and their first 512 test images are all airplanes); a stream's first `limit`."""
    if limit is None:
        return split
    if isinstance(split, IterableDataset):
        return split.take(limit)
    if limit >= split.num_rows:
        return split
    chosen = np.random.default_rng(seed).choice(split.num_rows, size=limit, replace=False)
    return split.select(np.sort(chosen))


def _check_not_empty(train, source: str, name: str) -> None:
    if isinstance(train, Dataset) and train.num_rows == 0:
        raise ValueError(f"the {name} split of {source} is empty; check --dataset_name/--train_data_dir and the split")
    if isinstance(train, IterableDataset) and next(iter(train.take(1)), None) is None:
        raise ValueError(f"the {name} split of {source} is empty; check --dataset_name/--train_data_dir and the split")


def _without_empty_labels(split):
    """An `imagefolder` whose only subfolders are its splits (data/train/*.png) gets a `label` column of None values
    (datasets reads the split folders as class names): drop it rather than pass None labels on."""
    if "label" not in (split.features or {}):
        return split
    first = next(iter(split.select_columns(["label"]).take(1)), {})
    return split.remove_columns(["label"]) if first.get("label", 0) is None else split


def _sklearn_digits_splits(args: DataArguments, seed: int) -> ImageSplits:
    """scikit-learn's bundled 8x8 digits (16 grey levels) as PNG images: the offline default dataset."""
    from sklearn.datasets import load_digits

    for option, value, known in (("--train_split", args.train_split, "train"), ("--eval_split", args.eval_split, "test")):
        if value not in (None, known):
            raise ValueError(f"{DEFAULT_DATASET} has the splits train and test (held out); {option} {value!r} is not one")
    if args.image_column not in (None, "image"):
        raise ValueError(f"{DEFAULT_DATASET} has no column {args.image_column!r}; its columns: image, label")

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # (1797, 8, 8)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    table = Dataset.from_dict({"image": list(images), "label": digits.target.tolist()}, features=features)
    parts = table.train_test_split(test_size=args.eval_fraction, seed=seed)
    train, evaluation = _limit(parts["train"], args.max_train_samples, seed), _limit(parts["test"], args.max_eval_samples, seed)
    if args.streaming:
        train, evaluation = train.to_iterable_dataset(), evaluation.to_iterable_dataset()
    train, evaluation = (split.cast_column("image", datasets.Image(decode=False)) for split in (train, evaluation))
    return ImageSplits(train=train, eval=evaluation, image_column="image", source=DEFAULT_DATASET)
