"""Quality on natural images: VQ-VAE and VQ-VAE-2 on CIFAR-10 (CPU budget about 60 minutes on 2 cores).

Three parts, each runnable alone with `--parts`; every model trains through hf_vqvae.training.train (the code
behind scripts/train.py) on the train split of `../shared/datasets/cifar10_jpeg` (50,000 JPEG images) and is
evaluated on all 10,000 test images: codes used (%), dead codes and perplexity per level over the whole test set,
normalised MSE (MSE / pixel variance), PSNR and SSIM.

1. `codebook`: the `cifar10` VQ-VAE (Sonnet's example size), the same data, seed and steps (`--codebook_steps`,
   batch 32, learning rate 3e-4) with each codebook mechanism of the quantizer: the paper's EMA and gradient
   codebooks, k-means initialisation, dead-code restarts, the rotation trick, l2-normalised low-dimensional
   lookup, the library's defaults; and vector-quantize-pytorch's `VectorQuantize` with its matching options
   dropped into the same encoder and decoder. Also the time per training step of the whole model.
2. `vqvae`: the `cifar10` VQ-VAE with the default training settings, 10,000 steps of batch 32 at learning rate
   3e-4, against DeepMind Sonnet's `vqvae_example.ipynb` at that point: normalised reconstruction error about
   0.056 (on training batches) and perplexity about 330 (per batch of 32). Target: test normalised MSE <= 0.056,
   perplexity per test batch of 32 >= 330, the batches drawn at random as Sonnet's training batches are (also
   reported: batches in file order, one class each since the files are sorted by label, and the perplexity of
   the whole test set's histogram). `benchmarks/sonnet_replica.py` runs Sonnet's own recipe on the same data.
3. `hierarchy`: does the hierarchy help (VQ-VAE-2 §3)? VQ-VAE-2 `cifar10` (top 4x4, bottom 8x8, K = 512: 720 bits
   per image) against a single-level VQ-VAE `cifar10` with K = 2048 (8x8 x 11 bits = 704 bits), equal steps;
   plus the VQ-VAE-2's reconstruction from its top level alone.

Usage:

    .venv/bin/python benchmarks/quality_cifar10.py --json cifar10.json              # all parts, about an hour
    .venv/bin/python benchmarks/quality_cifar10.py --parts codebook --json a.json   # one part
    .venv/bin/python benchmarks/quality_cifar10.py --quick                          # smoke run, a minute
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

import hf_vqvae.training.loop as training_loop
from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits
from hf_vqvae.evaluation import evaluate_vq, histogram_perplexity, to_jsonable
from hf_vqvae import PAPER_CODEBOOK
from hf_vqvae.models.vqvae.quantizer import QuantizerOutput
from hf_vqvae.training import ModelArguments, TrainArguments, train
from hf_vqvae.training.builders import build_model

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"

# Sonnet's vqvae_example.ipynb (branch v2, stored outputs) after 10,000 steps of batch 32.
SONNET_NORMALIZED_MSE, SONNET_PERPLEXITY = 0.056, 330.0

# The paper's codebook (no k-means, no restarts, no rotation), on top of which each row adds mechanisms.
PAPER = dict(PAPER_CODEBOOK)
# (row name, config overrides of our quantizer) or (row name, None, vector-quantize-pytorch options).
CODEBOOK_ROWS = [
    ("paper: EMA codebook", dict(PAPER), None),
    ("paper: gradient codebook (codebook loss)", dict(PAPER, ema_decay=None), None),
    ("EMA + k-means init", dict(PAPER, kmeans_init=True), None),
    ("EMA + dead-code restarts (20 steps)", dict(PAPER, dead_code_threshold=20), None),
    ("EMA + rotation trick", dict(PAPER, rotation_trick=True), None),
    ("gradient codebook + rotation trick", dict(PAPER, ema_decay=None, rotation_trick=True), None),
    ("EMA + cosine lookup, codebook_dim 8", dict(PAPER, use_cosine_sim=True, codebook_dim=8), None),
    ("EMA + k-means + restarts + rotation", dict(PAPER, kmeans_init=True, dead_code_threshold=20, rotation_trick=True), None),
    ("EMA + k-means + restarts: the defaults (no option)", {}, None),
    ("vqp: VectorQuantize, plain", None, dict(rotation_trick=False)),
    ("vqp: kmeans_init + threshold_ema_dead_code=2", None, dict(rotation_trick=False, kmeans_init=True, threshold_ema_dead_code=2)),
    ("vqp: rotation_trick", None, dict(rotation_trick=True)),
    ("vqp: use_cosine_sim + codebook_dim 8", None, dict(rotation_trick=False, use_cosine_sim=True, codebook_dim=8)),
]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datasets", default=str(DATASETS), help="folder holding cifar10_jpeg/")
    parser.add_argument("--output_dir", default="outputs/quality-cifar10", help="where the trained models go")
    parser.add_argument("--parts", default="codebook,vqvae,hierarchy", help="comma-separated parts to run, in order")
    parser.add_argument("--codebook_steps", type=int, default=500, help="steps of each codebook-option run")
    parser.add_argument("--codebook_rows", default=None, help="comma-separated row numbers (1-based) to run only those")
    parser.add_argument("--vqvae_steps", type=int, default=10000, help="steps of the Sonnet comparison")
    parser.add_argument("--hierarchy_steps", type=int, default=2500, help="steps of each hierarchy run")
    parser.add_argument("--eval_images", type=int, default=None, help="test images to evaluate on (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: a few steps, a few images")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.codebook_steps, args.vqvae_steps, args.hierarchy_steps, args.eval_images = 3, 3, 3, 64
    return args


# ---------------------------------------------------------------------------------------------------------------
# vector-quantize-pytorch's VectorQuantize in our models' quantizer slot
# ---------------------------------------------------------------------------------------------------------------


class VQPQuantizer(nn.Module):
    """`VectorQuantize(dim=D, codebook_size=K, decay=0.99, commitment_weight=0.25)` behind our quantizer's interface."""

    def __init__(self, num_embeddings: int, embedding_dim: int, **options):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.vq = VectorQuantize(dim=embedding_dim, codebook_size=num_embeddings, decay=0.99, commitment_weight=0.25,
                                 accept_image_fmap=True, **options)  # fmt: skip

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        quantized, indices, loss = self.vq(latents)  # (B, D, H, W), (B, H, W), ()
        usage = torch.bincount(indices.flatten(), minlength=self.num_embeddings)
        probs = usage.float() / usage.sum()
        perplexity = torch.exp(-(probs * probs.clamp(min=1e-10).log()).sum())
        zero = loss.new_zeros(())
        return QuantizerOutput(quantized=quantized, indices=indices, loss=loss.reshape(()), codebook_loss=zero,
                               commitment_loss=loss.reshape(()) / 0.25, perplexity=perplexity, usage=usage)  # fmt: skip

    def embed(self, indices: torch.LongTensor) -> torch.Tensor:
        return self.vq.get_output_from_indices(indices).movedim(-1, 1)


