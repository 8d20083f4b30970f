"""Speed benchmark of vector quantizers: one training step (forward and backward) on the CPU.

Every contender gets the same latents, (8, 64, 64, 64) by default: N = 32,768 vectors of D = 64, against a
codebook of K = 512 codes, with `torch.set_num_threads(2)`. Each timed call starts from a fresh
`latents.detach().clone().requires_grad_(True)` (made outside the timed region), runs the module in train()
mode (the EMA variants update their codebook in forward) and back-propagates the same downstream
`quantized.sum() * 1e-3 + loss`. Contenders:

* ``ours_grad``: this project's `VectorQuantizer(512, 64, beta=0.25)`, codebook trained by its loss;
* ``ours_ema``: the same with `ema_decay=0.99`;
* ``diffusers``: `diffusers.models.autoencoders.vae.VectorQuantizer(512, 64, beta=0.25, legacy=False)`;
* ``vqp_ema``: vector-quantize-pytorch's `VectorQuantize(dim=64, codebook_size=512, decay=0.99)` with plain
  straight-through gradients (its default rotation trick is turned off, as no other contender has one);
* ``floor``: the distance matmul and argmin alone, on already flattened (N, D) vectors and without autograd:
  one `addmm(‖e‖², z, eᵀ, alpha=-2).argmin(1)` over all rows;
* ``floor_chunked``: the same computation in cache-sized row blocks (`nearest_code`, which ours uses).

The reported time is the median over `--repeats` rounds, after `--warmup` untimed rounds; the contenders run
interleaved, one call each per round, so that a slow drift of the machine reaches all of them alike.

Targets (from the issue; printed as PASS or MISS, never enforced by an assert or the exit status):

* ours_ema_ms <= 1.5 x floor_ms;
* ours_ema is >= 4x faster than vqp_ema (vqp_ema_ms / ours_ema_ms >= 4);
* ours_ema is >= 1.2x faster than diffusers (diffusers_ms / ours_ema_ms >= 1.2).

Usage::

    .venv/bin/python benchmarks/quantizer.py [--threads 2] [--repeats 20] [--json results.json]
    .venv/bin/python benchmarks/quantizer.py --quick   # tiny smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hf_vqvae.models.vqvae.quantizer import VectorQuantizer, nearest_code

NUM_EMBEDDINGS = 512
EMBEDDING_DIM = 64
BETA = 0.25
EMA_DECAY = 0.99
FULL_LATENTS_SHAPE = (8, EMBEDDING_DIM, 64, 64)  # 8 x 64 x 64 = 32,768 vectors
QUICK_LATENTS_SHAPE = (2, EMBEDDING_DIM, 16, 16)
# Weight of `quantized.sum()` in the shared downstream loss: small, so the quantizer loss still matters, and
# non-zero, so the straight-through path is exercised.
DOWNSTREAM_SCALE = 1e-3

# (name in the table, json key); the floors first, as the ratios refer to them.
ROWS = (
    ("floor", "floor_ms"),
    ("floor_chunked", "floor_chunked_ms"),
    ("ours_grad", "ours_grad_ms"),
    ("ours_ema", "ours_ema_ms"),
    ("diffusers", "diffusers_ms"),
    ("vqp_ema", "vqp_ema_ms"),
)


@dataclass
class Contender:
    """`prepare()` builds the argument of `run` outside the timed region; `run(arg)` is what is timed."""

    name: str
    prepare: Callable[[], Any]
    run: Callable[[Any], None]


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time one training step (forward + backward) of vector quantizers on the same CPU inputs: this "
            "project's (gradient and EMA codebooks), diffusers', vector-quantize-pytorch's, and the floor "
            "(distance matmul + argmin alone). Prints a table of median milliseconds and the targets."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the whole run")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds before the timed ones")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents and of the codebooks")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: latents {QUICK_LATENTS_SHAPE} instead of {FULL_LATENTS_SHAPE}, 2 repeats, 1 warm-up",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results (milliseconds) to this JSON file")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--threads and --repeats must be >= 1, --warmup >= 0")
    return args


def make_config(args: argparse.Namespace) -> dict:
    shape = QUICK_LATENTS_SHAPE if args.quick else FULL_LATENTS_SHAPE
    return {
        "latents_shape": list(shape),
        "num_vectors": shape[0] * shape[2] * shape[3],
        "embedding_dim": EMBEDDING_DIM,
        "num_embeddings": NUM_EMBEDDINGS,
        "beta": BETA,
        "ema_decay": EMA_DECAY,
        "threads": args.threads,
        "repeats": 2 if args.quick else args.repeats,
        "warmup": 1 if args.quick else args.warmup,
        "seed": args.seed,
        "quick": args.quick,
        "downstream": f"(quantized.sum() * {DOWNSTREAM_SCALE} + loss).backward()",
    }


# ----------------------------------------------------------------------------------------------------------------
# Contenders
# ----------------------------------------------------------------------------------------------------------------


def floor_contenders(latents: torch.Tensor, codebook: torch.Tensor) -> list[Contender]:
    # Flattened once, outside the timed region: the floors time the distance search alone.
    flat = latents.movedim(1, -1).reshape(-1, latents.shape[1]).contiguous()

    def one_matmul(z: torch.Tensor) -> None:
        with torch.no_grad():
            codebook_sq = codebook.pow(2).sum(dim=1)
            torch.addmm(codebook_sq, z, codebook.t(), alpha=-2.0).argmin(dim=1)

    def chunked(z: torch.Tensor) -> None:
        nearest_code(z, codebook)

    return [
        Contender("floor", lambda: flat, one_matmul),
        Contender("floor_chunked", lambda: flat, chunked),
    ]


def training_contender(name: str, module: torch.nn.Module, latents: torch.Tensor, forward: Callable) -> Contender:
    """A module timed for forward and backward; `forward(module, x)` returns its `(quantized, loss)`."""
    module.train()

    def prepare() -> torch.Tensor:
        module.zero_grad(set_to_none=True)  # no gradient accumulation into the codebook between calls
        return latents.detach().clone().requires_grad_(True)

    def run(x: torch.Tensor) -> None:
        quantized, loss = forward(module, x)
        # loss.sum(): vector-quantize-pytorch may return a one-element tensor; a no-op for the others.
        (quantized.sum() * DOWNSTREAM_SCALE + loss.sum()).backward()

    return Contender(name, prepare, run)


def ours_forward(module, x):
    output = module(x)
    return output.quantized, output.loss


def diffusers_forward(module, x):
    quantized, loss, _ = module(x)  # (z_q, loss, (perplexity, min_encodings, indices))
    return quantized, loss


def vqp_forward(module, x):
    quantized, _, loss = module(x)  # (quantize, indices, commitment loss)
    return quantized, loss


def build_diffusers():
    from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer

    return DiffusersVectorQuantizer(NUM_EMBEDDINGS, EMBEDDING_DIM, beta=BETA, legacy=False)


def build_vqp():
    from vector_quantize_pytorch import VectorQuantize

    return VectorQuantize(
        dim=EMBEDDING_DIM,
        codebook_size=NUM_EMBEDDINGS,
        decay=EMA_DECAY,
        commitment_weight=BETA,
        accept_image_fmap=True,  # reads (B, D, H, W), the very tensor the others get
        rotation_trick=False,  # plain straight-through, as in every other contender
    )


def optional_module(name: str, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """`build()`, or None with a note when its package is not installed."""
    try:
        return build()
    except ImportError as error:
        print(f"note: skipping {name}: {error} (install it, e.g. `pip install -e '.[bench]'`, to time it)")
        return None


def all_contenders(latents: torch.Tensor) -> list[Contender]:
    ours_grad = VectorQuantizer(NUM_EMBEDDINGS, EMBEDDING_DIM, beta=BETA)
    ours_ema = VectorQuantizer(NUM_EMBEDDINGS, EMBEDDING_DIM, beta=BETA, ema_decay=EMA_DECAY)
    # The floors search a codebook initialised the way ours is, copied before any EMA update moves it.
    contenders = floor_contenders(latents, ours_grad.codebook.detach().clone())
    contenders.append(training_contender("ours_grad", ours_grad, latents, ours_forward))
    contenders.append(training_contender("ours_ema", ours_ema, latents, ours_forward))
    for name, build, forward in (("diffusers", build_diffusers, diffusers_forward), ("vqp_ema", build_vqp, vqp_forward)):
        module = optional_module(name, build)
        if module is not None:
            contenders.append(training_contender(name, module, latents, forward))
    return contenders


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------


def time_call(contender: Contender) -> float:
    argument = contender.prepare()
    start = time.perf_counter()
    contender.run(argument)
    return (time.perf_counter() - start) * 1e3


def median_ms(contenders: list[Contender], repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per contender; rounds interleave the contenders, warm-up rounds are not kept."""
    times = {contender.name: [] for contender in contenders}
    for round_index in range(warmup + repeats):
        for contender in contenders:
            elapsed = time_call(contender)
            if round_index >= warmup:
                times[contender.name].append(elapsed)
    return {name: statistics.median(samples) for name, samples in times.items()}


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return numerator / denominator


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "diffusers": package_version("diffusers"),
        "vector_quantize_pytorch": package_version("vector-quantize-pytorch"),
    }


