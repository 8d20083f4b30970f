"""Datasets of VQ codes: what scripts/extract_codes.py writes and what the priors train on.

A codes dataset is a folder laid out like a Hub dataset repo: `data/<split>-<rank>-of-<n>.parquet` with one column
per level (`codes_0` = top level, ... each an (H_l, W_l) array of int16, or int32 when K > 32768 so that no code
wraps negative) plus `label` when the source had one, a dataset card `README.md`, and `codes_info.json`: the model
it came from (its name and a fingerprint of its codebooks), its codebook size and code shapes, and the image size,
so that a prior trained on it can check it matches the decoder it is paired with.

An extraction writes only into a new or empty folder, or, with `overwrite`, into a folder holding nothing but an
earlier codes dataset, whose shards and `codes_info.json` are deleted first (`check_output_dir`,
`clear_codes_dataset`): shards of two extractions are never mixed, and no model folder or other file is touched.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

from .pipeline import in_order, load_in_workers, worker_share

INFO_FILE = "codes_info.json"
SHARD_NAME = re.compile(r"^.+-\d{5}-of-\d{5}\.parquet$")  # data/<split>-<rank>-of-<n>.parquet
MODEL_MARKERS = ("config.json", "model_index.json", "model*.safetensors")  # a model or pipeline folder


@dataclass
class CodesInfo:
    """What the codes are: the model that made them and their shapes (top level first)."""

    model: str
    model_type: str
    num_embeddings: int
    code_shapes: list[list[int]]
    image_size: list[int]
    num_channels: int
    num_classes: int = 0
    splits: dict[str, int] = field(default_factory=dict)  # split -> number of examples
    # sha256 of the model's codebooks per dtype (hf_vqvae.pipelines.codes_source); None in datasets made before
    codebook_sha256: dict[str, str] | None = None

    @property
    def num_levels(self) -> int:
        return len(self.code_shapes)

    def image_dims(self) -> int:
        """C x H x W of the images: converts nats per code into bits per image dimension."""
        return self.num_channels * self.image_size[0] * self.image_size[1]

    def bits_per_dim(self, nats_per_code: float, level: int | None = None) -> float:
        """A level's (or, with level=None, all levels') code NLL expressed in bits per image dimension."""
        shapes = self.code_shapes if level is None else [self.code_shapes[level]]
        codes = sum(h * w for h, w in shapes)
        return nats_per_code * codes / (self.image_dims() * math.log(2))


def code_dtype(num_embeddings: int) -> str:
    """The smallest stored integer type holding every code 0 .. K-1: int16 up to K = 32768, else int32."""
    return "int16" if num_embeddings - 1 <= np.iinfo(np.int16).max else "int32"


def features_for(info: CodesInfo, with_label: bool) -> datasets.Features:
    dtype = code_dtype(info.num_embeddings)
    columns = {f"codes_{level}": datasets.Array2D(shape=tuple(shape), dtype=dtype)
               for level, shape in enumerate(info.code_shapes)}  # fmt: skip
    if with_label:
        columns["label"] = datasets.Value("int64")
    return datasets.Features(columns)


def check_output_dir(folder: str | Path, overwrite: bool) -> None:
    """Refuse a folder an extraction would damage or mix into: a model or pipeline folder always (its README.md card
    would be overwritten); a non-empty folder unless `overwrite` and it holds only an earlier codes dataset."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"--output_dir {folder} is a file: pass a new or empty folder for the codes dataset")
    model_files = sorted(path.name for pattern in MODEL_MARKERS for path in folder.glob(pattern))
    if model_files:
        raise ValueError(f"--output_dir {folder} holds a model ({', '.join(model_files)}): writing a codes dataset "
                         "there would overwrite its README.md card; choose a new folder for the codes")  # fmt: skip
    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir())
    if files and not overwrite:
        raise ValueError(f"--output_dir {folder} is not empty ({len(files)} file(s): {', '.join(files[:4])}"
                         f"{', ...' if len(files) > 4 else ''}); new shards would be mixed with those already there. "
                         "Choose a new folder, or pass --overwrite to replace the codes dataset in it")  # fmt: skip
    foreign = [name for name in files if not _written_by_extraction(folder, name)]
    if foreign:
        raise ValueError(f"--overwrite replaces only a codes dataset, but {folder} also holds "
                         f"{', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''}: choose a new --output_dir "
                         "(nothing was deleted)")  # fmt: skip


def _written_by_extraction(folder: Path, name: str) -> bool:
    """Whether `name` (relative to `folder`) is a file scripts/extract_codes.py writes."""
    if name == INFO_FILE:
        return True
    if name == "README.md":  # the card is written after codes_info.json, so without it the card is not ours
        return (folder / INFO_FILE).is_file()
    parent, _, base = name.rpartition("/")
    return parent == "data" and SHARD_NAME.match(base) is not None


def clear_codes_dataset(folder: str | Path) -> list[Path]:
    """Delete an earlier extraction's shards and `codes_info.json` from `folder` (README.md is rewritten later)."""
    folder = Path(folder)
    stale = [path for path in sorted((folder / "data").glob("*.parquet")) if SHARD_NAME.match(path.name)]
    stale += [folder / INFO_FILE] if (folder / INFO_FILE).is_file() else []
    for path in stale:
        path.unlink()
    return stale


def write_shard(folder: Path, split: str, rank: int, world_size: int, rows: dict, info: CodesInfo) -> Path:
    """One process's examples of one split as `data/<split>-<rank>-of-<n>.parquet`."""
    path = Path(folder) / "data" / f"{split}-{rank:05d}-of-{world_size:05d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_dict(rows, features=features_for(info, "label" in rows))
    table.to_parquet(str(path))
    return path


