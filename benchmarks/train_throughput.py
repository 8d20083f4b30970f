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

VQ-VAE-2 step options. The `imagenet256-paper` VQ-VAE-2 at `--vqvae2_resolution` (64) with batch
`--options_batch_size` (16), trained the same way under each option, timed side by side: after `--warmup`
untimed steps of each (the first compiled step compiles), `--repeats` rounds of one step of each option in turn, so
that every option meets the same machine load; the median per option gives images/s and its ratio to the baseline
row. Every option starts from the same weights, k-means codebooks and pixels, and its first loss must match the
baseline's (rel. 1e-3): the options change the speed, not the model. Rows (JSON ``vqvae2_step_<option>_img_s``
and ``vqvae2_step_<option>_over_eager``, details under ``step_options``):

* ``eager``: the baseline, eager float32 NCHW with AdamW's default on a CPU (its per-parameter for-loop);
* ``channels_last``: weights and pixels in channels-last layout (`model.to(memory_format=torch.channels_last)`);
* ``foreach_adamw``, ``fused_adamw``: AdamW with `foreach=True` / `fused=True` (one kernel for every parameter);
* ``channels_last_fused_adamw``: both;
* ``compiled``: `torch.compile` (inductor) of the model, so its forward and backward (inductor lays out the
  convolutions' activations channels-last by itself on a CPU with oneDNN);
* ``compiled_channels_last_fused_adamw``: all three (`scripts/train.py --torch_compile --channels_last`, plus the
  fused optimizer).

Convolution ceiling (`--convolution_ceiling`, JSON ``convolution_ceiling``): why the options cannot do more. The
eager baseline step is run `--repeats` times under `torch.profiler`; the time of its convolutions (the ops
``aten::convolution`` forward and ``aten::convolution_backward``, with everything they call, on the thread that calls
them) is set against the steps' wall time (both means over the same profiled steps), and their floating-point work
is counted once with `torch.utils.flop_counter.FlopCounterMode`. Two bounds follow:
``ceiling_if_only_convolutions`` = step / convolution time (every other op free: what layout, compilation and a
fused optimizer could at most win while the convolutions run as they do) and
``ceiling_if_convolutions_at_matmul_speed`` = step / (convolution FLOPs / ``matmul_gflop_s``), where
``matmul_gflop_s`` is a float32 2048x2048 matmul on the same threads (median of 10): the bound if, in addition, every
convolution ran as fast as a large matrix product.

The compiled rows need a C++ compiler and take minutes to compile; `--skip_compile` (implied by `--quick`) leaves
them null. `--keep_freed_memory` makes glibc keep freed heap memory for the whole run (`mallopt`: no trimming, no
mmap below 32 MB): by default a step page-faults its activations back in (about 8,000 minor faults per VQ-VAE-2
step at 64 px, batch 16, 2 threads; ~2 with the flag). It is process-wide, so compare two runs, with and without.

Targets (from the issues; printed as PASS or MISS, never enforced by an assert or the exit status):

* ``data_over_train_mnist`` = data_mnist_img_s / vqvae_mnist_img_s >= 3: the pipeline feeds the `mnist`
  VQ-VAE at least three times as fast as it trains, in one process on the same CPU.
* ``vqvae2_step_best_over_eager`` >= 1.25: the fastest option trains the VQ-VAE-2 at least 1.25x as fast as the
  eager float32 NCHW baseline.

Usage::

    .venv/bin/python benchmarks/train_throughput.py [--threads 2] [--batch_size 32] [--repeats 10] [--json out.json]
    .venv/bin/python benchmarks/train_throughput.py --quick   # smoke run: batch 4, 2 repeats, 64 data images
    .venv/bin/python benchmarks/train_throughput.py --only_step_options   # just the VQ-VAE-2 option rows
    .venv/bin/python benchmarks/train_throughput.py --only_step_options --skip_compile --convolution_ceiling
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
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
TARGET_STEP_OVER_EAGER = 1.25
# Other processes busy on average more than this many cores during the run: warn (2 torch threads on busy cores
# wait on each other at every parallel region, and a step can get many times slower).
BUSY_CORES = 0.25
QUICK = {"batch_size": 4, "repeats": 2, "warmup": 1, "data_images": 64, "options_batch_size": 4}


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


@dataclass
class StepOption:
    """One way to run the VQ-VAE-2 training step: `key` names its JSON keys (`vqvae2_step_<key>_img_s`)."""

    key: str
    channels_last: bool
    compiled: bool
    optimizer: str  # "for-loop" (AdamW's CPU default), "foreach" or "fused"
    note: str


STEP_OPTIONS = [  # the first is the baseline
    StepOption("eager", False, False, "for-loop", "baseline: eager float32 NCHW, AdamW's CPU default"),
    StepOption("channels_last", True, False, "for-loop", "weights and pixels channels-last"),
    StepOption("foreach_adamw", False, False, "foreach", "AdamW(foreach=True)"),
    StepOption("fused_adamw", False, False, "fused", "AdamW(fused=True)"),
    StepOption("channels_last_fused_adamw", True, False, "fused", "channels-last + fused AdamW"),
    StepOption("compiled", False, True, "for-loop", "torch.compile (inductor) forward + backward"),
    StepOption("compiled_channels_last_fused_adamw", True, True, "fused", "compiled + channels-last + fused AdamW"),
]


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
    parser.add_argument("--options_batch_size", type=int, default=16, help="batch of the VQ-VAE-2 step-option rows")
    parser.add_argument(
        "--skip_compile", action="store_true", help="leave out the compiled step options (they compile for minutes)"
    )
    parser.add_argument(
        "--keep_freed_memory",
        action="store_true",
        help="glibc keeps freed heap memory for the whole run (mallopt), so steps do not page-fault it back in",
    )
    parser.add_argument(
        "--only_step_options", action="store_true", help="time only the VQ-VAE-2 step options (no preset rows, no data)"
    )
    parser.add_argument(
        "--convolution_ceiling",
        action="store_true",
        help="also profile the eager VQ-VAE-2 step: its time and FLOPs in convolutions, and the speed-ups they bound",
    )
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
    sizes = (args.threads, args.batch_size, args.repeats, args.data_images, args.options_batch_size)
    if min(sizes) < 1 or args.warmup < 0:
        parser.error(
            "--threads, --batch_size, --repeats, --data_images and --options_batch_size must be >= 1, --warmup >= 0"
        )
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
        "options_batch_size": quick.get("options_batch_size", args.options_batch_size),
        "compile": not (args.skip_compile or args.quick),
        "keep_freed_memory": args.keep_freed_memory,
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
# VQ-VAE-2 step options
# ----------------------------------------------------------------------------------------------------------------


def make_option_step(option: StepOption, config: dict, pixels: torch.Tensor):
    """The training step of the VQ-VAE-2 under `option`: a function returning (seconds, loss), and the model."""
    torch.manual_seed(config["seed"])  # the same weights for every option
    resolution = config["vqvae2_resolution"]
    model = VQVAE2Model(VQVAE2Config.from_preset("imagenet256-paper", image_size=resolution)).train()
    if option.channels_last:
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    parameters = [p for p in model.parameters() if p.requires_grad]  # EMA codebooks are not trained by AdamW
    choice = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, **choice[option.optimizer])
    torch.manual_seed(config["seed"] + 1)  # the same k-means codebooks for every option
    model.initialize_codebooks(pixels)  # what an eager first step does itself; a compiled one cannot
    forward = torch.compile(model) if option.compiled else model

    def step() -> tuple[float, float]:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = forward(pixels).loss
        loss.backward()
        if config["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config["max_grad_norm"])
        optimizer.step()
        elapsed = time.perf_counter() - start
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"vqvae2 step option {option.key}: the loss is not finite ({value})")
        return elapsed, value

    return step, model


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Make glibc keep freed heap memory (no trimming; mmap only above 32 MB, its maximum threshold), for the whole
    process: a training step then reuses the pages of the last one instead of page-faulting fresh ones. Returns
    whether it took effect (False without glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def time_step_options(config: dict) -> dict[str, dict | None]:
    """Median seconds per step of every option, timed side by side (one step of each in turn per round)."""
    resolution, batch = config["vqvae2_resolution"], config["options_batch_size"]
    pixels = step_pixels(config)
    options = [o for o in STEP_OPTIONS if config["compile"] or not o.compiled]
    steps, details = {}, {}
    for option in options:
        step, model = make_option_step(option, config, pixels)
        first_seconds, first_loss = step()  # includes the compilation of a compiled option
        for _ in range(max(config["warmup"] - 1, 0)):
            step()
        steps[option.key] = step
        details[option.key] = {"first_step_s": first_seconds, "first_loss": first_loss,
                               "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    baseline_loss = details["eager"]["first_loss"]
    for key, detail in details.items():
        if abs(detail["first_loss"] - baseline_loss) > 1e-3 * abs(baseline_loss):
            raise RuntimeError(f"step option {key} gives the loss {detail['first_loss']} on the first step, not the "
                               f"baseline's {baseline_loss}: it changes the model, not only the speed")  # fmt: skip
    samples = {key: [] for key in steps}
    for _ in range(config["repeats"]):
        for key, step in steps.items():
            samples[key].append(step()[0])
    results: dict[str, dict | None] = {}
    for option in STEP_OPTIONS:
        if option.key not in samples:
            results[option.key] = None  # --skip_compile / --quick
            continue
        seconds = statistics.median(samples[option.key])
        results[option.key] = {
            **details[option.key],
            "channels_last": option.channels_last,
            "compiled": option.compiled,
            "optimizer": option.optimizer,
            "input_shape": [batch, 3, resolution, resolution],
            "median_step_ms": seconds * 1e3,
            "min_step_ms": min(samples[option.key]) * 1e3,
            "img_s": batch / seconds,
            "note": option.note,
        }
    baseline = results["eager"]["img_s"]
    for result in results.values():
        if result is not None:
            result["over_eager"] = result["img_s"] / baseline
    return results


CONVOLUTION_OPS = ("aten::convolution", "aten::convolution_backward")  # forward (any kind) and backward, not nested
MATMUL_SIZE = 2048


def step_pixels(config: dict) -> torch.Tensor:
    """The fixed batch every VQ-VAE-2 step option trains on."""
    resolution, batch = config["vqvae2_resolution"], config["options_batch_size"]
    generator = torch.Generator().manual_seed(config["seed"])
    return torch.rand((batch, 3, resolution, resolution), generator=generator) * 2 - 1


def convolution_ceiling(config: dict) -> dict:
    """The eager baseline step's time and FLOPs in convolutions, and the speed-ups they bound (module docstring)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    baseline = STEP_OPTIONS[0]  # eager float32 NCHW
    step, _ = make_option_step(baseline, config, step_pixels(config))
    for _ in range(max(config["warmup"], 1)):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_flop_counts()["Global"]
    convolution_flops = sum(count for op, count in flops.items() if "convolution" in str(op))
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        wall = [step()[0] for _ in range(config["repeats"])]
    events = profiler.key_averages()
    convolution_s = sum(event.cpu_time_total for event in events if event.key in CONVOLUTION_OPS) / 1e6
    convolution_s /= config["repeats"]  # per step, as step_s: both the mean over the same profiled steps
    step_s = statistics.fmean(wall)
    matmul = matmul_gflop_s()
    return {
        "step_ms": step_s * 1e3,
        "convolution_ms": convolution_s * 1e3,
        "convolution_share": convolution_s / step_s,
        "step_gflop": sum(flops.values()) / 1e9,
        "convolution_gflop": convolution_flops / 1e9,
        "convolution_gflop_s": convolution_flops / 1e9 / convolution_s,
        "matmul_gflop_s": matmul,
        "ceiling_if_only_convolutions": step_s / convolution_s,
        "ceiling_if_convolutions_at_matmul_speed": step_s / (convolution_flops / 1e9 / matmul),
        "note": "eager float32 NCHW step under torch.profiler (mean wall time of the profiled steps); "
        "convolution time = CPU time of aten::convolution and aten::convolution_backward per step",
    }


def matmul_gflop_s(size: int = MATMUL_SIZE, repeats: int = 10) -> float:
    """GFLOP/s of a float32 size x size matmul on this process's threads (median of `repeats`)."""
    left, right = torch.randn(size, size), torch.randn(size, size)
    left @ right
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        left @ right
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds) / 1e9


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
    """CPU time that other processes used during the run, from /proc/stat (Linux; None elsewhere).

    `count_children=True` counts this process's reaped children (e.g. DataLoader workers) as its own.
    """

    def __init__(self, count_children: bool = False):
        self.count_children = count_children
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(value) for value in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        times = os.times()
        own = times.user + times.system
        if self.count_children:
            own += times.children_user + times.children_system
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own

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


def summarize(
    training: dict[str, dict], data: dict | None, config: dict, watch: CpuWatch, step_options: dict | None = None
) -> dict:
    """The JSON document: `<row>_img_s`, `data_mnist_img_s`, the ratios, the targets, the details and the config."""
    results = {f"{key}_img_s": row["img_s"] for key, row in training.items()}
    step_options = step_options or {}
    for key, option in step_options.items():
        results[f"vqvae2_step_{key}_img_s"] = None if option is None else option["img_s"]
        results[f"vqvae2_step_{key}_over_eager"] = None if option is None else option["over_eager"]
    timed = [option["over_eager"] for option in step_options.values() if option is not None]
    results["vqvae2_step_best_over_eager"] = max(timed) if timed else None
    results["data_mnist_img_s"] = None if data is None else data["img_s"]
    data_mnist, train_mnist = results["data_mnist_img_s"], results.get("vqvae_mnist_img_s")
    ratio = None if data_mnist is None or not train_mnist else data_mnist / train_mnist
    results["data_over_train_mnist"] = ratio
    met = None if ratio is None else ratio >= TARGET_DATA_OVER_TRAIN
    best = results["vqvae2_step_best_over_eager"]
    results["targets"] = {
        f"data_over_train_mnist >= {TARGET_DATA_OVER_TRAIN:g}": met,
        f"vqvae2_step_best_over_eager >= {TARGET_STEP_OVER_EAGER:g}": (
            None if best is None else best >= TARGET_STEP_OVER_EAGER
        ),
    }
    results["training"] = training
    results["step_options"] = step_options
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
        if not config.get("only_step_options"):
            print(f"{'data_mnist':<36}{'-':>16}{'[-1,1]':>9}{'-':>11}{'-':>10}{'-':>10}  folder absent")
    else:
        per_batch_ms = data["seconds"] / data["images"] * config["batch_size"] * 1e3
        print(
            f"{'data_mnist':<36}{'x'.join(map(str, data['batch_shape'])):>16}{'[-1,1]':>9}{'-':>11}"
            f"{per_batch_ms:>10.1f}{data['img_s']:>10.1f}  streamed parquet, {data['images']} images "
            f"after {config['data_warmup_batches']} warm-up batches"
        )
    print_step_options(results["step_options"], config)
    print_convolution_ceiling(results.get("convolution_ceiling"))
    others = machine["other_processes_cores"]
    if others is not None and others > BUSY_CORES:
        print(
            f"warning: other processes kept {others:.2f} of {machine['cpu_count']} cores busy during this run; "
            f"{machine['threads']} torch threads on busy cores can be many times slower: rerun on a quiet machine"
        )
    print()
    ratio = results["data_over_train_mnist"]
    print(f"data_over_train_mnist = data_mnist / vqvae_mnist = {'-' if ratio is None else f'{ratio:.2f}x'}")
    best = results["vqvae2_step_best_over_eager"]
    print(f"vqvae2_step_best_over_eager = {'-' if best is None else f'{best:.2f}x'}")
    for target, met in results["targets"].items():
        print(f"{'SKIP' if met is None else 'PASS' if met else 'MISS'}  {target}")


def print_step_options(options: dict, config: dict) -> None:
    if not options:
        return
    print()
    print(
        f"VQ-VAE-2 imagenet256-paper at {config['vqvae2_resolution']}px, batch {config['options_batch_size']}: "
        f"training-step options side by side (one step of each in turn, median of {config['repeats']} rounds)"
        + ("; freed memory kept (--keep_freed_memory)" if config.get("keep_freed_memory") else "")
    )
    header = f"{'option':<38}{'ms/step':>10}{'img/s':>10}{'vs eager':>10}{'1st step s':>12}  note"
    print(header)
    print("-" * len(header))
    for key, option in options.items():
        if option is None:
            print(f"{key:<38}{'-':>10}{'-':>10}{'-':>10}{'-':>12}  skipped (--skip_compile or --quick)")
            continue
        print(
            f"{key:<38}{option['median_step_ms']:>10.1f}{option['img_s']:>10.1f}{option['over_eager']:>9.2f}x"
            f"{option['first_step_s']:>12.1f}  {option['note']}"
        )


def print_convolution_ceiling(ceiling: dict | None) -> None:
    if ceiling is None:
        return
    print()
    print("Convolution ceiling of the eager float32 NCHW step (--convolution_ceiling; under torch.profiler):")
    print(f"  step {ceiling['step_ms']:.1f} ms, of which convolutions (forward + backward) "
          f"{ceiling['convolution_ms']:.1f} ms ({ceiling['convolution_share']:.0%})")  # fmt: skip
    print(f"  convolutions: {ceiling['convolution_gflop']:.1f} of the step's {ceiling['step_gflop']:.1f} GFLOP, at "
          f"{ceiling['convolution_gflop_s']:.0f} GFLOP/s; a {MATMUL_SIZE}^3 float32 matmul: "
          f"{ceiling['matmul_gflop_s']:.0f} GFLOP/s")  # fmt: skip
    print(f"  best speed-up with the convolutions as they run (everything else free): "
          f"{ceiling['ceiling_if_only_convolutions']:.2f}x; with them at matmul speed too: "
          f"{ceiling['ceiling_if_convolutions_at_matmul_speed']:.2f}x")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> dict:
    watch = CpuWatch()
    config = make_config(args)
    config["only_step_options"] = args.only_step_options
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("--keep_freed_memory needs glibc (mallopt); this C library has none")
    torch.set_num_threads(config["threads"])
    rows = [] if args.only_step_options else rows_for(args)
    training = {row.key: time_training(row, config) for row in rows}
    step_options = time_step_options(config)
    data = None if args.only_step_options else time_data(config, profile=False)
    results = summarize(training, data, config, watch, step_options)
    if args.convolution_ceiling:
        results["convolution_ceiling"] = convolution_ceiling(config)
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
