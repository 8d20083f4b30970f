"""Training throughput on the CPU: images/s of one training step per preset family, and of the data pipeline alone.

Training step. Each model is built from its preset (`XConfig.from_preset(name, **overrides)`), put in train()
mode and trained on one fixed batch (`--batch_size`, default 32) of random pixels in the model's range: [-1, 1]
for the VQ models, [0, 1] for the VAE (its Bernoulli and Gaussian decoders model intensities). A step is what
the training loop does per batch: `zero_grad`, forward (`.loss`), backward, gradient clipping to
`--max_grad_norm` (the training default, 1.0; 0 disables it) and one AdamW step (lr 2e-4, the training default).
After `--warmup` untimed steps, the median over `--repeats` timed steps gives images/s = batch / median seconds.
Rows (JSON key, resolution):

* ``vqvae_mnist_img_s``: VQ-VAE `mnist`, 28x28x1 (as the preset);
* ``vqvae_cifar10-paper_img_s``: VQ-VAE `cifar10-paper`, 32x32x3 (as the preset);
* ``vqvae_cifar10_img_s``, ``vqvae2_cifar10_img_s``: VQ-VAE and VQ-VAE-2 `cifar10` (Sonnet's size), 32x32x3;
* ``vqvae2_cifar10-16x16_img_s``: VQ-VAE-2 `cifar10` with `level_downsamples=[1, 1]` (8x8 top, 16x16 bottom codes),
  the level sizes the preset does not take;
* ``vqvae2_imagenet256-paper@64_img_s``: VQ-VAE-2 `imagenet256-paper` at a reduced resolution,
  `--vqvae2_resolution` (default 64, so 64x64x3 images, 16x16 bottom and 8x8 top codes); the model is fully
  convolutional, only `image_size` is overridden, the widths and depths are the preset's. The key names the
  resolution used;
* ``vae_mnist-paper_img_s``: VAE `mnist-paper`, 28x28x1 (as the preset);
* ``vae_frey-paper_img_s``: VAE `frey-paper`, 28x20x1 (as the preset).

Data pipeline. The streamed MNIST parquet folder (`--data_dir`, default `../shared/datasets/mnist` relative to
the repository root) goes through the project's data module exactly as training uses it:
`load_image_splits(DataArguments(dataset_name=..., streaming=True))`, `ImageTransform(28, 1, (-1, 1))` and
`batches_for_rank(..., shuffle_buffer_size=1000)` (parquet read, shuffle buffer, PNG decode, convert, scale,
collate). The first `--data_warmup_batches` batches (default 2, which fill the shuffle buffer) are untimed; then
`--data_images` images (default 4096) are timed: ``data_mnist_img_s`` = images / seconds. Only the iteration
of the batches consumed is timed, not the generator's teardown (`datasets` sleeps
`datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN`, 5 s, when a shuffled stream's reader threads close). When
the folder is absent, a note is printed and the figure is null.

Target (from the issue; printed as PASS or MISS, never enforced by an assert or the exit status):

* ``data_over_train_mnist`` = data_mnist_img_s / vqvae_mnist_img_s >= 3: the pipeline feeds the `mnist`
  VQ-VAE at least three times as fast as it trains, in one process on the same CPU.

Usage::

    .venv/bin/python benchmarks/train_throughput.py [--threads 2] [--batch_size 32] [--repeats 10] [--json out.json]
    .venv/bin/python benchmarks/train_throughput.py --quick   # smoke run: batch 4, 2 repeats, 64 data images
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata
import io
import json
import math
import os
import platform
import pstats
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_vqvae import VAEConfig, VAEModel, VQVAE2Config, VQVAE2Model, VQVAEConfig, VQVAEModel

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "datasets" / "mnist"
LEARNING_RATE = 2e-4  # TrainArguments.learning_rate's default
TARGET_DATA_OVER_TRAIN = 3.0
# Other processes busy on average more than this many cores during the run: warn (2 torch threads on busy cores
# wait on each other at every parallel region, and a step can get many times slower).
BUSY_CORES = 0.25
QUICK = {"batch_size": 4, "repeats": 2, "warmup": 1, "data_images": 64}


@dataclass
class Row:
    """One preset to time: `key` is its JSON key without `_img_s`."""

    key: str
    family: str
    preset: str
    config_class: type
    model_class: type
    overrides: dict
    value_range: tuple[float, float]
    note: str = ""


def rows_for(args: argparse.Namespace) -> list[Row]:
    resolution = args.vqvae2_resolution
    return [
        Row("vqvae_mnist", "VQ-VAE", "mnist", VQVAEConfig, VQVAEModel, {}, (-1.0, 1.0), "preset size"),
        Row("vqvae_cifar10-paper", "VQ-VAE", "cifar10-paper", VQVAEConfig, VQVAEModel, {}, (-1.0, 1.0), "preset size"),
        Row("vqvae_cifar10", "VQ-VAE", "cifar10", VQVAEConfig, VQVAEModel, {}, (-1.0, 1.0), "preset size"),
        Row("vqvae2_cifar10", "VQ-VAE-2", "cifar10", VQVAE2Config, VQVAE2Model, {}, (-1.0, 1.0), "preset: 4x4 + 8x8"),
        Row(
            "vqvae2_cifar10-16x16", "VQ-VAE-2", "cifar10", VQVAE2Config, VQVAE2Model, {"level_downsamples": [1, 1]},
            (-1.0, 1.0), "levels 8x8 + 16x16 instead",
        ),  # fmt: skip
        Row(
            f"vqvae2_imagenet256-paper@{resolution}", "VQ-VAE-2", "imagenet256-paper", VQVAE2Config, VQVAE2Model,
            {"image_size": resolution}, (-1.0, 1.0), "reduced from 256 (fully convolutional)",
        ),  # fmt: skip
        Row("vae_mnist-paper", "VAE", "mnist-paper", VAEConfig, VAEModel, {}, (0.0, 1.0), "preset size"),
        Row("vae_frey-paper", "VAE", "frey-paper", VAEConfig, VAEModel, {}, (0.0, 1.0), "preset size"),
    ]


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Images/s of one training step (forward, backward, clipping, AdamW) of each preset family at a fixed "
            "batch of random pixels, and of the streamed MNIST data pipeline alone; prints a table and whether "
            f"the pipeline is >= {TARGET_DATA_OVER_TRAIN:g}x as fast as the `mnist` VQ-VAE trains."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the whole run")
    parser.add_argument("--batch_size", type=int, default=32, help="images per training step and per data batch")
    parser.add_argument("--repeats", type=int, default=10, help="timed training steps per model; the median is kept")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps per model before the timed ones")
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping of each step (0: none)")
    parser.add_argument("--vqvae2_resolution", type=int, default=64, help="image size of the VQ-VAE-2 row (of 256)")
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR), help="the MNIST folder (parquet, Hub layout)")
    parser.add_argument("--data_images", type=int, default=4096, help="images timed through the data pipeline")
    parser.add_argument("--data_warmup_batches", type=int, default=2, help="untimed batches (fill the shuffle buffer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the random pixels")
    parser.add_argument(
        "--profile_data",
        action="store_true",
        help="also run the timed data iteration under cProfile and print the top functions (slower; not the figure)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: batch {QUICK['batch_size']}, {QUICK['repeats']} repeats, {QUICK['warmup']} warm-up, "
        f"{QUICK['data_images']} data images",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if min(args.threads, args.batch_size, args.repeats, args.data_images) < 1 or args.warmup < 0:
        parser.error("--threads, --batch_size, --repeats and --data_images must be >= 1, --warmup >= 0")
    if args.data_warmup_batches < 0 or args.max_grad_norm < 0:
        parser.error("--data_warmup_batches and --max_grad_norm must be >= 0")
    if args.vqvae2_resolution < 8 or args.vqvae2_resolution % 8:
        parser.error("--vqvae2_resolution must be a multiple of 8 (2**3 stride-2 stages of imagenet256-paper)")
    return args


def make_config(args: argparse.Namespace) -> dict:
    quick = QUICK if args.quick else {}
    return {
        "threads": args.threads,
        "batch_size": quick.get("batch_size", args.batch_size),
        "repeats": quick.get("repeats", args.repeats),
        "warmup": quick.get("warmup", args.warmup),
        "max_grad_norm": args.max_grad_norm,
        "learning_rate": LEARNING_RATE,
        "optimizer": "AdamW",
        "vqvae2_resolution": args.vqvae2_resolution,
        "data_dir": str(Path(args.data_dir).resolve()),
        "data_images": quick.get("data_images", args.data_images),
        "data_warmup_batches": args.data_warmup_batches,
        "data_shuffle_buffer_size": 1000,
        "seed": args.seed,
        "quick": args.quick,
        "step": "zero_grad; loss = model(pixels).loss; loss.backward(); clip_grad_norm_; AdamW.step()",
    }


# ----------------------------------------------------------------------------------------------------------------
# Training step
# ----------------------------------------------------------------------------------------------------------------


def time_training(row: Row, config: dict) -> dict:
    """Median seconds of one training step of `row`'s model on a fixed random batch, and what was timed."""
    torch.manual_seed(config["seed"])
    model = row.model_class(row.config_class.from_preset(row.preset, **row.overrides)).train()
    image_size = model.config.image_size
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    shape = (config["batch_size"], model.config.num_channels, height, width)
    low, high = row.value_range
    pixels = torch.rand(shape) * (high - low) + low
    parameters = [p for p in model.parameters() if p.requires_grad]  # EMA codebooks are not trained by AdamW
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(pixels).loss
        loss.backward()
        if config["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config["max_grad_norm"])
        optimizer.step()
        elapsed = time.perf_counter() - start
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"{row.key}: the loss is not finite ({loss.item()})")
        return elapsed

    for _ in range(config["warmup"]):
        step()
    samples = [step() for _ in range(config["repeats"])]
    seconds = statistics.median(samples)
    return {
        "family": row.family,
        "preset": row.preset,
        "overrides": dict(row.overrides),
        "input_shape": list(shape),
        "value_range": list(row.value_range),
        "parameters": sum(p.numel() for p in model.parameters()),
        "median_step_ms": seconds * 1e3,
        "min_step_ms": min(samples) * 1e3,
        "img_s": config["batch_size"] / seconds,
        "note": row.note,
    }


