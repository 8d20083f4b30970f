"""Evaluate a saved VAE, VQ-VAE or VQ-VAE-2 on an image dataset's eval split; print a table and write JSON.

    python scripts/evaluate.py runs/vqvae-mnist --dataset_name ../shared/datasets/mnist
    python scripts/evaluate.py runs/vae-mnist --num_samples 1000 --binarize dynamic
    python scripts/evaluate.py org/vqvae2-ffhq --dataset_name org/ffhq --output_json ffhq_eval.json

The image size, channels and value range come from the model's config ([-1, 1] for vqvae/vqvae2, [0, 1] for vae).
The eval split is the data module's: --eval_split, else 'test'/'validation' when the dataset has one, else a
held-out fraction of the train split (seeded by --seed, as in training). Metrics and their units: see
`hf_vqvae.evaluation.evaluate_vq` and `evaluate_vae`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch
from transformers import AutoModel

import hf_vqvae  # noqa: F401  (registers the models with the Auto classes before AutoModel is used)
from hf_vqvae.data import (
    DEFAULT_DATASET,
    BatchStats,
    DataArguments,
    ImageTransform,
    batches_for_rank,
    load_image_splits,
)
from hf_vqvae.evaluation import BINARIZE_MODES, evaluate_vae, evaluate_vq, to_jsonable
from hf_vqvae.registry import FAMILIES, family_for

DEFAULT_JSON_NAME = "eval_results.json"

logger = logging.getLogger("evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; argparse errors (exit code 2) for a missing local model folder or missing JSON path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="A saved model folder (save_pretrained) or a Hub model id.")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default=DEFAULT_DATASET, help="Hub dataset id or local dataset folder.")
    data.add_argument("--dataset_config", default=None, help="The dataset's configuration name, if any.")
    data.add_argument("--eval_split", default=None, help="Split to evaluate; default: test/validation, else held out.")
    data.add_argument("--image_column", default=None, help="Column holding the images (detected when unique).")
    data.add_argument("--train_data_dir", default=None, help="An imagefolder; replaces --dataset_name.")
    data.add_argument("--streaming", action="store_true", help="Stream the dataset instead of downloading it first.")
    data.add_argument("--eval_fraction", type=float, default=0.1, help="Held-out fraction without an eval split.")
    data.add_argument("--max_eval_samples", type=int, default=None, help="Evaluate at most this many images (all).")
    run = parser.add_argument_group("evaluation")
    run.add_argument("--batch_size", type=int, default=64, help="Images per batch.")
    run.add_argument("--num_samples", type=int, default=0, help="VAE: importance samples per image (0: no NLL).")
    run.add_argument("--binarize", default="none", choices=BINARIZE_MODES, help="VAE, Bernoulli decoder only.")
    run.add_argument("--seed", type=int, default=0, help="Seed of the held-out split (the training run's) and draws.")
    run.add_argument("--device", default=None, help="Device to run on (default: cuda when available, else cpu).")
    run.add_argument("--output_json", default=None, help=f"JSON path (default: MODEL/{DEFAULT_JSON_NAME}).")
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return args


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name, minimum in (("batch_size", 1), ("num_samples", 0), ("max_eval_samples", 1)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(f"--{name} must be >= {minimum}, got {value}")
    if os.path.isdir(args.model):
        return
    if os.path.exists(args.model):
        parser.error(f"MODEL {args.model} is a file; pass the model folder (the one holding config.json)")
    if _looks_like_local_path(args.model):
        parser.error(f"model folder {args.model} does not exist")
    if args.output_json is None:
        parser.error(f"MODEL {args.model!r} is not a local folder (read as a Hub id), so --output_json is required")


def _looks_like_local_path(name: str) -> bool:
    """True for names that cannot be a Hub id ('org/name' or 'name'): relative/absolute paths, '~', nested folders."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def main(args: argparse.Namespace) -> dict:
    """Evaluate `args.model` on the eval split; print the table, write the JSON report and return it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(args.model).to(device)
    model_type = model.config.model_type
    batches, stats = eval_batches(args, model.config)
    metrics = run_evaluation(model, batches, args, device)
    report = {
        "model": args.model,
        "model_type": model_type,
        "dataset": args.train_data_dir or args.dataset_name,
        "eval_split": args.eval_split or "default (test/validation if present, else held out from train)",
        "seed": args.seed,
        "skipped_images": stats.skipped,
        "metrics": metrics,
    }
    print(format_table(report))
    path = write_json(report, output_json_path(args))
    print(f"wrote {path}")
    return report


def load_model(name: str):
    """`AutoModel.from_pretrained(name)` with clear `ValueError`s for a missing folder, config or Hub model."""
    if os.path.isdir(name) and not os.path.isfile(os.path.join(name, "config.json")):
        raise ValueError(f"{name} has no config.json; pass a folder written by save_pretrained")
    if not os.path.isdir(name) and _looks_like_local_path(name):
        raise ValueError(f"model folder {name} does not exist")
    try:
        return AutoModel.from_pretrained(name)
    except OSError as error:
        raise ValueError(
            f"could not load the model {name!r}: not a local folder, and not found on the Hub ({error})"
        ) from error


def eval_batches(args: argparse.Namespace, config):
    """The eval split's batches `{"pixel_values": (B, C, H, W)}` at the model's size, channels and value range."""
    data_args = DataArguments(
        dataset_name=args.dataset_name,
        dataset_config=args.dataset_config,
        train_data_dir=args.train_data_dir,
        eval_split=args.eval_split,
        image_column=args.image_column,
        streaming=args.streaming,
        eval_fraction=args.eval_fraction,
        max_eval_samples=args.max_eval_samples,
    )
    splits = load_image_splits(data_args, seed=args.seed)
    transform = ImageTransform(config.image_size, config.num_channels, value_range=family_for(config).value_range,
                               center_crop=True)  # fmt: skip
    stats = BatchStats()
    batches = batches_for_rank(
        splits.eval, splits.image_column, transform, batch_size=args.batch_size, seed=args.seed, epoch=0,
        shuffle=False, drop_last=False, stats=stats,
    )  # fmt: skip
    return batches, stats


def run_evaluation(model, batches, args: argparse.Namespace, device: torch.device) -> dict:
    """`evaluate_vq` or `evaluate_vae` by the model's type, as JSON-ready numbers."""
    model_type = model.config.model_type
    family = family_for(model)
    if family.is_vq:
        if args.num_samples or args.binarize != "none":
            logger.warning("--num_samples and --binarize apply to VAEs only; ignored for a %s", model_type)
        return to_jsonable(evaluate_vq(model, batches))
    if family.kind == "vae":
        generator = torch.Generator(device=device).manual_seed(args.seed)
        metrics = evaluate_vae(model, batches, args.num_samples, generator=generator, binarize=args.binarize)
        return to_jsonable(metrics)
    known = ", ".join(f.model_type for f in FAMILIES if f.reads_images)
    raise ValueError(f"cannot evaluate a model of type {model_type!r}; expected one of: {known}")


def output_json_path(args: argparse.Namespace) -> str:
    if args.output_json is not None:
        return args.output_json
    if not os.path.isdir(args.model):
        raise ValueError(f"MODEL {args.model!r} is not a local folder; pass --output_json")
    return os.path.join(args.model, DEFAULT_JSON_NAME)


def write_json(report: dict, path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as file:
        json.dump(report, file, indent=2)
        file.write("\n")
    return path


def format_table(report: dict) -> str:
    """A two-column text table: the run's description, then one row per metric."""
    header = {key: value for key, value in report.items() if key != "metrics"}
    rows = [(key, str(value)) for key, value in header.items()]
    rows += [(key, _format_value(value)) for key, value in report["metrics"].items()]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines[: len(header)], rule, *lines[len(header) :], rule])


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


if __name__ == "__main__":
    try:
        main(parse_args())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
