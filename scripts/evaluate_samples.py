#!/usr/bin/env python
"""Judge generated images against a real reference dataset with offline sample-quality metrics; print a table and
write JSON.

    python scripts/evaluate_samples.py outputs/samples-cifar10/pipeline-vqvae2 \\
        --features outputs/samples-cifar10/judge --reference ../shared/datasets/cifar10_jpeg \\
        --samples_per_class 100 --cas_steps 1000 --output_json samples_eval.json
    python scripts/evaluate_samples.py my_samples/ --features org/inception-classifier \\
        --reference ../shared/datasets/cifar10_jpeg

SAMPLES is one of:
- a saved `VQVAE2Pipeline` folder (it holds `model_index.json`): it generates --samples_per_class images per class
  when its top prior is class-conditional, else --num_samples images (--seed, --batch_size, --temperature);
  --save_samples DIR writes them as PNG files, one subfolder per class index, to be judged again later;
- a folder of image files (png, jpg, jpeg, webp): flat (unlabelled), or one subfolder per class named by its index
  ("0", "1", ...) or by a label of the feature network (its `config.label2id`). Every image must have the size of the
  reference images; it is converted to their channels (RGB or L).

The reference is --reference_split of --reference (a local folder laid out like a Hub dataset repo, or a Hub id),
all of it or --max_reference images drawn at random (seeded), read in [0, 1] at the samples' size. The metrics of
`hf_vqvae.evaluation.sample_quality` compare the two sets in the penultimate layer of the --features classifier:
Fréchet distance, KID (mean ± std over --kid_subsets subsets), precision and recall (k = --k). They are named after
that network ("FD (judge features)"): they are FID and friends only when it is Inception-v3.

--cas_steps N adds the Classification Accuracy Score (Ravuri & Vinyals 2019), for labelled samples: the small ResNet
of `train_classifier.build_classifier` (--cas_hidden_sizes) trained from scratch for N steps on the samples and, for
reference, on as many real images of --cas_train_split, both tested on the reference images.

The JSON goes to --output_json, by default SAMPLES/sample_quality.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_classifier  # noqa: E402

from hf_vqvae import VQVAE2Pipeline  # noqa: E402
from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits  # noqa: E402
from hf_vqvae.data.pipeline import BatchStats, decode_image  # noqa: E402
from hf_vqvae.evaluation import FeatureNetwork, classification_accuracy_score, compare, to_jsonable  # noqa: E402
from hf_vqvae.evaluation.sample_quality import DEFAULT_KID_SUBSET_SIZE, DEFAULT_KID_SUBSETS  # noqa: E402
from hf_vqvae.image_processing import to_model_mode  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
DEFAULT_JSON_NAME = "sample_quality.json"
PIPELINE_INDEX = "model_index.json"
GREY_MODES = ("1", "L", "LA", "I", "F")  # PIL modes read as one channel (and "I;16*")

logger = logging.getLogger("evaluate_samples")


# ---------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; argparse errors (exit code 2) for a missing or empty SAMPLES, bad numbers, and
    options that do not fit SAMPLES."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help="A saved VQVAE2Pipeline folder, or a folder of images (flat or per class).")
    parser.add_argument("--features", required=True, help="Image-classifier folder or Hub id: the feature network.")
    parser.add_argument("--reference", required=True, help="Reference dataset: a Hub-layout folder or a Hub id.")
    parser.add_argument("--reference_split", default="test", help="Split of the reference images.")
    parser.add_argument("--max_reference", type=int, default=None, help="At most this many reference images (all).")
    parser.add_argument("--label_column", default="label", help="The reference's label column (CAS only).")
    generation = parser.add_argument_group("generation (SAMPLES is a pipeline)")
    generation.add_argument("--samples_per_class", type=int, default=100, help="Images per class (conditional).")
    generation.add_argument("--num_samples", type=int, default=1000, help="Images of an unconditional pipeline.")
    generation.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature of the priors.")
    generation.add_argument("--save_samples", default=None, metavar="DIR", help="Write the samples as PNG files.")
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--k", type=int, default=3, help="Neighbour of precision and recall's radii.")
    metrics.add_argument("--kid_subsets", type=int, default=DEFAULT_KID_SUBSETS, help="KID: subsets averaged.")
    metrics.add_argument("--kid_subset_size", type=int, default=DEFAULT_KID_SUBSET_SIZE, help="KID: rows per subset.")
    cas = parser.add_argument_group("classification accuracy score")
    cas.add_argument("--cas_steps", type=int, default=0, help="Training steps of each CAS classifier (0: no CAS).")
    cas.add_argument("--cas_train_split", default="train", help="Split of the real images of the CAS reference row.")
    cas.add_argument("--cas_hidden_sizes", type=int, nargs=2, default=(64, 128), help="Channels of the two stages.")
    cas.add_argument("--cas_batch_size", type=int, default=128, help="CAS training batch size.")
    cas.add_argument("--cas_learning_rate", type=float, default=1e-3, help="CAS learning rate (AdamW).")
    run = parser.add_argument_group("run")
    run.add_argument("--batch_size", type=int, default=256, help="Images per batch (generation, features).")
    run.add_argument("--seed", type=int, default=0, help="Seed of generation, reference subset, KID and CAS.")
    run.add_argument("--device", default=None, help="Device (default: cuda when available, else cpu).")
    run.add_argument("--output_json", default=None, help=f"JSON path (default: SAMPLES/{DEFAULT_JSON_NAME}).")
    args = parser.parse_args(argv)
    _check_numbers(parser, args)
    _check_samples(parser, args)
    if args.output_json is None:
        args.output_json = os.path.join(args.samples, DEFAULT_JSON_NAME)
    return args


def _check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    minimums = {"samples_per_class": 1, "num_samples": 1, "batch_size": 1, "max_reference": 1, "k": 1,
                "kid_subsets": 1, "kid_subset_size": 2, "cas_steps": 0, "cas_batch_size": 1}  # fmt: skip
    for name, minimum in minimums.items():
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(f"--{name} must be >= {minimum}, got {value}")
    if min(args.cas_hidden_sizes) < 1:
        parser.error(f"--cas_hidden_sizes must be >= 1, got {list(args.cas_hidden_sizes)}")
    for name in ("temperature", "cas_learning_rate"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be > 0, got {getattr(args, name)}")


def _check_samples(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """SAMPLES exists and is a pipeline or holds >= 2 images; --save_samples and --cas_steps fit it."""
    folder = Path(args.samples)
    if not folder.exists():
        parser.error(f"SAMPLES {folder} does not exist; pass a VQVAE2Pipeline folder or a folder of images")
    if not folder.is_dir():
        parser.error(f"SAMPLES {folder} is a file; pass a VQVAE2Pipeline folder or a folder of images")
    if is_pipeline(folder):
        labelled = _pipeline_num_classes(parser, folder) > 0
    else:
        labelled = _check_image_folder(parser, folder)
        if args.save_samples:
            parser.error("--save_samples writes generated samples; SAMPLES is a folder of images, not a pipeline")
    if args.cas_steps and not labelled:
        parser.error(f"--cas_steps needs labelled samples, but those of {folder} are unlabelled (a flat folder or "
                     "an unconditional pipeline); put the images in one subfolder per class, or drop --cas_steps")


def _check_image_folder(parser: argparse.ArgumentParser, folder: Path) -> bool:
    """Errors for a folder without images, with one image, or mixing loose images and class subfolders; returns
    whether its images are labelled (in class subfolders)."""
    layout = image_layout(folder)
    count = sum(len(files) for files in layout.values())
    suffixes = ", ".join(suffix[1:] for suffix in IMAGE_SUFFIXES)
    if count == 0:
        parser.error(f"SAMPLES {folder} holds no image files ({suffixes}), neither directly nor in class subfolders")
    if count < 2:
        parser.error(f"SAMPLES {folder} holds 1 image; the metrics need at least 2 (and more than --k)")
    if None in layout and len(layout) > 1:
        parser.error(f"SAMPLES {folder} mixes loose images and class subfolders; put every image in a class "
                     "subfolder, or none")  # fmt: skip
    return None not in layout


def is_pipeline(folder: Path) -> bool:
    return (Path(folder) / PIPELINE_INDEX).is_file()


def _pipeline_num_classes(parser: argparse.ArgumentParser, folder: Path) -> int:
    """The classes of a saved pipeline's top prior, read from its config without loading any weights."""
    config = folder / "prior_level_0" / "config.json"
    if not config.is_file():
        parser.error(f"SAMPLES {folder} has a {PIPELINE_INDEX} but no prior_level_0/config.json; pass a folder "
                     "written by VQVAE2Pipeline.save_pretrained")  # fmt: skip
    return int(json.loads(config.read_text()).get("num_classes") or 0)