# ----------------------------------------------------------------------------------------------------------------
# Data pipeline
# ----------------------------------------------------------------------------------------------------------------


def time_data(config: dict, profile: bool = False) -> dict | None:
    """Images/s of the streamed MNIST pipeline (None when the folder is absent); `profile` adds cProfile stats."""
    data_dir = Path(config["data_dir"])
    if not data_dir.is_dir():
        print(f"note: {data_dir} is absent: the data pipeline is not timed (data_mnist_img_s = null)")
        return None
    from hf_vqvae.data import BatchStats, DataArguments, ImageTransform, batches_for_rank, load_image_splits

    batch_size = config["batch_size"]
    splits = load_image_splits(DataArguments(dataset_name=str(data_dir), streaming=True), seed=0)
    transform = ImageTransform(28, 1, (-1.0, 1.0))
    stats = BatchStats()
    batches = batches_for_rank(
        splits.train, splits.image_column, transform, batch_size=batch_size, seed=0, epoch=0,
        shuffle_buffer_size=config["data_shuffle_buffer_size"], stats=stats,
    )  # fmt: skip
    wanted = math.ceil(config["data_images"] / batch_size)
    profiler = cProfile.Profile() if profile else None
    try:
        for _ in range(config["data_warmup_batches"]):
            next(batches)
        images, shape = 0, None
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        for _, batch in zip(range(wanted), batches):
            images += batch["pixel_values"].shape[0]
            shape = list(batch["pixel_values"].shape)
        seconds = time.perf_counter() - start  # before the generator's teardown (its 5 s sleep)
        if profiler is not None:
            profiler.disable()
    finally:
        batches.close()
    if images == 0:
        raise RuntimeError(f"{data_dir}: no batch came out of the pipeline after the warm-up")
    result = {
        "data_dir": str(data_dir),
        "images": images,
        "seconds": seconds,
        "batch_shape": shape,
        "skipped": stats.skipped,
        "img_s": images / seconds,
    }
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        result["profile"] = text.getvalue()
    return result


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class CpuWatch:
    """CPU time that other processes used during the run, from /proc/stat (Linux; None elsewhere)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(value) for value in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        times = os.times()
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), times.user + times.system

    def other_cores(self) -> float | None:
        """Average number of cores other processes kept busy since the start."""
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return round(max(0.0, others) / (end[0] - self.start[0]), 3)


def machine_facts(watch: CpuWatch) -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "datasets": package_version("datasets"),
        "pillow": package_version("pillow"),
        "pyarrow": package_version("pyarrow"),
        "other_processes_cores": watch.other_cores(),  # cores other processes kept busy, on average, meanwhile
    }


def summarize(training: dict[str, dict], data: dict | None, config: dict, watch: CpuWatch) -> dict:
    """The JSON document: `<row>_img_s`, `data_mnist_img_s`, the ratio, the target, the details and the config."""
    results = {f"{key}_img_s": row["img_s"] for key, row in training.items()}
    results["data_mnist_img_s"] = None if data is None else data["img_s"]
    data_mnist, train_mnist = results["data_mnist_img_s"], results.get("vqvae_mnist_img_s")
    ratio = None if data_mnist is None or not train_mnist else data_mnist / train_mnist
    results["data_over_train_mnist"] = ratio
    met = None if ratio is None else ratio >= TARGET_DATA_OVER_TRAIN
    results["targets"] = {f"data_over_train_mnist >= {TARGET_DATA_OVER_TRAIN:g}": met}
    results["training"] = training
    results["data"] = None if data is None else {k: v for k, v in data.items() if k != "profile"}
    results["config"] = config
    results["machine"] = machine_facts(watch)
    return results


def print_report(results: dict) -> None:
    config, machine = results["config"], results["machine"]
    print(
        f"torch {machine['torch']}, {machine['threads']} threads (of {machine['cpu_count']} CPUs), "
        f"{machine['machine']}, python {machine['python']}"
    )
    print(
        f"training step = zero_grad + forward + backward + clip({config['max_grad_norm']:g}) + AdamW, train() mode, "
        f"batch {config['batch_size']} of random pixels; median of {config['repeats']} "
        f"(after {config['warmup']} warm-up)"
    )
    header = f"{'key':<36}{'input B,C,H,W':>16}{'range':>9}{'params':>11}{'ms/step':>10}{'img/s':>10}  note"
    print(header)
    print("-" * len(header))
    for key, row in results["training"].items():
        low, high = row["value_range"]
        print(
            f"{key:<36}{'x'.join(map(str, row['input_shape'])):>16}{f'[{low:g},{high:g}]':>9}"
            f"{row['parameters'] / 1e6:>10.2f}M{row['median_step_ms']:>10.1f}{row['img_s']:>10.1f}  {row['note']}"
        )
    data = results["data"]
    if data is None:
        print(f"{'data_mnist':<36}{'-':>16}{'[-1,1]':>9}{'-':>11}{'-':>10}{'-':>10}  folder absent")
    else:
        per_batch_ms = data["seconds"] / data["images"] * config["batch_size"] * 1e3
        print(
            f"{'data_mnist':<36}{'x'.join(map(str, data['batch_shape'])):>16}{'[-1,1]':>9}{'-':>11}"
            f"{per_batch_ms:>10.1f}{data['img_s']:>10.1f}  streamed parquet, {data['images']} images "
            f"after {config['data_warmup_batches']} warm-up batches"
        )
    others = machine["other_processes_cores"]
    if others is not None and others > BUSY_CORES:
        print(
            f"warning: other processes kept {others:.2f} of {machine['cpu_count']} cores busy during this run; "
            f"{machine['threads']} torch threads on busy cores can be many times slower: rerun on a quiet machine"
        )
    print()
    ratio = results["data_over_train_mnist"]
    print(f"data_over_train_mnist = data_mnist / vqvae_mnist = {'-' if ratio is None else f'{ratio:.2f}x'}")
    for target, met in results["targets"].items():
        print(f"{'SKIP' if met is None else 'PASS' if met else 'MISS'}  {target}")


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> dict:
    watch = CpuWatch()
    config = make_config(args)
    torch.set_num_threads(config["threads"])
    training = {row.key: time_training(row, config) for row in rows_for(args)}
    data = time_data(config, profile=False)
    results = summarize(training, data, config, watch)
    print_report(results)
    if args.profile_data:
        profiled = time_data(config, profile=True)
        if profiled is not None:
            print(f"\ncProfile of the timed data iteration ({profiled['images']} images, tottime order):")
            print(profiled["profile"])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main(parse_args())
