#!/usr/bin/env python
"""Train a small image classifier, the judge of classifier-based rejection sampling (VQ-VAE-2 §3.3).

The model is a transformers `ResNetForImageClassification` (two basic-block stages), saved with `save_pretrained`
(safetensors) and a `preprocessor_config.json`, so that `AutoModelForImageClassification.from_pretrained(DIR)` and
`hf_vqvae.pipelines.ClassifierJudge.from_pretrained(DIR)` load it like any Hub classifier:

    python scripts/train_classifier.py --dataset_name ../shared/datasets/mnist --output_dir outputs/mnist-classifier
    python scripts/sample.py --pipeline outputs/mnist-pipeline --class_labels 7 \\
        --classifier outputs/mnist-classifier --keep_fraction 0.25 --num_images 64

It writes `metrics.json` with the accuracy on the held-out split. `--device` picks where it trains (default: cuda when
available, else cpu); the model is saved from the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import ClassLabel
from tqdm.auto import tqdm
from transformers import ResNetConfig, ResNetForImageClassification

try:  # the PIL-backed processor needs no torchvision (transformers >= 5 names it so)
    from transformers import ViTImageProcessorPil as ViTImageProcessor
except ImportError:
    from transformers import ViTImageProcessor

from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits
from hf_vqvae.data.loading import DEFAULT_DATASET
from hf_vqvae.devices import add_device_argument, resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", default=DEFAULT_DATASET, help="Hub id, local repo-like folder, or sklearn-digits")
    parser.add_argument("--train_data_dir", default=None, help="an imagefolder (class = sub-folder) instead")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--image_size", type=int, default=28, help="images are resized and centre-cropped to this")
    parser.add_argument("--num_channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--hidden_sizes", type=int, nargs=2, default=(32, 64), help="channels of the two stages")
    parser.add_argument("--max_train_steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--max_eval_samples", type=int, default=None, help="evaluate on at most this many images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", required=True)
    add_device_argument(parser)
    args = parser.parse_args(argv)
    for name in ("image_size", "max_train_steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def label_names(dataset, label_column: str, source: str) -> list[str]:
    """Class names from the label column's `ClassLabel` feature (integer labels without names: '0', '1', ...)."""
    features = dataset.features or {}
    if label_column not in features:
        raise ValueError(f"{source} has no label column {label_column!r} (columns: {', '.join(features)}); "
                         "pass --label_column")  # fmt: skip
    feature = features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    labels = dataset.unique(label_column) if hasattr(dataset, "unique") else None
    if not labels or not all(isinstance(label, int) for label in labels):
        raise ValueError(f"the label column {label_column!r} must be a ClassLabel or hold integers 0..N-1")
    return [str(index) for index in range(max(labels) + 1)]


def build_classifier(num_channels: int, names: list[str], hidden_sizes=(32, 64)) -> ResNetForImageClassification:
    config = ResNetConfig(
        num_channels=num_channels, embedding_size=hidden_sizes[0], hidden_sizes=list(hidden_sizes), depths=[1, 1],
        layer_type="basic", downsample_in_first_stage=False, num_labels=len(names),
        id2label=dict(enumerate(names)), label2id={name: index for index, name in enumerate(names)},
    )  # fmt: skip
    return ResNetForImageClassification(config)


def image_processor(image_size: int, num_channels: int) -> ViTImageProcessor:
    """Resize to the training size and map [0, 1] to [-1, 1], as the training transform does."""
    return ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * num_channels,
                                image_std=[0.5] * num_channels)  # fmt: skip


def _batches(split, splits, args, transform, shuffle: bool, epoch: int = 0):
    """Batches of `pixel_values` and labels, on the model's device."""
    device = resolve_device(args.device)
    batches = batches_for_rank(split, splits.image_column, transform, batch_size=args.batch_size, seed=args.seed,
                               epoch=epoch, shuffle=shuffle, drop_last=shuffle, columns=(args.label_column,))  # fmt: skip
    for batch in batches:
        yield {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def fit(model, splits, args, transform) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=args.max_train_steps)
    model.train()
    step, epoch = 0, 0
    with tqdm(total=args.max_train_steps, desc="classifier steps") as progress:
        while step < args.max_train_steps:
            for batch in _batches(splits.train, splits, args, transform, shuffle=True, epoch=epoch):
                logits = model(pixel_values=batch["pixel_values"]).logits
                loss = F.cross_entropy(logits, batch[args.label_column])
                if not math.isfinite(loss.item()):
                    raise RuntimeError(f"the classifier loss is {loss.item()} at step {step}; lower --learning_rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.4f}")
                if step == args.max_train_steps:
                    break
            epoch += 1


@torch.no_grad()
def accuracy(model, splits, args, transform) -> tuple[float, int]:
    model.eval()
    correct = total = 0
    for batch in _batches(splits.eval, splits, args, transform, shuffle=False):
        correct += int((model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch[args.label_column]).sum())
        total += batch[args.label_column].numel()
    if total == 0:
        raise ValueError("the held-out split is empty: no accuracy can be measured")
    return correct / total, total


def main(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    data = DataArguments(dataset_name=args.dataset_name, train_data_dir=args.train_data_dir,
                         image_column=args.image_column, max_eval_samples=args.max_eval_samples)  # fmt: skip
    splits = load_image_splits(data, seed=args.seed)
    names = label_names(splits.train, args.label_column, splits.source)
    transform = ImageTransform(args.image_size, args.num_channels, (-1.0, 1.0))
    model = build_classifier(args.num_channels, names, tuple(args.hidden_sizes)).to(resolve_device(args.device))
    fit(model, splits, args, transform)
    test_accuracy, num_images = accuracy(model, splits, args, transform)
    output = Path(args.output_dir)
    model.cpu().save_pretrained(output)
    image_processor(args.image_size, args.num_channels).save_pretrained(output)
    metrics = {"test_accuracy": test_accuracy, "eval_images": num_images, "train_steps": args.max_train_steps,
               "dataset": splits.source, "num_labels": len(names)}  # fmt: skip
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"held-out accuracy {test_accuracy:.4f} on {num_images} images; saved to {output}")
    return metrics


if __name__ == "__main__":
    main(parse_args())
