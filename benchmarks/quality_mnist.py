"""Quality on real data (CPU budget about 30 minutes on 2 cores): the figures of the papers' small-scale settings.

1. VQ-VAE `mnist` preset (7x7 latent, K = 128) on MNIST: normalised reconstruction error (MSE / pixel variance)
   on the 10,000 test images, target <= 0.0444 (Keras VQ-VAE example), with codebook usage > 90%.
2. VAE `mnist-paper` (784-500-20 tanh MLP, Bernoulli decoder) on dynamically binarised MNIST: ELBO and the
   importance-sampled test NLL (k = 1000 samples per image), target <= 95 nats in this budget (the papers' 86.76
   comes from runs of thousands of epochs).
3. VAE `frey-paper` (Gaussian decoder, 28x20) on Frey Face (`frey_faces`, one split: the last 10% held out):
   the lower bound (ELBO) per image.

Every model trains through hf_vqvae.training.train (the code behind scripts/train.py) and is evaluated with
hf_vqvae.evaluation on the held-out split. Usage:

    .venv/bin/python benchmarks/quality_mnist.py --json quality.json        # the full run (~30 min on 2 cores)
    .venv/bin/python benchmarks/quality_mnist.py --quick                    # smoke run, a minute
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hf_vqvae import VAEModel, VQVAEModel
from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits
from hf_vqvae.evaluation import evaluate_vae, evaluate_vq, to_jsonable
from hf_vqvae.training import ModelArguments, TrainArguments, train

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
TARGETS = {"vqvae_normalized_mse": 0.0444, "vqvae_codebook_usage": 0.90, "vae_nll_nats": 95.0}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datasets", default=str(DATASETS), help="folder holding mnist/ and frey_faces/")
    parser.add_argument("--output_dir", default="outputs/quality", help="where the trained models go")
    parser.add_argument("--vqvae_steps", type=int, default=2000, help="VQ-VAE optimizer steps (batch 128)")
    parser.add_argument("--vae_steps", type=int, default=30000, help="MNIST VAE optimizer steps (batch 100)")
    parser.add_argument("--frey_steps", type=int, default=3000, help="Frey Face VAE optimizer steps (batch 100)")
    parser.add_argument("--nll_samples", type=int, default=1000, help="importance samples k per test image")
    parser.add_argument("--nll_images", type=int, default=10000, help="test images for the NLL estimate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: a few steps, a few images")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.vqvae_steps, args.vae_steps, args.frey_steps, args.nll_samples, args.nll_images = 20, 20, 20, 10, 64
    return args


def _train(output_dir: Path, model: ModelArguments, data: DataArguments, **train_kwargs) -> Path:
    """Train with the project's loop; its own end-of-run metrics use 512 held-out images (the full test set is
    evaluated afterwards by this script)."""
    defaults = dict(report_to="none", logging_steps=200, output_dir=str(output_dir), lr_warmup_steps=200)
    data = DataArguments(**{**data.__dict__, "max_eval_samples": 512})
    train(model, data, TrainArguments(**{**defaults, **train_kwargs}), overrides=_OVERRIDES.get(model.preset, {}))
    return output_dir


# Settings that make the small runs converge in the budget (every one is a config field or train option).
_OVERRIDES = {"mnist": {"kmeans_init": True, "dead_code_threshold": 100}}


def _test_batches(splits, model, batch_size: int, limit: int | None = None):
    value_range = (0.0, 1.0) if model.config.model_type == "vae" else (-1.0, 1.0)
    transform = ImageTransform(model.config.image_size, model.config.num_channels, value_range)
    batches = batches_for_rank(splits.eval, splits.image_column, transform, batch_size=batch_size, seed=0, epoch=0,
                               shuffle=False, drop_last=False)  # fmt: skip
    remaining = float("inf") if limit is None else limit
    for batch in batches:
        if remaining <= 0:
            break
        pixels = batch["pixel_values"][: int(min(remaining, batch["pixel_values"].shape[0]))]
        remaining -= pixels.shape[0]
        yield {"pixel_values": pixels}


def vqvae_mnist(args, datasets: Path) -> dict:
    data = DataArguments(dataset_name=str(datasets / "mnist"), max_eval_samples=None)
    folder = _train(Path(args.output_dir) / "vqvae-mnist", ModelArguments(model="vqvae", preset="mnist"), data,
                    max_train_steps=args.vqvae_steps, train_batch_size=128, learning_rate=1e-3)  # fmt: skip
    model = VQVAEModel.from_pretrained(folder).eval()
    splits = load_image_splits(data, seed=0)
    metrics = evaluate_vq(model, _test_batches(splits, model, 500, 64 if args.quick else None))
    return {"vqvae_normalized_mse": metrics["normalized_mse"], "vqvae_mse": metrics["mse"],
            "vqvae_codebook_usage": metrics["codebook_usage_level_0"],
            "vqvae_perplexity": metrics["codebook_perplexity_level_0"], "vqvae_test_images": metrics["num_images"]}  # fmt: skip


def vae_mnist(args, datasets: Path) -> dict:
    data = DataArguments(dataset_name=str(datasets / "mnist"), max_eval_samples=None)
    folder = _train(Path(args.output_dir) / "vae-mnist", ModelArguments(model="vae", preset="mnist-paper"), data,
                    max_train_steps=args.vae_steps, train_batch_size=100, learning_rate=1e-3, binarize="dynamic")  # fmt: skip
    model = VAEModel.from_pretrained(folder).eval()
    splits = load_image_splits(data, seed=0)
    generator = torch.Generator().manual_seed(0)
    metrics = evaluate_vae(model, _test_batches(splits, model, 100, args.nll_images), num_samples=args.nll_samples,
                           binarize="dynamic", generator=generator)  # fmt: skip
    return {"vae_nll_nats": metrics["nll"], "vae_nll_bits_per_dim": metrics["nll_bits_per_dim"],
            "vae_elbo_nats": metrics["elbo"], "vae_nll_images": metrics["num_images"],
            "vae_nll_samples": args.nll_samples}  # fmt: skip


def vae_frey(args, datasets: Path) -> dict:
    data = DataArguments(dataset_name=str(datasets / "frey_faces"), eval_fraction=0.1, max_eval_samples=None)
    folder = _train(Path(args.output_dir) / "vae-frey", ModelArguments(model="vae", preset="frey-paper"), data,
                    max_train_steps=args.frey_steps, train_batch_size=100, learning_rate=1e-3)  # fmt: skip
    model = VAEModel.from_pretrained(folder).eval()
    splits = load_image_splits(data, seed=0)
    metrics = evaluate_vae(model, _test_batches(splits, model, 100, 64 if args.quick else None))
    return {"frey_elbo_nats": metrics["elbo"], "frey_test_images": metrics["num_images"]}


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    datasets = Path(args.datasets)
    if not (datasets / "mnist").is_dir():
        raise SystemExit(f"{datasets / 'mnist'} is absent: this benchmark reads the shared MNIST and Frey Face folders")
    results, seconds = {}, {}
    for name, run in (("vqvae_mnist", vqvae_mnist), ("vae_mnist", vae_mnist), ("vae_frey", vae_frey)):
        start = time.time()
        results.update(run(args, datasets))
        seconds[name] = round(time.time() - start, 1)
    results = to_jsonable({**results, "seconds": seconds, "quick": args.quick, "steps": {
        "vqvae": args.vqvae_steps, "vae": args.vae_steps, "frey": args.frey_steps}})  # fmt: skip
    _print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def _print_table(results: dict) -> None:
    rows = [
        ("VQ-VAE mnist: normalised MSE (test)", results["vqvae_normalized_mse"], "<= 0.0444"),
        ("VQ-VAE mnist: codebook usage (test)", results["vqvae_codebook_usage"], "> 0.90"),
        ("VAE mnist-paper: test NLL, nats (k=%d)" % results["vae_nll_samples"], results["vae_nll_nats"], "<= 95"),
        ("VAE mnist-paper: test ELBO, nats", results["vae_elbo_nats"], "reported"),
        ("VAE frey-paper: held-out ELBO, nats", results["frey_elbo_nats"], "reported"),
    ]
    met = {0: results["vqvae_normalized_mse"] <= 0.0444, 1: results["vqvae_codebook_usage"] > 0.90,
           2: results["vae_nll_nats"] <= 95.0}  # fmt: skip
    print(f"{'figure':<44}{'value':>12}  target")
    for index, (name, value, target) in enumerate(rows):
        verdict = "" if index not in met else ("PASS" if met[index] else "MISS")
        print(f"{name:<44}{value:>12.4f}  {target} {verdict}")
    print(f"seconds per part: {results['seconds']}")


if __name__ == "__main__":
    main(parse_args())
