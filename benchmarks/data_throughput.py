"""Data pipeline throughput with DataLoader workers: images/s at 256 px on photo-sized JPEGs, for 0, 1, 2 ... workers,
next to the images/s of a VQ-VAE-2 (`imagenet256-paper`) training step on the same machine.

Photos. Without `--folder`, `--photos` (default 400) distinct JPEGs are made once into `--photos_dir` (default
`outputs/benchmark_photos`) from the two 427x640 photos that ship inside scikit-learn
(`sklearn.datasets.load_sample_images()`: a temple in China, a flower): each is a random crop (50-100 % of each side) of
one of them, flipped at random, resized to a typical photo size (60 % 640x480, then 800x600, 1024x768, 480x640
portrait, 1280x960; `--photo_size WxH` makes them all that size, e.g. 4032x3024 for 12 MP phone photos) and saved
at JPEG quality 80-95. A folder given with `--folder` is read instead (any `imagefolder`).

Pipeline. The folder goes through the project's data module as training reads it: `load_image_splits` (an
`imagefolder`, not streamed), `ImageTransform(256, 3, center_crop=False, random_flip=True)` (decode, a JPEG at the
smallest of libjpeg's 1, 1/2, 1/4, 1/8 scales that covers 256 px, convert, resize the short side to 256 with
Pillow's bicubic filter computed by torch, random 256x256 crop, random flip) and `batches_for_rank(batch_size=16,
num_workers=N, pixels_as_uint8=True)` (DataLoader worker processes decoding chunks of 16 examples; assembling the
uint8 batches in this process; training scales them to [-1, 1] on its device, which this benchmark leaves out).
Each pass reads one epoch (`--images` images at most); after `--warmup_batches` untimed batches (worker start-up,
pipeline fill) the rest is timed: img/s = images / seconds. Passes run `--repeats` times, the worker counts
interleaved; the median is kept. `first_batch_s` is the time to the first batch (worker start-up included).
`--full_decode_row` adds a row ``0 full-size``: 0 workers with every JPEG decoded at full size, as the pipeline
did before its reduced-scale decoding, timed in the same interleaved rounds. `--before_row` adds ``0 before``: 0
workers with the pipeline as it was before torch resized the images (Pillow's bicubic resize and flip, float32 batches
scaled in the process), on the same photos and random draws.

Training step. `benchmarks/train_throughput.py`'s `time_training` (zero_grad, forward, backward, clip 1.0, AdamW) of
VQ-VAE-2 `imagenet256-paper` at 256x256x3, batch 16 (`--train_batch_size`), median of `--train_repeats` steps after
one warm-up step, with `--threads` torch threads (default: all cores). `--skip_train` leaves it out.

Target (printed as PASS or MISS, never enforced by the exit status): 2 workers give >= 1.8x the images/s of 0 workers.

Usage::

    .venv/bin/python benchmarks/data_throughput.py [--workers 0 1 2] [--repeats 3] [--json out.json]
    .venv/bin/python benchmarks/data_throughput.py --folder /path/to/photos --skip_train
    .venv/bin/python benchmarks/data_throughput.py --quick          # smoke run: 48 small photos, 1 repeat, no training step
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS_DIR = ROOT / "outputs" / "benchmark_photos"
PHOTO_SIZES = [(640, 480)] * 6 + [(800, 600), (1024, 768), (480, 640), (1280, 960)]  # (width, height)
TARGET_SPEEDUP = 1.8  # 2 workers over 0


def _train_throughput():
    """benchmarks/train_throughput.py as a module (its training-step timing and CPU watch are reused)."""
    spec = importlib.util.spec_from_file_location("train_throughput", Path(__file__).with_name("train_throughput.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------------
# Photos
# ----------------------------------------------------------------------------------------------------------------


def make_photos(folder: Path, count: int, seed: int = 0, sizes=PHOTO_SIZES) -> Path:
    """`count` distinct photo-sized JPEGs from scikit-learn's two sample photos (kept when already there)."""
    from sklearn.datasets import load_sample_images

    marker = folder / f".made-{count}-{seed}-{'-'.join(f'{w}x{h}' for w, h in sorted(set(sizes)))}"
    if marker.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    sources = [Image.fromarray(image) for image in load_sample_images().images]  # two 427x640 RGB photos
    rng = np.random.default_rng(seed)
    for index in range(count):
        source = sources[index % len(sources)]
        width, height = source.size
        crop_w, crop_h = (int(side * rng.uniform(0.5, 1.0)) for side in (width, height))
        left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        image = source.crop((left, top, left + crop_w, top + crop_h))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = image.resize(sizes[int(rng.integers(0, len(sizes)))], Image.Resampling.BICUBIC)
        image.save(folder / f"photo-{index:05d}.jpg", quality=int(rng.integers(80, 96)))
    marker.write_text("")
    return folder