def _with_vqp_quantizers(options: dict):
    """A `build_model` for the training loop that swaps every level's quantizer for vector-quantize-pytorch's."""
    built = {}

    def build(model_args, overrides, resolution):
        model = build_model(model_args, overrides, resolution)
        config = model.config
        model.quantizers = nn.ModuleList(VQPQuantizer(config.num_embeddings, config.embedding_dim, **options)
                                         for _ in model.quantizers)  # fmt: skip
        built["model"] = model
        return model

    return build, built


# ---------------------------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------------------------


def _data(args) -> DataArguments:
    """Training data; the loop's own end-of-run metrics use 256 test images (this script evaluates on all)."""
    return DataArguments(dataset_name=str(Path(args.datasets) / "cifar10_jpeg"), max_eval_samples=256)


def _train(args, name: str, model: str, preset: str, steps: int, overrides: dict, vqp_options: dict | None = None):
    """Train with the project's loop (batch 32, lr 3e-4, otherwise its defaults) -> (in-memory model, ms per step)."""
    train_args = TrainArguments(output_dir=str(Path(args.output_dir) / name), report_to="none", logging_steps=100,
                                max_train_steps=steps, train_batch_size=32, learning_rate=3e-4, seed=0)  # fmt: skip
    model_args = ModelArguments(model=model, preset=preset)
    build, built = _with_vqp_quantizers(vqp_options) if vqp_options is not None else (_capturing_build(), None)
    original, training_loop.build_model = training_loop.build_model, build
    try:
        train(model_args, _data(args), train_args, overrides=overrides)
    finally:
        training_loop.build_model = original
    trained = (built or build.built)["model"]
    # The loop's own clock: the training steps (data included), not the set-up or the end-of-run evaluation.
    seconds = json.loads((Path(train_args.output_dir) / "metrics.json").read_text())["training"]["wall_time_s"]
    return trained.eval(), 1000.0 * seconds / max(steps, 1)


def _capturing_build():
    def build(model_args, overrides, resolution):
        build.built["model"] = build_model(model_args, overrides, resolution)
        return build.built["model"]

    build.built = {}
    return build


