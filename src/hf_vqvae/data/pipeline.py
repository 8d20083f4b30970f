"""Decode, transform, shard and batch: one rank's batches of one epoch, resumable at any batch, decoded by
`torch.utils.data.DataLoader` worker processes or in the calling process.

How a rank's batches are made, in three steps:

1. Order and shard. The epoch's order depends only on (seed, epoch) (`_epoch_order`); ranks read disjoint shards
   (`split_dataset_by_node`) whose union is the dataset. The raw (undecoded) examples of a rank's shard have
   positions 0, 1, 2 ...
2. Decode. From `start_position` on, positions are cut into chunks of `chunk_size` consecutive positions;
   `DecodedChunks` (a torch `IterableDataset`) decodes them, worker w of n taking the chunks c with c % n == w. The
   augmentation RNG of an example is keyed by (seed, epoch, rank, position), so its array does not depend on which
   process decoded it, nor on the number of workers.
3. Batch. The calling process receives the chunks in position order (a DataLoader returns an IterableDataset's
   items round-robin by worker; a reorder buffer makes sure) and cuts them into batches exactly as with no worker:
   undecodable images are skipped and counted in `BatchStats`, a last partial batch is dropped or kept.

Resume. With `with_position=True` each batch carries `data_position`, the raw position where the next batch begins;
given back as `start_position`, the epoch continues there, and the examples before it are not read, let alone
decoded. `start_batch` (checkpoints that recorded no position) decodes the first batches and throws them away.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import math
import os
import random
import signal
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset, IterableDataset
from datasets.distributed import split_dataset_by_node
from PIL import Image, UnidentifiedImageError

from ..image_processing import to_model_mode

logger = logging.getLogger(__name__)

# --dataloader_num_workers unset: no worker below this many examples per process (see `default_num_workers`).
MIN_EXAMPLES_FOR_WORKERS = 4096
MAX_DEFAULT_WORKERS = 8
PREFETCH_FACTOR = 2  # chunks in flight per worker (a chunk is a batch's worth of examples by default)
_READ_BLOCK = 256  # raw rows read at once from a streamed dataset


@dataclass
class BatchStats:
    """What the pipeline saw: images used, images skipped because they could not be decoded."""

    images: int = 0  # images yielded in batches
    decoded: int = 0  # images decoded (in a batch or not: an epoch's last partial batch is dropped)
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)  # first few reasons, for the log


class ImageTransform:
    """Raw image (bytes/path/PIL) -> float32 array (C, H, W) in `value_range`, or None when undecodable.

    Each image is resized (aspect kept) to just cover the target, then cropped; `center_crop=False` crops at random and
    `random_flip` flips, both drawn from `rng` so that a resumed run sees the same augmentations. A JPEG larger than
    the target is decoded at the smallest of libjpeg's scales (1, 1/2, 1/4, 1/8) that still covers it, then resized
    as any other image (`resize_to_cover`: Pillow's bicubic filter, computed by torch). In two
    stages, so that decoding workers send uint8 pixels (a quarter of the bytes) and the batch is scaled at once:
    `pixels` (decode, crop, flip -> uint8 (H, W, C)) and `to_float` (uint8 (B, H, W, C) -> float32 (B, C, H, W), the
    same arithmetic per value), or `to_model_input`, the same on a tensor where the model runs (training).
    """

    def __init__(self, size, num_channels: int, value_range=(-1.0, 1.0), center_crop=True, random_flip=False):
        self.height, self.width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.mode = "RGB" if num_channels == 3 else "L"
        self.low, self.high = value_range
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __call__(self, raw, rng: random.Random) -> np.ndarray | None:
        pixels = self.pixels(raw, rng)
        return None if pixels is None else self.to_float(pixels[None])[0]

    def pixels(self, raw, rng: random.Random) -> np.ndarray | None:
        """The decoded, resized, cropped and maybe flipped image as uint8 (H, W, C), or None when undecodable."""
        image = decode_image(raw, cover=(self.width, self.height), mode=self.mode)
        if image is None:
            return None
        array = np.array(to_model_mode(image, self.mode), dtype=np.uint8)  # a writable copy: torch reads it below
        array = self._crop(resize_to_cover(array[:, :, None] if array.ndim == 2 else array, self.height, self.width), rng)
        if self.random_flip and rng.random() < 0.5:
            return torch.from_numpy(array).flip(1).numpy()  # a copy, ~14x faster than numpy's of array[:, ::-1]
        return array

    def to_float(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 (B, H, W, C) -> float32 (B, C, H, W) in `value_range` (into `out` when given)."""
        chw = pixels.transpose(0, 3, 1, 2)
        out = np.empty(chw.shape, dtype=np.float32) if out is None else out
        out[...] = chw  # exact (uint8 -> float32); then the per-value arithmetic in place, on contiguous memory
        out *= np.float32((self.high - self.low) / 255.0)
        out += np.float32(self.low)
        return out

    def to_model_input(self, pixels: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float32 (B, C, H, W) in `value_range`, on the tensor's device: what `to_float` gives,
        value for value, for batches that travel as uint8 (`batches_for_rank(pixels_as_uint8=True)`)."""
        layout = torch.channels_last if channels_last else torch.contiguous_format
        out = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=layout)
        return out.mul_((self.high - self.low) / 255.0).add_(self.low)

    def _crop(self, array: np.ndarray, rng: random.Random) -> np.ndarray:
        height, width = array.shape[:2]
        if self.center_crop:
            left, top = (width - self.width) // 2, (height - self.height) // 2
        else:
            left, top = rng.randint(0, width - self.width), rng.randint(0, height - self.height)
        return array[top : top + self.height, left : left + self.width]


def resize_to_cover(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, C) scaled, aspect kept, to the smallest size that covers height x width (up or down).

    Bicubic with antialiasing, Pillow's filter (`Image.resize(..., BICUBIC)`), computed by torch's uint8 kernel: about
    4x faster than Pillow on a photo, and equal to Pillow's result on 99.6% of the values (the others differ by 1 or
    2 levels of 255, from rounding).
    """
    in_height, in_width = array.shape[:2]
    scale = max(height / in_height, width / in_width)
    size = (max(height, round(in_height * scale)), max(width, round(in_width * scale)))
    if size == (in_height, in_width):
        return array
    image = torch.from_numpy(array).permute(2, 0, 1)[None]  # (1, C, H, W) with channels-last strides
    resized = torch.nn.functional.interpolate(image, size=size, mode="bicubic", antialias=True)
    return resized[0].permute(1, 2, 0).numpy()


# Larger images are skipped before decoding: a 48 KB PNG can declare 20000x20000 pixels (a decompression bomb).
# PIL's own guard (Image.MAX_IMAGE_PIXELS, 89 M) only warns below twice its limit; this one is checked from the header.
MAX_IMAGE_PIXELS = 64_000_000


def decode_image(raw, max_pixels: int = MAX_IMAGE_PIXELS, cover: tuple[int, int] | None = None,
                 mode: str | None = None) -> Image.Image | None:
    """An image from a datasets `Image(decode=False)` value ({"bytes", "path"}), a PIL image, or None.

    None means undecodable: not an image, truncated, or larger than `max_pixels` by its header (not decoded).
    `cover` (width, height): the image will only be scaled down to cover this size, so a JPEG may be decoded at
    1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling, `Image.draft`) as long as it still covers it (a 12 MP photo
    trained at 256 px is decoded at 1/8). `mode` ("RGB" or "L") lets that decoder convert as it goes.
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
        if cover is not None and image.format == "JPEG":
            image.draft(mode, _cover_size(image.size, cover))
        image.load()  # a truncated file fails here, not later
        return image
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        return None


def _cover_size(size: tuple[int, int], cover: tuple[int, int]) -> tuple[int, int]:
    """`size` scaled (aspect kept) to just cover `cover`, never up: what a decoder must at least produce."""
    scale = min(max(cover[0] / size[0], cover[1] / size[1]), 1.0)
    return math.ceil(size[0] * scale), math.ceil(size[1] * scale)


def example_id(raw) -> str:
    """A stable id of an example's image (its bytes' digest): lets tests check what each rank saw."""
    data = raw.get("bytes") if isinstance(raw, dict) else None
    if data is None and isinstance(raw, dict):
        data = str(raw.get("path")).encode()
    return hashlib.sha1(data or b"").hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_num_workers(world_size: int = 1, examples: int | None = None, cores: int | None = None) -> int:
    """Decoding workers per process when --dataloader_num_workers is not given.

    One core per process stays with the training step; the others decode (at most `MAX_DEFAULT_WORKERS`). None on
    a machine with 2 or fewer cores per process (the workers would take the cores the training step's threads run
    on), nor for fewer than `MIN_EXAMPLES_FOR_WORKERS` examples per process (`examples`: the shard's size when
    known): workers start again at every epoch, about 1-2 s, more than decoding such an epoch takes.
    """
    per_process = (cores if cores is not None else available_cores()) // max(world_size, 1)
    if per_process <= 2 or (examples is not None and examples < MIN_EXAMPLES_FOR_WORKERS):
        return 0
    return min(MAX_DEFAULT_WORKERS, per_process - 1)


def worker_share() -> tuple[int, int]:
    """(number of workers, this worker's id) inside a DataLoader worker; (1, 0) in the calling process."""
    info = torch.utils.data.get_worker_info()
    return (1, 0) if info is None else (info.num_workers, info.id)


def init_worker(worker_id: int) -> None:
    """A decoding worker: one torch thread (the DataLoader sets it too), and Ctrl-C / SIGTERM left to the training
    process, which saves a checkpoint and then shuts its workers down (a worker killed first would fail the run)."""
    torch.set_num_threads(1)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)


def _keep(item):
    return item


def load_in_workers(source: torch.utils.data.IterableDataset, num_workers: int) -> Iterable:
    """The items of `source`, made by `num_workers` DataLoader worker processes (0: in this process).

    No automatic batching (`batch_size=None`: items are whole chunks or batches already) and no conversion of
    the items (`collate_fn` keeps them; tensors travel through shared memory). Workers are not persistent: each
    epoch or resume builds a new source (its order and start differ). The DataLoader draws its base seed from
    its own generator: by default each DataLoader iterator draws it from the global torch RNG (saved in checkpoints;
    VAE binarisation and code restarts draw from it), so a resumed run, which starts its iterator at another step,
    would draw other numbers than the straight run. No `pin_memory` here: the items are chunks, not batches;
    `batches_for_rank` writes each assembled batch into page-locked memory once.
    """
    if num_workers < 0:
        raise ValueError(f"dataloader_num_workers must be >= 0, got {num_workers}")
    if num_workers == 0:
        return source
    return torch.utils.data.DataLoader(
        source, batch_size=None, num_workers=num_workers, collate_fn=_keep, worker_init_fn=init_worker,
        prefetch_factor=PREFETCH_FACTOR, persistent_workers=False, pin_memory=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def in_order(items: Iterable, key: str = "chunk") -> Iterator:
    """`items` numbered 0, 1, 2 ... by `item[key]`, yielded in that order (a DataLoader already returns them so)."""
    waiting, expected = {}, 0
    for item in items:
        waiting[item[key]] = item
        while expected in waiting:
            yield waiting.pop(expected)
            expected += 1
    if waiting:
        raise RuntimeError(f"the data workers skipped item {expected} (got {sorted(waiting)[:5]} ...)")


# ----------------------------------------------------------------------------------------------------------------
# Raw chunks and their decoding
# ----------------------------------------------------------------------------------------------------------------


def _rows(block: dict, indices: Iterable[int]) -> list[dict]:
    return [{name: values[index] for name, values in block.items()} for index in indices]


def raw_chunks(shard, columns: list[str], start: int, chunk_size: int, workers: int = 1, worker: int = 0):
    """(chunk number, first position, rows) of the chunks c with c % workers == worker, where chunk c holds the raw
    examples at positions start + c * chunk_size ... (+ chunk_size - 1) of `shard`; only `columns` are read.

    A map-style `Dataset` (or a list) is sliced: no other example is read. A stream is read from its beginning by
    every worker (raw bytes, no decoding) and each keeps its own chunks; the examples before `start` are read
    and dropped, undecoded.
    """
    if isinstance(shard, (Dataset, Sequence)):
        table = shard.select_columns(columns) if isinstance(shard, Dataset) else shard
        for number in itertools.count(worker, workers):
            first = start + number * chunk_size
            if first >= len(table):
                return
            block = table[first : first + chunk_size]
            rows = _rows(block, range(len(block[columns[0]]))) if isinstance(block, dict) else list(block)
            yield number, first, rows
        return
    if isinstance(shard, IterableDataset):
        # `.iter()`, not `iter()`: inside a DataLoader worker, iter() would give this worker only some of the stream's
        # files (datasets' own worker sharding), but each worker must see the whole shard to pick its chunks. No
        # select_columns() here: on a shuffled stream it changes the order (datasets 5.2).
        blocks = shard.iter(batch_size=_READ_BLOCK)
    else:  # any iterable of examples
        blocks = ({name: [example[name]] for name in columns} for example in shard)
    rows, number, position = [], 0, 0
    for block in blocks:
        for index in range(len(block[columns[0]])):
            if position >= start:
                number = (position - start) // chunk_size
                if number % workers == worker:
                    rows.append({name: block[name][index] for name in columns})
                if (position - start + 1) % chunk_size == 0 and rows:
                    yield number, position + 1 - chunk_size, rows
                    rows = []
            position += 1
    if rows:
        yield number, start + number * chunk_size, rows


class DecodedChunks(torch.utils.data.IterableDataset):
    """The decoded chunks of one rank's shard of one epoch, from `start` on; see the module's docstring.

    Each item: {"chunk": number, "start": first position, "ok": [decodable?] per example, "where": [file or None]
    per example, "pixels": a tensor of the decoded examples or None, "ids": [...] (with_ids), "columns":
    {name: [values of the decoded examples]}}. The pixels are uint8 (decoded, H, W, C) when the transform has the
    two stages of `ImageTransform` (`pixels`, then `to_float` on the assembled batch), else what the transform
    returns, stacked. In a worker they are written straight into shared memory (what the DataLoader sends).
    """

    def __init__(self, shard, image_column: str, transform, *, seed: int, epoch: int, rank: int, start: int,
                 chunk_size: int, columns: tuple[str, ...] = (), with_ids: bool = False):  # fmt: skip
        self.shard, self.image_column, self.transform = shard, image_column, transform
        self.key = (seed, epoch, rank)
        self.start, self.chunk_size = start, chunk_size
        self.columns, self.with_ids = tuple(columns), with_ids

    def __iter__(self):
        workers, worker = worker_share()
        read = [self.image_column, *[name for name in self.columns if name != self.image_column]]
        for number, first, rows in raw_chunks(self.shard, read, self.start, self.chunk_size, workers, worker):
            yield self.decode(number, first, rows)

    def decode(self, number: int, first: int, rows: list[dict]) -> dict:
        seed, epoch, rank = self.key
        arrays, ok, where, ids = [], [], [], []
        columns = {name: [] for name in self.columns}
        decode = getattr(self.transform, "pixels", self.transform)  # uint8 first when the transform has two stages
        for offset, example in enumerate(rows):
            raw = example[self.image_column]
            array = decode(raw, random.Random(hash((seed, epoch, rank, first + offset))))
            ok.append(array is not None)
            if array is None:
                where.append(raw.get("path") if isinstance(raw, dict) else None)
                continue
            where.append(None)
            arrays.append(array)
            if self.with_ids:
                ids.append(example_id(raw))
            for name in self.columns:
                columns[name].append(example[name])
        return {"chunk": number, "start": first, "ok": ok, "where": where, "pixels": _stack(arrays), "ids": ids,
                "columns": columns}  # fmt: skip


def _stack(arrays: list[np.ndarray]) -> torch.Tensor | None:
    """One tensor of `arrays`; in a DataLoader worker, in shared memory already (else pickling copies it there)."""
    if not arrays:
        return None
    dtype = torch.from_numpy(np.empty(0, dtype=arrays[0].dtype)).dtype
    out = torch.empty((len(arrays), *arrays[0].shape), dtype=dtype)
    if torch.utils.data.get_worker_info() is not None:
        out.share_memory_()
    np.stack(arrays, out=out.numpy())
    return out


# ----------------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------------


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
    start_position: int | None = None,
    shuffle: bool = True,
    shuffle_buffer_size: int = 1000,
    drop_last: bool = True,
    stats: BatchStats | None = None,
    with_ids: bool = False,
    columns: tuple[str, ...] = (),
    with_position: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    chunk_size: int | None = None,
    pixels_as_uint8: bool = False,
) -> Iterator[dict]:
    """Batches `{"pixel_values": (B, C, H, W)}` of one epoch for one rank.

    The epoch's order depends only on (seed, epoch); ranks read disjoint shards (`split_dataset_by_node`) whose
    union is the dataset. Undecodable images are skipped and counted in `stats`. `columns` (e.g. "label") are
    carried along as tensors; `with_ids` adds "example_ids"; `with_position` adds "data_position", the raw
    position in the rank's shard where the next batch begins.

    The batches begin at raw position `start_position` (a `data_position` given back: nothing before it is read or
    decoded), else after skipping `start_batch` batches (decoded, then dropped). `num_workers` DataLoader worker
    processes decode chunks of `chunk_size` examples (default `batch_size`); the batches are the same for any
    number of workers. `pin_memory` puts each batch in page-locked memory (for a fast copy to a CUDA device).

    `pixels_as_uint8` (training): the batches carry "pixels", uint8 (B, H, W, C) as decoded, instead of
    "pixel_values"; `transform.to_model_input` scales them where the model runs. A quarter of the bytes to copy to
    the device, and no float work in this process, which on a GPU machine feeds the device from the workers' chunks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pixels_as_uint8 and not hasattr(transform, "to_model_input"):
        raise ValueError("pixels_as_uint8=True needs a transform with the stages of ImageTransform (pixels, "
                         f"to_model_input); {type(transform).__name__} has none")
    stats = stats if stats is not None else BatchStats()
    ordered = _epoch_order(dataset, seed, epoch, shuffle, shuffle_buffer_size)
    shard = split_dataset_by_node(ordered, rank=rank, world_size=world_size) if world_size > 1 else ordered
    if start_position is not None:
        start_batch = 0
    source = DecodedChunks(shard, image_column, transform, seed=seed, epoch=epoch, rank=rank,
                           start=start_position or 0, chunk_size=chunk_size or batch_size, columns=columns,
                           with_ids=with_ids)  # fmt: skip
    two_stages = hasattr(transform, "pixels") and not pixels_as_uint8
    convert = transform.to_float if two_stages else None
    key = "pixels" if pixels_as_uint8 else "pixel_values"
    pending, index = _Pending(columns, convert, key), 0
    for chunk in in_order(load_in_workers(source, num_workers)):
        row = 0  # the chunk's row in chunk["pixels"]
        for offset, ok in enumerate(chunk["ok"]):
            position = chunk["start"] + offset
            if not ok:
                _count_skip(stats, chunk["where"][offset], position)
                continue
            stats.decoded += 1
            pending.add(chunk, row, position)
            row += 1
            if len(pending) == batch_size:
                if index >= start_batch:
                    yield pending.batch(stats, with_ids, with_position, pin_memory)
                pending, index = _Pending(columns, convert, key), index + 1
    if len(pending) and not drop_last and index >= start_batch:
        yield pending.batch(stats, with_ids, with_position, pin_memory)


class _Pending:
    """The examples of the batch being assembled: rows of decoded chunks; `convert` (uint8 (B, H, W, C) -> float
    (B, C, H, W) into a given array) makes the batch's pixel values from uint8 chunks; `key`: the images' name in
    the batch."""

    def __init__(self, columns: tuple[str, ...], convert=None, key: str = "pixel_values"):
        self.convert, self.key = convert, key
        self.segments: list[list] = []  # [pixels tensor, first row, end row]: consecutive rows of one chunk
        self.ids: list[str] = []
        self.columns = {name: [] for name in columns}
        self.count, self.end = 0, 0  # end: the raw position after the last example

    def __len__(self) -> int:
        return self.count

    def add(self, chunk: dict, row: int, position: int) -> None:
        pixels = chunk["pixels"]
        if self.segments and self.segments[-1][0] is pixels and self.segments[-1][2] == row:
            self.segments[-1][2] += 1
        else:
            self.segments.append([pixels, row, row + 1])
        if chunk["ids"]:
            self.ids.append(chunk["ids"][row])
        for name, values in self.columns.items():
            values.append(chunk["columns"][name][row])
        self.count += 1
        self.end = position + 1  # where the next batch begins

    def batch(self, stats: BatchStats, with_ids: bool, with_position: bool, pin_memory: bool) -> dict:
        stats.images += self.count
        parts = [pixels[first:end] for pixels, first, end in self.segments]
        if self.convert is not None:  # uint8 (B, H, W, C) -> float32 (B, C, H, W), written once
            pixels = parts[0] if len(parts) == 1 else torch.cat(parts)
            batch_size, height, width, channels = pixels.shape
            out = torch.empty((batch_size, channels, height, width), dtype=torch.float32, pin_memory=pin_memory)
            self.convert(pixels.numpy(), out=out.numpy())
            pixels = out
        elif len(parts) == 1 and len(parts[0]) == len(self.segments[0][0]) and not pin_memory:
            pixels = parts[0]  # a whole chunk: no copy
        else:
            shape = (self.count, *parts[0].shape[1:])
            pixels = torch.cat(parts, out=torch.empty(shape, dtype=parts[0].dtype, pin_memory=pin_memory))
        batch = {self.key: pixels}
        batch.update({name: torch.as_tensor(values) for name, values in self.columns.items()})
        if with_ids:
            batch["example_ids"] = list(self.ids)
        if with_position:
            batch["data_position"] = self.end
        return batch


def _epoch_order(dataset, seed: int, epoch: int, shuffle: bool, buffer_size: int):
    if not shuffle:
        return dataset
    if isinstance(dataset, IterableDataset):
        shuffled = dataset.shuffle(seed=seed, buffer_size=buffer_size)
        shuffled.set_epoch(epoch)
        return shuffled
    return dataset.shuffle(seed=seed + epoch)


def _count_skip(stats: BatchStats, where: str | None, position: int) -> None:
    stats.skipped += 1
    if len(stats.skipped_examples) < 5:
        stats.skipped_examples.append(f"example {position}{f' ({where})' if where else ''}")
    if stats.skipped <= 5 or _is_power_of_ten(stats.skipped):  # the first few, then 10, 100, 1000... (no flood)
        logger.warning("skipped an undecodable image (example %d of this shard; %d skipped so far)", position, stats.skipped)


def _is_power_of_ten(number: int) -> bool:
    return number >= 1 and 10 ** round(math.log10(number)) == number