def describe_folder(folder: Path) -> dict:
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if not files:
        raise SystemExit(f"{folder} holds no .jpg/.jpeg/.png/.webp image")
    sizes = []
    for path in files:
        with Image.open(path) as image:
            sizes.append(image.size)
    pixels = [width * height for width, height in sizes]
    median = sizes[int(np.argsort(pixels)[len(pixels) // 2])]
    return {"folder": str(folder), "files": len(files), "median_size": f"{median[0]}x{median[1]}",
            "median_kb": round(statistics.median(path.stat().st_size for path in files) / 1024, 1)}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------


@contextmanager
def full_size_jpeg_decode():
    """The pipeline without reduced-scale JPEG decoding (every JPEG decoded at its full size, then resized), for the
    `--full_decode_row` comparison. Workers are forked inside the block, so they see it too."""
    import hf_vqvae.data.pipeline as pipeline

    original = pipeline.decode_image
    pipeline.decode_image = lambda raw, max_pixels=pipeline.MAX_IMAGE_PIXELS, cover=None, mode=None: original(raw, max_pixels)
    try:
        yield
    finally:
        pipeline.decode_image = original


def pillow_transform(resolution: int):
    """The training transform as it was before torch resized the images (for `--before_row`): Pillow's bicubic resize
    and crop, Pillow's flip, the same random draws; its batches were float32, scaled in the training process."""
    from PIL import ImageOps

    from hf_vqvae.data import ImageTransform
    from hf_vqvae.data.pipeline import decode_image
    from hf_vqvae.image_processing import to_model_mode

    class PillowTransform(ImageTransform):
        def pixels(self, raw, rng):
            image = decode_image(raw, cover=(self.width, self.height), mode=self.mode)
            if image is None:
                return None
            image, (width, height) = to_model_mode(image, self.mode), image.size
            scale = max(self.height / height, self.width / width)
            width, height = max(self.width, round(width * scale)), max(self.height, round(height * scale))
            image = image.resize((width, height), Image.Resampling.BICUBIC)
            left, top = rng.randint(0, width - self.width), rng.randint(0, height - self.height)
            image = image.crop((left, top, left + self.width, top + self.height))
            if self.random_flip and rng.random() < 0.5:
                image = ImageOps.mirror(image)
            return np.asarray(image, dtype=np.uint8)

    return PillowTransform(resolution, 3, (-1.0, 1.0), center_crop=False, random_flip=True)


def time_pipeline(train, image_column: str, num_workers: int, config: dict, repeat: int, variant=None) -> dict:
    """One pass over `train` with `num_workers` workers: images/s after the warm-up batches. `variant`: None (the
    pipeline), "full_decode" (`--full_decode_row`) or "before" (`--before_row`)."""
    if variant == "full_decode":
        with full_size_jpeg_decode():
            return time_pipeline(train, image_column, num_workers, config, repeat)
    from hf_vqvae.data import BatchStats, ImageTransform, batches_for_rank

    if variant == "before":
        transform, as_uint8 = pillow_transform(config["resolution"]), False
    else:
        transform = ImageTransform(config["resolution"], 3, (-1.0, 1.0), center_crop=False, random_flip=True)
        as_uint8 = True
    key = "pixels" if as_uint8 else "pixel_values"
    stats = BatchStats()
    start = time.perf_counter()
    batches = batches_for_rank(train, image_column, transform, batch_size=config["batch_size"], seed=0, epoch=repeat,
                               stats=stats, num_workers=num_workers, pixels_as_uint8=as_uint8)  # fmt: skip
    warmup, images, first_batch, shape = config["warmup_batches"], 0, None, None
    timed_from = start if warmup == 0 else None  # the clock of the timed batches starts when the warm-up ends
    for index, batch in enumerate(batches):
        now = time.perf_counter()
        first_batch = now - start if first_batch is None else first_batch
        if index >= warmup:
            images += batch[key].shape[0]
        if index + 1 == warmup:
            timed_from = now
        shape = list(batch[key].shape)
        if index + 1 >= config["max_batches"]:
            break
    end = time.perf_counter()
    batches.close()  # shuts the workers down (not timed)
    if images == 0:
        raise SystemExit(f"no batch after the {warmup} warm-up batches: use more photos or a larger --images")
    return {"workers": num_workers, "img_s": images / (end - timed_from), "first_batch_s": first_batch,
            "pass_img_s": (images + warmup * config["batch_size"]) / (end - start), "skipped": stats.skipped,
            "batch_shape": shape}  # fmt: skip


def time_training_step(config: dict) -> dict:
    throughput = _train_throughput()
    from hf_vqvae import VQVAE2Config, VQVAE2Model

    row = throughput.Row(f"vqvae2_imagenet256-paper@{config['resolution']}", "VQ-VAE-2", "imagenet256-paper",
                         VQVAE2Config, VQVAE2Model, {"image_size": config["resolution"]}, (-1.0, 1.0), "")  # fmt: skip
    step_config = {"seed": 0, "batch_size": config["train_batch_size"], "warmup": 1,
                   "repeats": config["train_repeats"], "max_grad_norm": 1.0}  # fmt: skip
    return throughput.time_training(row, step_config)


# ----------------------------------------------------------------------------------------------------------------
# Command line and report
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--folder", help="a folder of images to read instead of the generated photos")
    parser.add_argument("--photos", type=int, default=400, help="photos to generate (without --folder)")
    parser.add_argument("--photos_dir", default=str(DEFAULT_PHOTOS_DIR), help="where the photos are generated")
    parser.add_argument("--photo_size", help="generate every photo at this WIDTHxHEIGHT (e.g. 4032x3024, a 12 MP "
                        "phone photo) instead of the mixture of typical sizes")  # fmt: skip
    parser.add_argument("--full_decode_row", action="store_true", help="also time 0 workers with every JPEG decoded "
                        "at full size (no reduced-scale decoding), the pipeline before that change")  # fmt: skip
    parser.add_argument("--before_row", action="store_true", help="also time 0 workers with the pipeline before "
                        "torch resized the images: Pillow's resize and flip, float32 batches made in this process")  # fmt: skip
    parser.add_argument("--workers", type=int, nargs="+", default=list(range(0, min(max(2, cores), 8) + 1)),
                        help="DataLoader worker counts to time")  # fmt: skip
    parser.add_argument("--resolution", type=int, default=256, help="training resolution (random square crops)")
    parser.add_argument("--batch_size", type=int, default=16, help="images per batch")
    parser.add_argument("--images", type=int, default=400, help="images read per pass at most (one epoch at most)")
    parser.add_argument("--warmup_batches", type=int, default=2, help="untimed batches at the start of each pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes per worker count (interleaved); median kept")
    parser.add_argument("--threads", type=int, default=cores, help="torch threads of the training step")
    parser.add_argument("--train_batch_size", type=int, default=16, help="batch of the timed training step")
    parser.add_argument("--train_repeats", type=int, default=3, help="timed training steps (after one warm-up)")
    parser.add_argument("--skip_train", action="store_true", help="do not time the training step")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 48 photos of 320x240 in a temporary folder, 1 repeat, no training step")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.photo_size is not None:
        try:
            args.photo_size = tuple(int(side) for side in args.photo_size.lower().split("x"))
        except ValueError:
            args.photo_size = ()
        if len(args.photo_size) != 2 or min(args.photo_size) < 1:
            parser.error("--photo_size takes WIDTHxHEIGHT, e.g. 4032x3024")
    if min(args.photos, args.resolution, args.batch_size, args.images, args.repeats, args.threads,
           args.train_batch_size, args.train_repeats) < 1 or args.warmup_batches < 0 or min(args.workers) < 0:  # fmt: skip
        parser.error("counts and sizes must be >= 1, --warmup_batches and --workers >= 0")
    return args


def main(args: argparse.Namespace) -> dict:
    if args.folder:
        return run(args, Path(args.folder))
    if args.quick:  # small photos in a temporary folder, removed afterwards
        with tempfile.TemporaryDirectory(prefix="photos-") as folder:
            return run(args, make_photos(Path(folder), 48, sizes=[(320, 240)]))
    sizes = PHOTO_SIZES if args.photo_size is None else [args.photo_size]
    return run(args, make_photos(Path(args.photos_dir), args.photos, sizes=sizes))


def run(args: argparse.Namespace, folder: Path) -> dict:
    throughput = _train_throughput()
    watch = _train_throughput().CpuWatch(count_children=True)  # the DataLoader workers are this run's own
    torch.set_num_threads(args.threads)
    from hf_vqvae.data import DataArguments, load_image_splits

    config = {
        "resolution": 64 if args.quick else args.resolution, "batch_size": args.batch_size,
        "warmup_batches": 1 if args.quick else args.warmup_batches, "repeats": 1 if args.quick else args.repeats,
        "max_batches": max(1, args.images // args.batch_size), "threads": args.threads,
        "train_batch_size": args.train_batch_size, "train_repeats": args.train_repeats,
        "transform": "decode + RGB + resize short side + random crop + random flip; uint8 batches (scaled on the device)",
    }  # fmt: skip
    splits = load_image_splits(DataArguments(train_data_dir=str(folder), eval_split="train"), seed=0)
    rows = [(str(workers), workers, None) for workers in args.workers]
    rows += [("0 full-size", 0, "full_decode")] if args.full_decode_row else []
    rows += [("0 before", 0, "before")] if args.before_row else []
    runs = {key: [] for key, _, _ in rows}
    for repeat in range(config["repeats"]):
        for key, workers, variant in rows:
            runs[key].append(time_pipeline(splits.train, splits.image_column, workers, config, repeat, variant))
    pipeline = {}
    for workers, passes in runs.items():
        rates = [run["img_s"] for run in passes if run["img_s"]]
        pipeline[workers] = {
            "img_s": statistics.median(rates) if rates else None, "best_img_s": max(rates, default=None),
            "passes_img_s": rates,
            "first_batch_s": statistics.median(run["first_batch_s"] for run in passes),
            "pass_img_s": statistics.median(run["pass_img_s"] for run in passes),
            "batch_shape": passes[-1]["batch_shape"], "skipped": passes[-1]["skipped"],
        }  # fmt: skip
    base = pipeline.get("0", {}).get("img_s")
    for row in pipeline.values():
        row["speedup"] = row["img_s"] / base if base and row["img_s"] else None
    train = None if args.skip_train or args.quick else time_training_step(config)
    two = pipeline.get("2", {}).get("speedup")
    results = {
        "data_img_s": {workers: row["img_s"] for workers, row in pipeline.items()},
        "speedup_2_workers": two,
        "train_vqvae2_imagenet256_img_s": None if train is None else train["img_s"],
        "targets": {f"speedup_2_workers >= {TARGET_SPEEDUP:g}": None if two is None else two >= TARGET_SPEEDUP},
        "pipeline": pipeline, "training": train, "photos": describe_folder(folder), "config": config,
        "machine": throughput.machine_facts(watch),
    }  # fmt: skip
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return results


def print_report(results: dict) -> None:
    photos, config, machine = results["photos"], results["config"], results["machine"]
    print(f"{photos['files']} images in {photos['folder']} (median {photos['median_size']}, {photos['median_kb']} KB); "
          f"{config['resolution']}x{config['resolution']} crops, batch {config['batch_size']}; "
          f"{machine['cpu_count']} CPUs, torch {machine['torch']}")  # fmt: skip
    header = (f"{'workers':>12}{'img/s':>10}{'x 0 workers':>13}{'best img/s':>12}{'first batch s':>15}"
              f"{'pass img/s':>12}  passes img/s")  # fmt: skip
    print(header)
    print("-" * len(header))
    for workers, row in results["pipeline"].items():
        rate = "-" if row["img_s"] is None else f"{row['img_s']:.1f}"
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        passes = ", ".join(f"{value:.0f}" for value in row["passes_img_s"])
        best = "-" if row["best_img_s"] is None else f"{row['best_img_s']:.1f}"
        print(f"{workers:>12}{rate:>10}{speedup:>13}{best:>12}{row['first_batch_s']:>15.2f}{row['pass_img_s']:>12.1f}"
              f"  {passes}")  # fmt: skip
    train = results["training"]
    if train is not None:
        print(f"VQ-VAE-2 imagenet256-paper training step, {'x'.join(map(str, train['input_shape']))}, "
              f"{machine['threads']} threads: {train['median_step_ms'] / 1e3:.2f} s/step = {train['img_s']:.1f} img/s "
              f"(median of {config['train_repeats']})")  # fmt: skip
    others = machine["other_processes_cores"]
    if others is not None and others > 0.25:
        print(f"warning: other processes kept {others:.2f} of {machine['cpu_count']} cores busy during this run: "
              "the figures are low and noisy; rerun on a quiet machine")  # fmt: skip
    for target, met in results["targets"].items():
        print(f"{'SKIP' if met is None else 'PASS' if met else 'MISS'}  {target}")


if __name__ == "__main__":
    main(parse_args())
