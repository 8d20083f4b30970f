"""Decode, transform, shard and batch: one rank's batches of one epoch, resumable at any batch."""

from __future__ import annotations

import hashlib
import io
import math
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset, IterableDataset
from datasets.distributed import split_dataset_by_node
from PIL import Image, ImageOps, UnidentifiedImageError

from ..image_processing import to_model_mode

logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """What the pipeline saw: images used, images skipped because they could not be decoded."""

    images: int = 0  # images yielded in batches
    decoded: int = 0  # images decoded (in a batch or not: an epoch's last partial batch is dropped)
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)  # first few reasons, for the log


class ImageTransform:
    """Raw image (bytes/path/PIL) -> float32 array (C, H, W) in `value_range`, or None when undecodable.

    Crops cover the target (aspect kept); `center_crop=False` crops at random and `random_flip` flips, both drawn
    from `rng` so that a resumed run sees the same augmentations.
    """

    def __init__(self, size, num_channels: int, value_range=(-1.0, 1.0), center_crop=True, random_flip=False):
        self.height, self.width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.mode = "RGB" if num_channels == 3 else "L"
        self.low, self.high = value_range
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __call__(self, raw, rng: random.Random) -> np.ndarray | None:
        image = decode_image(raw)
        if image is None:
            return None
        image = self._crop(to_model_mode(image, self.mode), rng)
        if self.random_flip and rng.random() < 0.5:
            image = ImageOps.mirror(image)
        array = np.asarray(image, dtype=np.float32) * ((self.high - self.low) / 255.0) + self.low
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def _crop(self, image: Image.Image, rng: random.Random) -> Image.Image:
        width, height = image.size
        if (height, width) != (self.height, self.width):
            scale = max(self.height / height, self.width / width)
            width, height = max(self.width, round(width * scale)), max(self.height, round(height * scale))
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        if self.center_crop:
            left, top = (width - self.width) // 2, (height - self.height) // 2
        else:
            left, top = rng.randint(0, width - self.width), rng.randint(0, height - self.height)
        return image.crop((left, top, left + self.width, top + self.height))


# Larger images are skipped before decoding: a 48 KB PNG can declare 20000x20000 pixels (a decompression bomb).
# PIL's own guard (Image.MAX_IMAGE_PIXELS, 89 M) only warns below twice its limit; this one is checked from the header.
MAX_IMAGE_PIXELS = 64_000_000


def decode_image(raw, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image | None:
    """An image from a datasets `Image(decode=False)` value ({"bytes", "path"}), a PIL image, or None.

    None means undecodable: not an image, truncated, or larger than `max_pixels` by its header (not decoded).
    """
    try:
        if isinstance(raw, Image.Image):
            image = raw
        elif isinstance(raw, dict) and raw.get("bytes") is not None:
            image = Image.open(io.BytesIO(raw["bytes"]))
        elif isinstance(raw, dict) and raw.get("path"):
            image = Image.open(raw["path"])
        else:
            return None
        if image.width * image.height > max_pixels:
            logger.debug("image of %dx%d pixels is over the %d-pixel limit", image.width, image.height, max_pixels)
            return None
        image.load()  # a truncated file fails here, not later
        return image
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        return None


def example_id(raw) -> str:
    """A stable id of an example's image (its bytes' digest): lets tests check what each rank saw."""
    data = raw.get("bytes") if isinstance(raw, dict) else None
    if data is None and isinstance(raw, dict):
        data = str(raw.get("path")).encode()
    return hashlib.sha1(data or b"").hexdigest()[:16]


def batches_for_rank(
    dataset: Dataset | IterableDataset,
    image_column: str,
    transform: ImageTransform,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
    shuffle: bool = True,
    shuffle_buffer_size: int = 1000,
    drop_last: bool = True,
    stats: BatchStats | None = None,
    with_ids: bool = False,
    columns: tuple[str, ...] = (),
) -> Iterator[dict]:
    """Batches `{"pixel_values": (B, C, H, W)}` of one epoch for one rank, beginning at batch `start_batch`.

    The epoch's order depends only on (seed, epoch); ranks read disjoint shards (`split_dataset_by_node`) whose
    union is the dataset. Undecodable images are skipped and counted in `stats`. `columns` (e.g. "label") are
    carried along as tensors.
    """
    stats = stats if stats is not None else BatchStats()
    ordered = _epoch_order(dataset, seed, epoch, shuffle, shuffle_buffer_size)
    shard = split_dataset_by_node(ordered, rank=rank, world_size=world_size) if world_size > 1 else ordered
    pixels, ids, extra, index = [], [], {name: [] for name in columns}, 0
    for position, example in enumerate(shard):
        raw = example[image_column]
        array = transform(raw, random.Random(hash((seed, epoch, rank, position))))
        if array is None:
            _count_skip(stats, raw, position)
            continue
        stats.decoded += 1
        pixels.append(array)
        if with_ids:
            ids.append(example_id(raw))
        for name in columns:
            extra[name].append(example[name])
        if len(pixels) == batch_size:
            if index >= start_batch:
                yield _batch(pixels, ids, with_ids, stats, extra)
            pixels, ids, extra, index = [], [], {name: [] for name in columns}, index + 1
    if pixels and not drop_last and index >= start_batch:
        yield _batch(pixels, ids, with_ids, stats, extra)


def _epoch_order(dataset, seed: int, epoch: int, shuffle: bool, buffer_size: int):
    if not shuffle:
        return dataset
    if isinstance(dataset, IterableDataset):
        shuffled = dataset.shuffle(seed=seed, buffer_size=buffer_size)
        shuffled.set_epoch(epoch)
        return shuffled
    return dataset.shuffle(seed=seed + epoch)


def _batch(pixels: list[np.ndarray], ids: list[str], with_ids: bool, stats: BatchStats, extra: dict) -> dict:
    stats.images += len(pixels)
    batch = {"pixel_values": torch.from_numpy(np.stack(pixels))}
    batch.update({name: torch.as_tensor(values) for name, values in extra.items()})
    if with_ids:
        batch["example_ids"] = list(ids)
    return batch


def _count_skip(stats: BatchStats, raw, position: int) -> None:
    stats.skipped += 1
    if len(stats.skipped_examples) < 5:
        where = raw.get("path") if isinstance(raw, dict) else None
        stats.skipped_examples.append(f"example {position}{f' ({where})' if where else ''}")
    if stats.skipped <= 5 or _is_power_of_ten(stats.skipped):  # the first few, then 10, 100, 1000... (no flood)
        logger.warning("skipped an undecodable image (example %d of this shard; %d skipped so far)", position, stats.skipped)


def _is_power_of_ten(number: int) -> bool:
    return number >= 1 and 10 ** round(math.log10(number)) == number