def write_card(folder: Path, info: CodesInfo, source: str) -> None:
    """`codes_info.json` and a dataset card whose YAML lists the splits' files."""
    folder = Path(folder)
    (folder / INFO_FILE).write_text(json.dumps(asdict(info), indent=2))
    configs = "\n".join(f"  - split: {split}\n    path: data/{split}-*" for split in info.splits)
    shapes = ", ".join(f"level {level}: {h}x{w}" for level, (h, w) in enumerate(info.code_shapes))
    card = (
        f"---\nconfigs:\n- config_name: default\n  data_files:\n{configs}\ntags:\n- hf_vqvae\n- vq-codes\n---\n"
        f"# VQ codes of `{source}`\n\nMade by `scripts/extract_codes.py` with the `{info.model_type}` model "
        f"`{info.model}` (K = {info.num_embeddings}; code maps {shapes}, top level first) from "
        f"{info.image_size[0]}x{info.image_size[1]}x{info.num_channels} images. Columns: `codes_<level>` "
        f"({code_dtype(info.num_embeddings)} arrays){', `label`' if info.num_classes else ''}. "
        f"Examples per split: {info.splits}.\n"
    )
    (folder / "README.md").write_text(card)


def load_codes(folder: str | Path) -> tuple[datasets.DatasetDict, CodesInfo]:
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise ValueError(f"{folder} is not a codes dataset (no {INFO_FILE}); make one with scripts/extract_codes.py")
    info = CodesInfo(**json.loads((folder / INFO_FILE).read_text()))
    splits = {split: str(folder / "data" / f"{split}-*.parquet") for split in info.splits}
    return datasets.load_dataset("parquet", data_files=splits), info


def check_prior_matches(info: CodesInfo, level: int, num_embeddings: int, num_classes: int,
                        condition_num_embeddings: int) -> None:  # fmt: skip
    """A prior must model the codebook of its level, and be conditioned on what the dataset provides."""
    if not 0 <= level < info.num_levels:
        raise ValueError(f"--level {level} is out of range: the codes have {info.num_levels} level(s), top = 0")
    if num_embeddings != info.num_embeddings:
        raise ValueError(f"the prior models K = {num_embeddings} codes but the codes come from K = {info.num_embeddings}")
    if num_classes and num_classes < info.num_classes:
        raise ValueError(f"the prior knows {num_classes} classes but the dataset has {info.num_classes}")
    if condition_num_embeddings and level == 0:
        raise ValueError("the top level (0) has no upper level to condition on: set condition_num_embeddings 0")
    if level > 0 and not condition_num_embeddings:
        raise ValueError(f"level {level} is a lower level: its prior must be conditioned on level {level - 1}")


def code_batches(dataset, level: int, *, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0, start_position: int | None = None, shuffle: bool = True, drop_last: bool = True,
                 with_labels: bool = False, with_position: bool = False, num_workers: int = 0,
                 pin_memory: bool = False) -> Iterator[dict]:  # fmt: skip
    """Batches `{"codes": (B, H, W), "condition_codes": (B, h, w) (lower levels), "class_labels": (B,)}`.

    The epoch's order depends only on (seed, epoch); ranks read disjoint shards (`split_dataset_by_node`) whose union
    is the dataset. Batches are consecutive rows of the rank's shard from row `start_position` (default `start_batch`
    x `batch_size`; rows before it are not read); `with_position` adds "data_position", the row where the next batch
    begins. `num_workers` DataLoader worker processes read them (batch i by worker i % num_workers), in the same
    order for any number of workers; `pin_memory` puts them in page-locked memory.
    """
    ordered = dataset.shuffle(seed=seed + epoch) if shuffle else dataset
    shard = split_dataset_by_node(ordered, rank=rank, world_size=world_size) if world_size > 1 else ordered
    columns = [f"codes_{level}"] + ([f"codes_{level - 1}"] if level > 0 else []) + (["label"] if with_labels else [])
    shard = shard.select_columns(columns).with_format("numpy")
    start = start_batch * batch_size if start_position is None else start_position
    remaining = max(len(shard) - start, 0)
    stop = start + (remaining // batch_size if drop_last else math.ceil(remaining / batch_size)) * batch_size
    source = _CodeBatches(shard, level, list(range(start, stop, batch_size)), batch_size, with_labels)
    for item in in_order(load_in_workers(source, num_workers), key="index"):
        batch = item["batch"]
        if pin_memory:
            batch = {key: value.pin_memory() for key, value in batch.items()}
        if with_position:
            batch["data_position"] = item["end"]
        yield batch


class _CodeBatches(torch.utils.data.IterableDataset):
    """Batches of a codes shard beginning at the rows `starts`; worker w of n makes batches i with i % n == w."""

    def __init__(self, shard, level: int, starts: list[int], batch_size: int, with_labels: bool):
        self.shard, self.level, self.starts = shard, level, starts
        self.batch_size, self.with_labels = batch_size, with_labels

    def __iter__(self):
        workers, worker = worker_share()
        for index in range(worker, len(self.starts), workers):
            start = self.starts[index]
            end = min(start + self.batch_size, len(self.shard))
            yield {"index": index, "end": end, "batch": self.batch(self.shard[start:end])}

    def batch(self, rows) -> dict:
        level = self.level
        batch = {"codes": torch.from_numpy(np.asarray(rows[f"codes_{level}"], dtype=np.int64))}
        if level > 0:
            batch["condition_codes"] = torch.from_numpy(np.asarray(rows[f"codes_{level - 1}"], dtype=np.int64))
        if self.with_labels:
            batch["class_labels"] = torch.from_numpy(np.asarray(rows["label"], dtype=np.int64))
        return batch