def _evaluate(args, model) -> dict:
    """Metrics on the test images: all of them, or `--eval_images` drawn at random (the files are sorted by label)."""
    splits = load_image_splits(DataArguments(**{**_data(args).__dict__, "max_eval_samples": args.eval_images}), seed=0)
    transform = ImageTransform(model.config.image_size, model.config.num_channels, (-1.0, 1.0))
    batches = batches_for_rank(splits.eval, splits.image_column, transform, batch_size=500, seed=0, epoch=0,
                               shuffle=False, drop_last=False)  # fmt: skip
    return evaluate_vq(model, batches)


def _row(metrics: dict, ms_per_step: float | None, level: int = 0) -> dict:
    return {"codes_used": metrics[f"codebook_usage_level_{level}"], "perplexity": metrics[f"codebook_perplexity_level_{level}"],
            "dead_codes": metrics[f"codebook_dead_codes_level_{level}"], "normalized_mse": metrics["normalized_mse"],
            "psnr": metrics["psnr"], "ssim": metrics["ssim"], "ms_per_step": ms_per_step,
            "test_images": metrics["num_images"]}  # fmt: skip


def codebook_part(args) -> dict:
    wanted = None if args.codebook_rows is None else {int(n) for n in args.codebook_rows.split(",")}
    rows = {}
    for number, (name, overrides, vqp_options) in enumerate(CODEBOOK_ROWS, start=1):
        if wanted is not None and number not in wanted:
            continue
        model, ms = _train(args, f"codebook-{number}", "vqvae", "cifar10", args.codebook_steps, overrides or {}, vqp_options)
        rows[name] = _row(_evaluate(args, model), ms)
        print(f"[codebook] {name}: {rows[name]}", flush=True)
    return {"codebook": rows, "codebook_steps": args.codebook_steps}


def vqvae_part(args) -> dict:
    model, ms = _train(args, "vqvae-cifar10", "vqvae", "cifar10", args.vqvae_steps, {})
    per_batch = batch_perplexity(args, model)
    row = {**_row(_evaluate(args, model), ms), "batch_perplexity": per_batch["random"],
           "batch_perplexity_file_order": per_batch["file_order"]}
    return {"vqvae": row, "vqvae_steps": args.vqvae_steps}


@torch.no_grad()
def batch_perplexity(args, model, batch_size: int = 32) -> dict:
    """Sonnet's perplexity: exp(entropy) of the code histogram of one batch of 32 images, averaged over batches.
    `random`: batches drawn at random from the test images, as Sonnet's training batches are (its 330 is a mean
    over training batches); `file_order`: consecutive batches of the files, which are sorted by label, so that each
    batch holds one class and uses fewer codes. Both are below the perplexity of the whole test set's histogram."""
    splits = load_image_splits(DataArguments(**{**_data(args).__dict__, "max_eval_samples": args.eval_images}), seed=0)
    transform = ImageTransform(model.config.image_size, model.config.num_channels, (-1.0, 1.0))
    codes = []
    for batch in batches_for_rank(splits.eval, splits.image_column, transform, batch_size=500, seed=0, epoch=0,
                                  shuffle=False, drop_last=False):  # fmt: skip
        codes.append(model.eval().encode(batch["pixel_values"].to(model.device)).codes[-1].flatten(1).cpu())
    codes = torch.cat(codes)  # (images, codes per image), in file order
    random_order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(0))
    return {"random": _mean_batch_perplexity(codes[random_order], batch_size, model.config.num_embeddings),
            "file_order": _mean_batch_perplexity(codes, batch_size, model.config.num_embeddings)}  # fmt: skip


def _mean_batch_perplexity(codes: torch.Tensor, batch_size: int, num_embeddings: int) -> float:
    values = [histogram_perplexity(torch.bincount(codes[i : i + batch_size].flatten(), minlength=num_embeddings))
              for i in range(0, len(codes) - batch_size + 1, batch_size)]  # fmt: skip
    return sum(values) / max(len(values), 1)


def hierarchy_part(args) -> dict:
    steps = args.hierarchy_steps
    vq2, ms2 = _train(args, "vqvae2-cifar10", "vqvae2", "cifar10", steps, {})
    metrics2 = _evaluate(args, vq2)
    vq1, ms1 = _train(args, "vqvae-cifar10-k2048", "vqvae", "cifar10", steps, {"num_embeddings": 2048})
    metrics1 = _evaluate(args, vq1)
    bits = lambda model: sum(h * w for h, w in model.config.latent_shapes()) * math.log2(model.config.num_embeddings)  # noqa: E731
    return {"hierarchy_steps": steps, "hierarchy": {
        "vqvae2": {**_row(metrics2, ms2, level=1), "bits_per_image": bits(vq2),
                   "top_codes_used": metrics2["codebook_usage_level_0"],
                   "top_perplexity": metrics2["codebook_perplexity_level_0"],
                   "top_only_psnr": metrics2["psnr_levels_0_to_0"],
                   "top_only_normalized_mse": metrics2["mse_levels_0_to_0"] / metrics2["pixel_variance"]},
        "vqvae_k2048": {**_row(metrics1, ms1), "bits_per_image": bits(vq1)},
    }}  # fmt: skip