def image_layout(folder: Path) -> dict[str | None, list[Path]]:
    """The image files of a folder by class: `{None: files}` for loose images, `{subfolder name: files}` for each
    subfolder holding images (sorted by name); empty when there are none."""
    layout = {}
    loose = _image_files(folder)
    if loose:
        layout[None] = loose
    for subfolder in sorted(path for path in Path(folder).iterdir() if path.is_dir()):
        files = _image_files(subfolder)
        if files:
            layout[subfolder.name] = files
    return layout


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in Path(folder).iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


# ---------------------------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------------------------


def class_index(name: str, label2id: dict, folder: Path) -> int:
    """A class subfolder's index: its name as an integer ("3"), or the feature network's id of that label name."""
    if name.isdigit():
        return int(name)
    if name in label2id:
        return int(label2id[name])
    known = ", ".join(sorted(label2id, key=lambda label: int(label2id[label])))
    raise ValueError(f"class subfolder {name!r} of {folder} is neither a class index (0, 1, ...) nor a label of the "
                     f"feature network; its labels: {known}")  # fmt: skip


def read_image(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """One image file as uint8 (H, W, C) in `mode` ("RGB" or "L"); an error unless it is `size` (height, width)."""
    with Image.open(path) as image:
        if (image.height, image.width) != tuple(size):
            raise ValueError(f"{path} is {image.width}x{image.height} but the reference images are "
                             f"{size[1]}x{size[0]}; resize the samples to the reference's size")  # fmt: skip
        array = np.asarray(to_model_mode(image, mode), dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def load_image_folder(folder: Path, label2id: dict, size: tuple[int, int], channels: int):
    """A folder of images -> images in [0, 1] (N, C, H, W) and their labels (N,), or None when the folder is flat."""
    layout = image_layout(folder)
    paths = [path for files in layout.values() for path in files]
    labels = None
    if None not in layout:
        labels = torch.tensor([class_index(name, label2id, folder) for name, files in layout.items() for _ in files])
    logger.info("reading %d images from %s (%s)", len(paths), folder, "labelled" if labels is not None else "flat")
    mode = "RGB" if channels == 3 else "L"
    pixels = np.stack([read_image(path, size, mode) for path in paths])  # (N, H, W, C)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0, labels


@torch.no_grad()
def generate_samples(pipe: VQVAE2Pipeline, args: argparse.Namespace):
    """Samples of `pipe` in [0, 1] (N, C, H, W), `--samples_per_class` per class in class order when its priors are
    class-conditional (labels (N,)), else `--num_samples` of them (labels None)."""
    num_classes = pipe.prior_level_0.config.num_classes
    labels = [label for label in range(num_classes) for _ in range(args.samples_per_class)] if num_classes else None
    count = len(labels) if labels else args.num_samples
    logger.info("generating %d samples%s", count, f" ({args.samples_per_class} per class)" if labels else "")
    generator = torch.Generator(device=pipe.device).manual_seed(args.seed)
    images = []
    for start in range(0, count, args.batch_size):
        chunk = labels[start : start + args.batch_size] if labels else None
        size = len(chunk) if chunk else min(args.batch_size, count - start)
        output = pipe(size, class_labels=chunk, temperature=args.temperature, generator=generator, output_type="pt")
        images.append(output.images.float().cpu())
    return torch.cat(images), (torch.tensor(labels) if labels else None)


def save_samples(images: torch.Tensor, labels: torch.Tensor | None, folder: Path) -> None:
    """Images in [0, 1] (N, C, H, W) as PNG files: FOLDER/<class index>/<n>.png, or FOLDER/<n>.png when unlabelled."""
    pixels = (images.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()  # (N, H, W, C)
    for index, array in enumerate(pixels):
        target = Path(folder) / str(int(labels[index])) if labels is not None else Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(target / f"{index:06d}.png")
    logger.info("saved %d samples as PNG files under %s", len(pixels), folder)


def load_samples(args: argparse.Namespace, network: FeatureNetwork, reference_size, reference_channels, device):
    """The samples in [0, 1] (N, C, H, W) and their labels (or None): generated by a pipeline, or read."""
    if not is_pipeline(Path(args.samples)):
        label2id = dict(network.model.config.label2id or {})
        return load_image_folder(Path(args.samples), label2id, reference_size, reference_channels)
    pipe = VQVAE2Pipeline.from_pretrained(args.samples).to(device)
    pipe.set_progress_bar_config(disable=True)
    images, labels = generate_samples(pipe, args)
    if args.save_samples:
        save_samples(images, labels, Path(args.save_samples))
    return images, labels


# ---------------------------------------------------------------------------------------------------------------
# Reference images
# ---------------------------------------------------------------------------------------------------------------


def load_split(args: argparse.Namespace, split: str, count: int | None, seed: int):
    """The raw (undecoded) `split` of the reference dataset, `count` examples drawn at random (None: all), and the
    name of its image column."""
    data = DataArguments(dataset_name=args.reference, train_split=split, eval_split=split, max_train_samples=count,
                         max_eval_samples=count)  # fmt: skip
    splits = load_image_splits(data, seed=seed)
    return splits.eval, splits.image_column


def image_format(dataset, image_column: str) -> tuple[tuple[int, int], int]:
    """(height, width) and channels (1 or 3) of a split's first image: what every sample file must match."""
    image = decode_image(dataset[0][image_column])
    if image is None:
        raise ValueError(f"the first reference image cannot be decoded ({dataset[0][image_column]!r:.80})")
    grey = image.mode in GREY_MODES or image.mode.startswith("I;16")
    return (image.height, image.width), 1 if grey else 3


def read_split(dataset, image_column: str, transform: ImageTransform, args, label_column: str | None = None):
    """Every image of a raw split in [0, 1] (N, C, H, W), in file order, and its labels (N,) when `label_column`."""
    if label_column is not None and label_column not in (dataset.features or {}):
        raise ValueError(f"the reference has no label column {label_column!r} (columns: "
                         f"{', '.join(dataset.features or {})}); CAS needs labels: pass --label_column")  # fmt: skip
    stats, images, labels = BatchStats(), [], []
    columns = (label_column,) if label_column else ()
    for batch in batches_for_rank(dataset, image_column, transform, batch_size=args.batch_size, seed=args.seed,
                                  epoch=0, shuffle=False, drop_last=False, stats=stats, columns=columns):  # fmt: skip
        images.append(batch["pixel_values"])
        if label_column:
            labels.append(batch[label_column])
    if stats.skipped:
        logger.warning("skipped %d undecodable reference images", stats.skipped)
    if not images:
        raise ValueError(f"no reference image of {args.reference} could be decoded")
    return torch.cat(images), (torch.cat(labels) if label_column else None)


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def feature_metrics(network: FeatureNetwork, samples: torch.Tensor, reference: torch.Tensor, args) -> dict:
    """FD, KID, precision and recall of the samples against the reference, in the network's feature space."""
    logger.info("computing %s features of %d sample images", network.name, len(samples))
    sample_features = network.features(samples, batch_size=args.batch_size)
    logger.info("computing %s features of %d reference images", network.name, len(reference))
    reference_features = network.features(reference, batch_size=args.batch_size)
    return compare(reference_features, sample_features, k=args.k, kid_subsets=args.kid_subsets,
                   kid_subset_size=args.kid_subset_size, seed=args.seed)  # fmt: skip


def cas_scores(args, samples, labels, test_images, test_labels, transform: ImageTransform, names, device) -> dict:
    """CAS: the same small ResNet trained from scratch on the samples, and on as many real images of
    --cas_train_split, each tested on the reference images; top-1 accuracies in [0, 1]."""
    if int(labels.max()) >= len(names):
        raise ValueError(f"sample class {int(labels.max())} is out of range: the reference has {len(names)} classes")
    train_split, image_column = load_split(args, args.cas_train_split, len(samples), args.seed)
    real, real_labels = read_split(train_split, image_column, transform, args, args.label_column)

    def build():
        return train_classifier.build_classifier(samples.shape[1], names, tuple(args.cas_hidden_sizes)).to(device)

    settings = dict(build_model=build, steps=args.cas_steps, batch_size=args.cas_batch_size,
                    learning_rate=args.cas_learning_rate, seed=args.seed)  # fmt: skip
    logger.info("CAS: training on %d samples and on %d real images, %d steps each", len(samples), len(real),
                args.cas_steps)  # fmt: skip
    return {"steps": args.cas_steps, "train_images": len(samples), "real_train_images": len(real),
            "test_images": len(test_images),
            "samples": classification_accuracy_score(samples, labels, test_images, test_labels, **settings),
            "real": classification_accuracy_score(real, real_labels, test_images, test_labels, **settings)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace | list[str] | None = None) -> dict:
    """Judge the samples; print the table, write the JSON report and return it. `args` may also be an argv list."""
    if not isinstance(args, argparse.Namespace):
        args = parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    network = FeatureNetwork(args.features)
    network.model.to(device)
    reference_split, image_column = load_split(args, args.reference_split, args.max_reference, args.seed)
    samples, labels = load_samples(args, network, *image_format(reference_split, image_column), device)
    transform = ImageTransform(tuple(samples.shape[-2:]), samples.shape[1], value_range=(0.0, 1.0))
    label_column = args.label_column if args.cas_steps else None
    reference, reference_labels = read_split(reference_split, image_column, transform, args, label_column)
    scores = feature_metrics(network, samples, reference, args)
    cas = None
    if args.cas_steps:
        names = train_classifier.label_names(reference_split, args.label_column, args.reference)
        cas = cas_scores(args, samples, labels, reference, reference_labels, transform, names, device)
    report = build_report(args, network, samples, labels, len(reference), scores, cas)
    print(format_table(report))
    print(f"wrote {write_json(report, args.output_json)}")
    return report


def build_report(args, network: FeatureNetwork, samples, labels, num_reference: int, scores: dict, cas) -> dict:
    counts = None if labels is None else {str(label): n for label, n in sorted(Counter(labels.tolist()).items())}
    return to_jsonable({
        "samples": args.samples, "source": "pipeline" if is_pipeline(Path(args.samples)) else "image folder",
        "saved_samples": args.save_samples if is_pipeline(Path(args.samples)) else None,
        "num_samples": len(samples), "labelled": labels is not None, "class_counts": counts,
        "image_size": list(samples.shape[-2:]), "num_channels": samples.shape[1],
        "reference": args.reference, "reference_split": args.reference_split, "num_reference": num_reference,
        "features": args.features, "feature_network": network.name,
        "metric_labels": {name: network.metric_label(name) for name in ("FD", "KID", "precision", "recall")},
        "seed": args.seed, "k": args.k, "kid_subsets": args.kid_subsets, "kid_subset_size": args.kid_subset_size,
        "metrics": scores, "cas": cas,
    })  # fmt: skip


def format_table(report: dict) -> str:
    """The metrics, labelled with the feature network, the image counts and the CAS rows when run."""
    labels, metrics = report["metric_labels"], report["metrics"]
    rows = [("sample images", f"{report['num_samples']} ({'labelled' if report['labelled'] else 'unlabelled'})"),
            ("reference images", f"{report['num_reference']} ({report['reference_split']} split)"),
            (labels["FD"], f"{metrics['fd']:.4f}"),
            (labels["KID"], f"{metrics['kid_mean']:.5f} ± {metrics['kid_std']:.5f}"),
            (labels["precision"], f"{metrics['precision']:.4f}"),
            (labels["recall"], f"{metrics['recall']:.4f}")]  # fmt: skip
    if report["cas"]:
        cas = report["cas"]
        rows += [(f"CAS, trained on {cas['train_images']} samples", f"{cas['samples']:.4f}"),
                 (f"CAS, trained on {cas['real_train_images']} real images", f"{cas['real']:.4f}")]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines[:2], rule, *lines[2:], rule])


def write_json(report: dict, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        json.dump(report, file, indent=2)
        file.write("\n")
    return path


if __name__ == "__main__":
    try:
        main(parse_args())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
