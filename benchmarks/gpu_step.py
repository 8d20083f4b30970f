"""Training step of the VQ-VAE-2 on a GPU: images/s of one step under float32 / bfloat16, eager / compiled.

Model. `VQVAE2Model(VQVAE2Config.from_preset("imagenet256-paper", image_size=--resolution))` (default 256, the
preset's own size: 64x64 bottom and 32x32 top codes), in train() mode on `--device` (default "cuda" when
available, else "cpu"), trained on one fixed batch (`--batch_size`, default 32) of random pixels in [-1, 1]
(seeded generator on the CPU, then moved). Every row builds its model fresh from the same seed on the CPU and
moves it to the device, and k-means-initialises its codebooks on that batch in float32 (no autocast) before any
compile (`model.initialize_codebooks`, as `scripts/train.py --torch_compile` does): the same weights, codebooks and
pixels for every row.

Step. What the training loop does per batch: `optimizer.zero_grad(set_to_none=True)`;
`loss = model(pixels).loss` (inside `torch.autocast(device_type, dtype=torch.bfloat16)` for the bf16 rows; the
quantizers compute in float32 anyway); `loss.backward()`; `clip_grad_norm_(params, 1.0)`; `AdamW(lr=2e-4)`
(`fused=True` on CUDA) `.step()`, over the parameters with `requires_grad` (the EMA codebooks are buffers). On
CUDA each timed step sits between two `torch.cuda.synchronize()`. The first step is timed on its own
(``first_step_s``, which includes the compilation of a compiled row); it and the other `--warmup` - 1 steps
(default 5 in all) are untimed; then `--repeats` timed steps (default 30): the median gives images/s =
batch / median seconds, with the minimum and the ratio to the ``fp32_eager`` row. On CUDA the peak of
`torch.cuda.max_memory_allocated` (reset before each row is built) is recorded. Each row's model, optimizer and
compiled graphs are freed before the next is built. Should fused AdamW refuse a compiled row's gradients (weight
gradients in another layout than their parameters, pytorch/pytorch#126585), that row copies them to their
parameters' layout at every step from then on and retries the step (``grad_relayout``: true; the copies are timed).

Rows (`--options`, a comma-separated subset; always run in this order):

* ``fp32_eager``: the baseline, eager float32 NCHW;
* ``bf16_eager``: bfloat16 autocast;
* ``bf16_compiled``: bfloat16 autocast, `torch.compile` (inductor, `--compile_mode`) of the model;
* ``bf16_compiled_channels_last``: the same with the weights and pixels in channels-last layout;
* ``fp32_compiled``: float32, compiled.

Check. The first loss of every row must be finite and within a relative 5e-2 of ``fp32_eager``'s (bfloat16 moves
the numerics a little; it must not change the model). A miss prints a warning and is recorded (``loss_ok``),
it does not stop the run.

Robustness. Each row runs on its own: an exception is printed with its traceback and recorded as the row's
``error``, and the next row runs. Progress lines are flushed as each row starts and ends, and `--json` is
rewritten after every row (``status``: running, complete or interrupted); SIGTERM (e.g. from `timeout`)
stops the row under way, and the table and JSON are still written.

Usage::

    .venv/bin/python benchmarks/gpu_step.py --json gpu_step.json
    .venv/bin/python benchmarks/gpu_step.py --options fp32_eager,bf16_compiled --repeats 50 --json out.json
    .venv/bin/python benchmarks/gpu_step.py --quick   # CPU smoke run: 32 px, batch 2, fp32/bf16 eager, seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_vqvae import VQVAE2Config, VQVAE2Model

LEARNING_RATE = 2e-4  # TrainArguments.learning_rate's default
MAX_GRAD_NORM = 1.0  # TrainArguments.max_grad_norm's default
LOSS_RTOL = 5e-2  # first loss of a row against fp32_eager's
BASELINE = "fp32_eager"
DEFAULTS = {"resolution": 256, "batch_size": 32, "warmup": 5, "repeats": 30}
QUICK = {"resolution": 32, "batch_size": 2, "warmup": 1, "repeats": 2, "device": "cpu",
         "options": "fp32_eager,bf16_eager"}  # fmt: skip


@dataclass
class Option:
    """One way to run the training step (a row)."""

    key: str
    bf16: bool
    compiled: bool
    channels_last: bool
    note: str


OPTIONS = [
    Option("fp32_eager", False, False, False, "baseline: eager float32 NCHW"),
    Option("bf16_eager", True, False, False, "bfloat16 autocast"),
    Option("bf16_compiled", True, True, False, "bfloat16 autocast + torch.compile"),
    Option("bf16_compiled_channels_last", True, True, True, "bfloat16 + compile + channels-last"),
    Option("fp32_compiled", False, True, False, "float32 + torch.compile"),
]


def log(message: str) -> None:
    print(f"[gpu_step {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Images/s of one VQ-VAE-2 (imagenet256-paper) training step on a GPU, float32 / bfloat16, "
        "eager / torch.compile; prints a table and optionally writes JSON.",
    )
    keys = ", ".join(option.key for option in OPTIONS)
    parser.add_argument("--options", help=f"comma-separated rows to run (default: all of {keys})")
    parser.add_argument("--device", help='torch device (default "cuda" when available, else "cpu")')
    parser.add_argument("--resolution", type=int, help=f"image size (default {DEFAULTS['resolution']})")
    parser.add_argument("--batch_size", type=int, help=f"images per step (default {DEFAULTS['batch_size']})")
    parser.add_argument("--warmup", type=int, help=f"untimed steps, the first included (default {DEFAULTS['warmup']})")
    parser.add_argument("--repeats", type=int, help=f"timed steps; the median is kept (default {DEFAULTS['repeats']})")
    parser.add_argument("--compile_mode", default=None, help="torch.compile mode (default: inductor's default)")
    parser.add_argument("--cudnn_benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, codebooks and pixels")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: 32 px, batch 2, 1 warm-up, 2 repeats, "
                        "fp32_eager and bf16_eager (explicit flags still win)")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="write the config and rows here (after every row)")
    args = parser.parse_args(argv)
    resolve_defaults(args)
    unknown = [key for key in args.options if key not in {option.key for option in OPTIONS}]
    if unknown:
        parser.error(f"unknown option(s) {', '.join(unknown)}; known: {keys}")
    if min(args.batch_size, args.warmup, args.repeats) < 1:
        parser.error("--batch_size, --warmup and --repeats must be >= 1")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available in this torch ({torch.__version__})")
    if args.resolution < 8 or args.resolution % 8:
        parser.error("--resolution must be a multiple of 8 (2**3 stride-2 stages of imagenet256-paper)")
    return args


def resolve_defaults(args: argparse.Namespace) -> None:
    """An explicit flag wins, then --quick's value, then the default."""
    quick = QUICK if args.quick else {}
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick.get(name, default))
    if args.device is None:
        args.device = quick.get("device", "cuda" if torch.cuda.is_available() else "cpu")
    names = args.options or quick.get("options") or ",".join(option.key for option in OPTIONS)
    args.options = [name.strip() for name in names.split(",") if name.strip()]