PARTS = {"codebook": codebook_part, "vqvae": vqvae_part, "hierarchy": hierarchy_part}


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    if not (Path(args.datasets) / "cifar10_jpeg").is_dir():
        raise SystemExit(f"{Path(args.datasets) / 'cifar10_jpeg'} is absent: this benchmark reads the shared CIFAR-10")
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    results, seconds = {}, {}
    for part in parts:
        start = time.time()
        results.update(PARTS[part](args))
        seconds[part] = round(time.time() - start, 1)
        if args.json:  # written after every part, so a long run keeps what it has measured
            Path(args.json).write_text(json.dumps(to_jsonable({**results, "seconds": seconds}), indent=2))
    results = to_jsonable({**results, "seconds": seconds, "quick": args.quick})
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def print_tables(results: dict) -> None:
    header = f"{'':<48}{'codes used':>11}{'perplexity':>11}{'dead':>6}{'norm. MSE':>10}{'PSNR':>7}{'SSIM':>7}{'ms/step':>9}"
    if "codebook" in results:
        print(f"\nCodebook options: VQ-VAE cifar10, {results['codebook_steps']} steps of batch 32, CIFAR-10 test set")
        print(header)
        for name, row in results["codebook"].items():
            print(_format_row(name, row))
    if "vqvae" in results:
        row = results["vqvae"]
        print(f"\nVQ-VAE cifar10, {results['vqvae_steps']} steps of batch 32, lr 3e-4, default settings, vs Sonnet")
        print(header)
        print(_format_row("ours (test set)", row))
        print(f"{'ours: perplexity per random test batch of 32':<48}{'':>11}{row['batch_perplexity']:>11.1f}")
        print(f"{'ours: the same, batches in file order (by class)':<48}{'':>11}{row['batch_perplexity_file_order']:>11.1f}")
        print(f"{'Sonnet vqvae_example (training batches of 32)':<48}{'':>11}{SONNET_PERPLEXITY:>11.0f}{'':>6}{SONNET_NORMALIZED_MSE:>10.4f}")
        mse_ok, ppl_ok = row["normalized_mse"] <= SONNET_NORMALIZED_MSE, row["batch_perplexity"] >= SONNET_PERPLEXITY
        print(f"targets: normalised MSE <= {SONNET_NORMALIZED_MSE}: {'PASS' if mse_ok else 'MISS'}; "
              f"perplexity >= {SONNET_PERPLEXITY:.0f}: {'PASS' if ppl_ok else 'MISS'}")  # fmt: skip
    if "hierarchy" in results:
        rows = results["hierarchy"]
        print(f"\nDoes the hierarchy help? {results['hierarchy_steps']} steps of batch 32 each, CIFAR-10 test set")
        print(f"{'':<48}{'bits/image':>11}{'norm. MSE':>10}{'PSNR':>7}{'SSIM':>7}")
        for name, key in (("VQ-VAE-2 cifar10 (4x4 + 8x8, K = 512)", "vqvae2"), ("VQ-VAE cifar10, K = 2048 (8x8)", "vqvae_k2048")):
            row = rows[key]
            print(f"{name:<48}{row['bits_per_image']:>11.0f}{row['normalized_mse']:>10.4f}{row['psnr']:>7.2f}{row['ssim']:>7.3f}")
        top = rows["vqvae2"]
        print(f"{'VQ-VAE-2, top level alone (bottom zeroed)':<48}{'':>11}{top['top_only_normalized_mse']:>10.4f}{top['top_only_psnr']:>7.2f}")
    if "seconds" in results:
        print(f"seconds per part: {results['seconds']}")


def _format_row(name: str, row: dict) -> str:
    ms = f"{row['ms_per_step']:>9.0f}" if row.get("ms_per_step") is not None else f"{'':>9}"
    return (f"{name:<48}{100 * row['codes_used']:>10.1f}%{row['perplexity']:>11.1f}{row['dead_codes']:>6}"
            f"{row['normalized_mse']:>10.4f}{row['psnr']:>7.2f}{row['ssim']:>7.3f}{ms}")  # fmt: skip


if __name__ == "__main__":
    main(parse_args())
