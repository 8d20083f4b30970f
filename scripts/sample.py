#!/usr/bin/env python
"""Sample images from a VQ-VAE / VQ-VAE-2 and its priors and write a grid PNG.

    python scripts/sample.py --pipeline outputs/mnist-pipeline --num_images 16 --class_labels 0 1 2 3 --output grid.png
    python scripts/sample.py --vqvae outputs/vqvae-mnist --priors outputs/prior-mnist --num_images 16 --output grid.png

`--pipeline` reads a folder written by `VQVAE2Pipeline.save_pretrained`; `--vqvae` + `--priors` (top level first)
assemble one, and `--save_pipeline DIR` saves it.

Classifier-based rejection sampling (VQ-VAE-2 §3.3): with `--classifier DIR_OR_HUB_ID` (any transformers image
classifier, or one from `scripts/train_classifier.py`) and one class label, `--num_images` samples are drawn and
only those above `--threshold` (a probability), or the top `--keep_fraction` of them, go in the grid; the
acceptance rate is printed.

`--device` picks where the models run (default: cuda when available, else cpu); the images are written from the CPU.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from transformers import AutoModel

import hf_vqvae  # noqa: F401  (registers the Auto classes)
from hf_vqvae.devices import add_device_argument, resolve_device
from hf_vqvae.pipelines import ClassifierJudge, VQVAE2Pipeline, rejection_sample
from hf_vqvae.training.artifacts import image_grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pipeline", help="a saved VQVAE2Pipeline folder")
    source.add_argument("--vqvae", help="a saved VQ-VAE / VQ-VAE-2 folder or Hub id (with --priors)")
    parser.add_argument("--priors", nargs="+", default=[], help="saved prior folders, top level first")
    parser.add_argument("--num_images", type=int, default=16)
    parser.add_argument("--class_labels", type=int, nargs="*", default=None, help="one label, or one per image")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="samples.png", help="the grid PNG to write")
    parser.add_argument("--save_pipeline", default=None, help="also save the assembled pipeline here")
    parser.add_argument("--classifier", default=None, help="rejection sampling: an image classifier folder or Hub id")
    parser.add_argument("--threshold", type=float, default=None, help="keep samples with p(class) >= this")
    parser.add_argument("--keep_fraction", type=float, default=None, help="keep this top fraction of the samples")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.classifier:
        if args.class_labels is None or len(args.class_labels) != 1:
            parser.error("--classifier needs exactly one --class_labels value: the class to keep")
        if (args.threshold is None) == (args.keep_fraction is None):
            parser.error("--classifier needs exactly one of --threshold or --keep_fraction")
    elif args.threshold is not None or args.keep_fraction is not None:
        parser.error("--threshold/--keep_fraction need --classifier")
    if args.vqvae and not args.priors:
        parser.error("--vqvae needs --priors (one per level, top first)")
    if args.num_images < 1:
        parser.error("--num_images must be >= 1")
    return args


def load_pipeline(args: argparse.Namespace) -> VQVAE2Pipeline:
    if args.pipeline:
        return VQVAE2Pipeline.from_pretrained(args.pipeline)
    priors = {f"prior_level_{level}": AutoModel.from_pretrained(path) for level, path in enumerate(args.priors)}
    return VQVAE2Pipeline(vqvae=AutoModel.from_pretrained(args.vqvae), **priors)


def main(args: argparse.Namespace) -> Path:
    device = resolve_device(args.device)
    pipe = load_pipeline(args)
    if args.save_pipeline:
        pipe.save_pretrained(args.save_pipeline)
    pipe.to(device)
    labels = args.class_labels
    if labels and len(labels) == 1:
        labels = labels * args.num_images
    generator = torch.Generator(device=device).manual_seed(args.seed)  # the priors draw on their device
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, generator=generator)
    if args.classifier:
        images = _rejection_sample(pipe, args, sampling, device)
    else:
        images = pipe(args.num_images, class_labels=labels, **sampling).images
    if not images:
        raise SystemExit("no sample passed the classifier: lower --threshold or use --keep_fraction")
    columns = math.ceil(math.sqrt(len(images)))
    grid = image_grid([images[row : row + columns] for row in range(0, len(images), columns)])
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    print(f"wrote {output} ({len(images)} images)")
    return output


def _rejection_sample(pipe: VQVAE2Pipeline, args: argparse.Namespace, sampling: dict, device: torch.device) -> list:
    judge = ClassifierJudge.from_pretrained(args.classifier)
    judge.model.to(device)
    result = rejection_sample(pipe, judge, class_label=judge.label_id(args.class_labels[0]), num_samples=args.num_images,
                              threshold=args.threshold, keep_fraction=args.keep_fraction, **sampling)  # fmt: skip
    print(f"rejection sampling: kept {int(result['kept'].sum())} of {args.num_images} "
          f"(acceptance rate {result['acceptance_rate']:.3f})")  # fmt: skip
    return pipe.numpy_to_pil(result["images"].permute(0, 2, 3, 1).numpy())


if __name__ == "__main__":
    main(parse_args())