def attempt(getter):
    """`getter()`, or None when it raises (a fact for the record must never stop the run)."""
    try:
        return getter()
    except Exception:  # noqa: BLE001
        return None


def make_config(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    cpu_name = platform.processor() or platform.machine() or "cpu"
    return {
        "device": str(device),
        "device_name": attempt(lambda: torch.cuda.get_device_name(device)) if on_cuda else cpu_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": attempt(torch.backends.cudnn.version) if on_cuda else None,
        "cudnn_benchmark": args.cudnn_benchmark,
        "cudnn_allow_tf32": attempt(lambda: torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": attempt(lambda: torch.backends.cuda.matmul.allow_tf32),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "preset": "imagenet256-paper",
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "options": [option.key for option in OPTIONS if option.key in args.options],
        "compile_mode": args.compile_mode,
        "learning_rate": LEARNING_RATE,
        "max_grad_norm": MAX_GRAD_NORM,
        "fused_adamw": on_cuda,
        "loss_rtol": LOSS_RTOL,
        "seed": args.seed,
        "quick": args.quick,
        "step": "zero_grad; loss = model(pixels).loss [bf16 autocast]; backward; clip_grad_norm_(1.0); AdamW.step",
    }


# ----------------------------------------------------------------------------------------------------------------
# One row
# ----------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(option: Option, config: dict, pixels: torch.Tensor):
    """The row's model (same weights and codebooks for every row), its pixels and its AdamW."""
    device = pixels.device
    torch.manual_seed(config["seed"])  # the same weights for every row, built on the CPU
    model = VQVAE2Model(VQVAE2Config.from_preset("imagenet256-paper", image_size=config["resolution"]))
    model = model.train().to(device)
    if option.channels_last:
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(config["seed"] + 1)  # the same k-means codebooks for every row
    model.initialize_codebooks(pixels)  # in float32; a compiled forward cannot do it itself
    parameters = [p for p in model.parameters() if p.requires_grad]  # EMA codebooks are not trained by AdamW
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, **fused)
    return model, pixels, parameters, optimizer


def relayout_grads(parameters: list[torch.Tensor]) -> int:
    """Copies every gradient whose strides differ from its parameter's into the parameter's layout; returns how many."""
    moved = 0
    for parameter in parameters:
        grad = parameter.grad
        if grad is not None and grad.stride() != parameter.stride():
            parameter.grad = torch.empty_like(parameter.detach()).copy_(grad)
            moved += 1
    return moved


def make_optimizer_step(optimizer, parameters: list[torch.Tensor], key: str, state: dict):
    """`optimizer.step`, guarded against fused AdamW refusing gradients whose strides differ from their parameters'
    ("... must have same dtype, device, and layout": compiled convolutions can return channels-last weight gradients,
    pytorch/pytorch#126585). On that error, it copies those gradients to their parameters' layout, at every step
    from then on (timed: `state["grad_relayout"]` records it), and retries the step."""

    def optimizer_step() -> None:
        if state["grad_relayout"]:
            relayout_grads(parameters)
        try:
            optimizer.step()
        except RuntimeError as error:
            if state["grad_relayout"] or "layout" not in str(error):
                raise
            state["grad_relayout"] = True
            state["relayout_grad_count"] = relayout_grads(parameters)
            log(f"{key}: AdamW refused the gradients ({error}); {state['relayout_grad_count']} gradient(s) copied "
                "to their parameter's strides, at every step from now on (timed)")  # fmt: skip
            optimizer.step()

    return optimizer_step


def make_step(option: Option, config: dict, pixels: torch.Tensor):
    """A function running one training step of `option` and returning (seconds, detached loss); the parameter
    count; and a dict of what the step had to do (`grad_relayout`)."""
    device = pixels.device
    model, pixels, parameters, optimizer = build_model(option, config, pixels)
    forward = torch.compile(model, mode=config["compile_mode"]) if option.compiled else model
    state = {"grad_relayout": False}
    optimizer_step = make_optimizer_step(optimizer, parameters, option.key, state)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if option.bf16 else nullcontext()

    def step() -> tuple[float, torch.Tensor]:
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = forward(pixels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
        optimizer_step()
        synchronize(device)
        return time.perf_counter() - start, loss.detach()

    return step, sum(p.numel() for p in model.parameters()), state


def time_option(option: Option, config: dict, pixels: torch.Tensor) -> dict:
    """Runs `option`'s warm-up and timed steps; returns its row (without the comparison to the baseline)."""
    step, parameters, state = make_step(option, config, pixels)
    log(f"{option.key}: model built ({parameters / 1e6:.2f}M parameters); first step"
        + (" (compiles)" if option.compiled else ""))  # fmt: skip
    first_seconds, first_loss = step()
    first_loss = first_loss.item()
    log(f"{option.key}: first step {first_seconds:.2f} s, loss {first_loss:.6f}")
    for _ in range(config["warmup"] - 1):
        step()
    samples, last_loss = [], None
    for _ in range(config["repeats"]):
        seconds, last_loss = step()
        samples.append(seconds)
    median = statistics.median(samples)
    return {
        "parameters": parameters,
        "first_step_s": first_seconds,
        "first_loss": first_loss,
        "last_loss": last_loss.item(),
        "median_step_ms": median * 1e3,
        "min_step_ms": min(samples) * 1e3,
        "img_s": config["batch_size"] / median,
        "step_ms": [round(s * 1e3, 4) for s in samples],
        **state,
    }


def free_memory(device: torch.device) -> None:
    """Drops compiled graphs (they hold the last row's model) and cached device memory."""
    try:
        torch._dynamo.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort, never the reason a run stops
        traceback.print_exc()


def run_option(option: Option, config: dict, pixels: torch.Tensor) -> dict:
    """`option`'s row; an exception becomes the row's `error` (with its traceback printed and recorded)."""
    device = pixels.device
    row = {"option": option.key, "bf16": option.bf16, "compiled": option.compiled,
           "channels_last": option.channels_last, "note": option.note, "error": None}  # fmt: skip
    start = time.perf_counter()
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row.update(time_option(option, config, pixels))
    except Exception as error:  # noqa: BLE001 - one row's failure must not stop the others
        traceback.print_exc()
        sys.stderr.flush()
        row["error"] = f"{type(error).__name__}: {error}"
        row["traceback"] = traceback.format_exc()
    finally:
        row["wall_s"] = time.perf_counter() - start
        row["peak_gib"] = peak_gib(device)
    free_memory(device)
    return row


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    try:
        return torch.cuda.max_memory_allocated(device) / 2**30
    except Exception:  # noqa: BLE001 - e.g. a broken CUDA context after an error: the row keeps its own error
        traceback.print_exc()
        return None


# ----------------------------------------------------------------------------------------------------------------
# Comparison and report
# ----------------------------------------------------------------------------------------------------------------


def compare(rows: list[dict]) -> None:
    """Fills `over_fp32_eager` and `loss_ok` of every row from the baseline row (None where either is missing)."""
    baseline = next((r for r in rows if r["option"] == BASELINE and r.get("img_s") is not None), None)
    for row in rows:
        if row.get("img_s") is None:
            continue
        row["over_fp32_eager"] = None if baseline is None else row["img_s"] / baseline["img_s"]
        loss, ok = row["first_loss"], math.isfinite(row["first_loss"])
        if ok and baseline is not None:
            reference = baseline["first_loss"]
            ok = abs(loss - reference) <= LOSS_RTOL * abs(reference)
            row["first_loss_rel_diff"] = abs(loss - reference) / abs(reference) if reference else None
        row["loss_ok"] = ok


def warn_loss(row: dict, rows: list[dict]) -> None:
    if row.get("loss_ok") is False:
        reference = next((r.get("first_loss") for r in rows if r["option"] == BASELINE), None)
        print(f"WARNING: {row['option']}: first loss {row['first_loss']} is not finite or not within "
              f"{LOSS_RTOL:g} (relative) of {BASELINE}'s {reference}: it may change the model", flush=True)  # fmt: skip


def write_json(path: str | None, config: dict, rows: list[dict], status: str) -> None:
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "w") as handle:
        json.dump({"status": status, "config": config, "rows": rows}, handle, indent=2, default=str)
    os.replace(temporary, target)


def cell(value, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_table(config: dict, rows: list[dict]) -> None:
    print(f"\nVQ-VAE-2 imagenet256-paper at {config['resolution']} px, batch {config['batch_size']} on "
          f"{config['device_name']} ({config['device']}), torch {config['torch']}; median of {config['repeats']} "
          f"steps after {config['warmup']} warm-up", flush=True)  # fmt: skip
    header = (f"{'option':<30}{'first step s':>13}{'median ms':>11}{'img/s':>10}{'x fp32 eager':>14}"
              f"{'peak GiB':>10}{'first loss':>12}  status")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in rows:
        status = f"ERROR {row['error']}" if row["error"] else ("ok" if row.get("loss_ok") else "LOSS MISMATCH")
        status += " (gradients relaid out for AdamW)" if row.get("grad_relayout") else ""
        print(
            f"{row['option']:<30}{cell(row.get('first_step_s'), '.2f', 13)}{cell(row.get('median_step_ms'), '.2f', 11)}"
            f"{cell(row.get('img_s'), '.1f', 10)}{ratio(row.get('over_fp32_eager')):>14}"
            f"{cell(row.get('peak_gib'), '.2f', 10)}{cell(row.get('first_loss'), '.5f', 12)}  {status[:200]}"
        )
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def log_row(row: dict, rows: list[dict]) -> None:
    """The progress line of a finished row, and its loss warning."""
    if row["error"]:
        outcome = f"ERROR {row['error']}"
    else:
        outcome = (f"median {row['median_step_ms']:.2f} ms, {row['img_s']:.1f} img/s, "
                   f"first step {row['first_step_s']:.2f} s")  # fmt: skip
    log(f"{row['option']}: done in {row['wall_s']:.1f} s: {outcome}")
    warn_loss(row, rows)


def main(args: argparse.Namespace) -> dict:
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` still gets the table and the JSON
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    config = make_config(args)
    device = torch.device(args.device)
    log(f"{config['device_name']} ({device}), torch {config['torch']}, {config['resolution']} px, "
        f"batch {config['batch_size']}, warmup {config['warmup']}, repeats {config['repeats']}: "
        f"{', '.join(config['options'])}")  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.batch_size, 3, args.resolution, args.resolution)
    pixels = (torch.rand(shape, generator=generator) * 2 - 1).to(device)
    rows, status, option = [], "running", None
    write_json(args.json, config, rows, status)
    try:
        for index, option in enumerate(o for o in OPTIONS if o.key in config["options"]):
            log(f"{option.key}: start ({index + 1}/{len(config['options'])}) - {option.note}")
            rows.append(run_option(option, config, pixels))
            compare(rows)
            log_row(rows[-1], rows)
            write_json(args.json, config, rows, status)
        status = "complete"
    except KeyboardInterrupt as interrupt:
        status = "interrupted"
        log(f"interrupted ({interrupt}): writing what was measured")
        if option is not None and (not rows or rows[-1]["option"] != option.key):
            rows.append({"option": option.key, "note": option.note, "error": f"interrupted ({interrupt})"})
    print_table(config, rows)
    write_json(args.json, config, rows, status)
    if args.json:
        log(f"wrote {args.json} ({status})")
    return {"status": status, "config": config, "rows": rows}


if __name__ == "__main__":
    main(parse_args())