def summarize(medians: dict[str, float], config: dict) -> dict:
    """The JSON document: `*_ms` for every row (None when skipped), the ratios, the targets and the config."""
    results = {key: medians.get(name) for name, key in ROWS}
    ours_ema = results["ours_ema_ms"]
    results["ours_ema_over_floor"] = ratio(ours_ema, results["floor_ms"])
    results["ours_ema_over_floor_chunked"] = ratio(ours_ema, results["floor_chunked_ms"])
    results["vqp_over_ours_ema"] = ratio(results["vqp_ema_ms"], ours_ema)
    results["diffusers_over_ours_ema"] = ratio(results["diffusers_ms"], ours_ema)
    results["targets"] = targets(results)
    results["config"] = config
    results["machine"] = machine_facts()
    return results


def targets(results: dict) -> dict[str, bool | None]:
    """Each target met (True), missed (False) or not measured (None)."""

    def check(value: float | None, passes: Callable[[float], bool]) -> bool | None:
        return None if value is None else passes(value)

    return {
        "ours_ema <= 1.5x floor": check(results["ours_ema_over_floor"], lambda r: r <= 1.5),
        "ours_ema >= 4x faster than vqp_ema": check(results["vqp_over_ours_ema"], lambda r: r >= 4.0),
        "ours_ema >= 1.2x faster than diffusers": check(results["diffusers_over_ours_ema"], lambda r: r >= 1.2),
    }


