#!/usr/bin/env python
"""Encode an image dataset into VQ codes, one column per level, for training priors.

    python scripts/extract_codes.py --model outputs/vqvae-mnist --dataset_name ../shared/datasets/mnist \\
        --output_dir outputs/mnist-codes
    accelerate launch --num_processes 4 scripts/extract_codes.py ...     # GPUs: every process encodes its own shard
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/extract_codes.py ...   # CPU only

The result is a folder laid out like a Hub dataset repo (parquet shards, a dataset card) plus `codes_info.json`
naming the model (and a fingerprint of its codebooks), its codebook size and the code shapes, which the prior
training checks and records, so that a prior is only ever paired with the VQ model its codes came from. Each of N
processes encodes a disjoint 1/N of every split and writes its own shard, so every image is written exactly once.
Codes are stored as int16, or int32 when the codebook has more than 32768 entries.

`--output_dir` must be new or empty; a folder holding an earlier extraction is refused (its shards would be mixed
into the new codes) unless `--overwrite`, which deletes that extraction's shards and codes_info.json first and
refuses a folder holding anything else. A model or pipeline folder is always refused (its card would be lost).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoModel

import hf_vqvae  # noqa: F401  (registers the Auto classes)
from hf_vqvae.data import BatchStats, DataArguments, ImageTransform, batches_for_rank, load_image_splits
from hf_vqvae.data.codes import CodesInfo, check_output_dir, clear_codes_dataset, code_dtype, write_card, write_shard
from hf_vqvae.pipelines.codes_source import codebook_fingerprints
from hf_vqvae.registry import families_of_kind

logger = logging.getLogger("extract_codes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved VQ-VAE / VQ-VAE-2 folder or Hub id")
    parser.add_argument("--output_dir", required=True, help="where the codes dataset goes")
    parser.add_argument("--dataset_name", default="sklearn-digits", help="Hub id, local repo-like folder, or sklearn-digits")
    parser.add_argument("--dataset_config", default=None)
    parser.add_argument("--train_data_dir", default=None, help="an imagefolder instead of --dataset_name")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--label_column", default="label", help="kept as `label` when the source has it")
    parser.add_argument("--splits", default=None, help="comma-separated splits to encode (default: train and eval)")
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--max_samples", type=int, default=None, help="encode at most this many images per split")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the codes dataset already in --output_dir (its shards and codes_info.json are "
                             "deleted first); a folder holding any other file is still refused")  # fmt: skip
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    return args


def main(args: argparse.Namespace) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = _distributed_state()
    output = Path(args.output_dir)
    check_output_dir(output, args.overwrite)  # every process, before the main one deletes anything
    model = _load_vq_model(args.model).to(state.device).eval()
    config = model.config
    data_args = DataArguments(dataset_name=args.dataset_name, dataset_config=args.dataset_config,
                              train_data_dir=args.train_data_dir, image_column=args.image_column,
                              streaming=args.streaming, max_train_samples=args.max_samples,
                              max_eval_samples=args.max_samples)  # fmt: skip
    splits = load_image_splits(data_args)
    transform = ImageTransform(config.image_size, config.num_channels, (-1.0, 1.0))
    has_label = args.label_column in (splits.train.features or {})
    info = CodesInfo(
        model=str(args.model), model_type=config.model_type, num_embeddings=config.num_embeddings,
        code_shapes=[list(shape) for shape in config.latent_shapes()], image_size=list(transform_size(transform)),
        num_channels=config.num_channels, num_classes=_num_classes(splits.train, args.label_column) if has_label else 0,
        codebook_sha256=codebook_fingerprints(model),
    )  # fmt: skip
    _clear_earlier_extraction(output, state)
    largest_label = -1
    for name, dataset in _chosen_splits(splits, args.splits).items():
        rows, count = _encode(model, dataset, splits.image_column, transform, args, state, has_label)
        write_shard(output, name, state.process_index, state.num_processes, rows, info)
        info.splits[name] = _reduce(count, state, "sum")
        largest_label = max([largest_label, *rows.get("label", [])])
    if has_label and not info.num_classes:  # labels without a ClassLabel feature: 0 .. the largest seen
        info.num_classes = _reduce(largest_label, state, "max") + 1
    if state.is_main_process:
        write_card(output, info, splits.source)
        logger.info("wrote %s: %s", output, info.splits)
    state.wait_for_everyone()
    return output


def _distributed_state() -> Accelerator:
    """The process group. `Accelerator` (not `PartialState`) reads ACCELERATE_USE_CPU, so the processes of
    `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N` on a CPU-only machine form one group of N
    instead of N lone processes that would each encode everything and write the same files."""
    state = Accelerator()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise RuntimeError(f"launched as {launched} processes but accelerate joined {state.num_processes}; on a "
                           "CPU-only machine launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu "
                           f"--num_processes {launched}")  # fmt: skip
    return state


def _clear_earlier_extraction(output: Path, state) -> None:
    """With --overwrite, the main process deletes an earlier extraction's files once every process has checked the
    folder, and no process writes before that is done."""
    state.wait_for_everyone()
    if state.is_main_process:
        stale = clear_codes_dataset(output)
        if stale:
            logger.info("--overwrite: deleted %d file(s) of the earlier extraction in %s", len(stale), output)
    state.wait_for_everyone()


def transform_size(transform: ImageTransform) -> tuple[int, int]:
    return transform.height, transform.width


def _load_vq_model(source: str):
    if os.path.isdir(source) and not (Path(source) / "config.json").is_file():
        raise ValueError(f"{source} has no config.json: pass a folder written by save_pretrained or a Hub id")
    model = AutoModel.from_pretrained(source)
    if model.config.model_type not in [family.model_type for family in families_of_kind("vq")]:
        vq_names = " or ".join(family.model_type for family in families_of_kind("vq"))
        raise ValueError(f"{source} is a {model.config.model_type!r} model; codes come from a {vq_names} model")
    return model


def _chosen_splits(splits, names: str | None) -> dict:
    available = {"train": splits.train, "test": splits.eval}
    if names is None:
        return available
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}: the codes dataset has 'train' and 'test' (the eval split)")
    return {name: available[name] for name in chosen}


@torch.no_grad()
def _encode(model, dataset, image_column, transform, args, state, has_label) -> tuple[dict, int]:
    columns = ("label",) if has_label and args.label_column == "label" else ()
    rows = {f"codes_{level}": [] for level in range(model.config.num_levels)}
    if has_label:
        rows["label"] = []
    stats, dtype = BatchStats(), code_dtype(model.config.num_embeddings)
    for batch in batches_for_rank(dataset, image_column, transform, batch_size=args.batch_size, seed=0, epoch=0,
                                  rank=state.process_index, world_size=state.num_processes, shuffle=False,
                                  drop_last=False, stats=stats, columns=columns):  # fmt: skip
        codes = model.encode(batch["pixel_values"].to(state.device)).codes
        for level, level_codes in enumerate(codes):
            rows[f"codes_{level}"].extend(level_codes.cpu().numpy().astype(dtype))
        if has_label:
            rows["label"].extend(batch["label"].tolist())
    if stats.skipped:
        logger.warning("skipped %d undecodable images", stats.skipped)
    return rows, stats.images


def _num_classes(dataset, column: str) -> int:
    feature = dataset.features[column]
    return getattr(feature, "num_classes", None) or 0


def _reduce(value: int, state, operation: str) -> int:
    if state.num_processes == 1:
        return value
    tensor = torch.tensor(value, device=state.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM if operation == "sum" else torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


if __name__ == "__main__":
    main(parse_args())