def format_cell(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def print_report(results: dict) -> None:
    config, machine = results["config"], results["machine"]
    print(
        f"torch {machine['torch']}, {machine['threads']} threads (of {machine['cpu_count']} CPUs), "
        f"{machine['machine']}, python {machine['python']}"
    )
    print(
        f"latents {tuple(config['latents_shape'])}: N={config['num_vectors']} vectors, D={config['embedding_dim']}, "
        f"K={config['num_embeddings']}; median of {config['repeats']} (after {config['warmup']} warm-up)"
    )
    header = f"{'name':<14}{'median ms':>11}{'/ floor':>10}{'/ chunked':>11}{'ours_ema speed-up':>19}"
    print(header)
    print("-" * len(header))
    for name, key in ROWS:
        ms = results[key]
        print(
            f"{name:<14}{format_cell(ms):>11}"
            f"{format_cell(ratio(ms, results['floor_ms']), 'x'):>10}"
            f"{format_cell(ratio(ms, results['floor_chunked_ms']), 'x'):>11}"
            f"{format_cell(ratio(ms, results['ours_ema_ms']), 'x'):>19}"
        )
    print()
    for target, met in results["targets"].items():
        print(f"{'SKIP' if met is None else 'PASS' if met else 'MISS'}  {target}")


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> dict:
    config = make_config(args)
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    latents = torch.randn(config["latents_shape"])
    contenders = all_contenders(latents)
    medians = median_ms(contenders, config["repeats"], config["warmup"])
    results = summarize(medians, config)
    print_report(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main(parse_args())
