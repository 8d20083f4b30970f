"""Generating CIFAR-10 images: the two-level prior of VQ-VAE-2, judged by offline sample-quality metrics.

Parts, each runnable alone with `--parts` (a part reuses what an earlier run of it left in `--output_dir`: a finished
model folder, a codes dataset, a features file):

1. `vq`: the VQ models. VQ-VAE-2 `cifar10` (top 4x4, bottom 8x8, K = 512: 720 bits per image) and, for the
   comparison, a single-level VQ-VAE `cifar10` with K = 2048 (8x8 x 11 bits = 704 bits), both trained by
   `scripts/train.py` (`--vq_steps`, batch 32, learning rate 3e-4; `quality_cifar10.py --parts hierarchy` trains the
   same two). `--vqvae2 DIR` / `--vqvae DIR` use trained ones instead.
2. `codes`: `scripts/extract_codes.py` on the 50,000 training and 10,000 test images of each.
3. `priors`: `scripts/train.py --model pixelcnn-prior` on those codes: the top prior (`vqvae2-cifar10-top`: causal
   self-attention, class-conditional), the bottom prior (`vqvae2-cifar10-bottom`: conditioned on the top codes,
   class-conditional) and, for the single-level VQ-VAE, one class-conditional prior over its 8x8 codes with about
   as many parameters as the two together. NLL in nats per code on the test codes and on 10,000 training codes (the
   VQ-VAE-2 paper's Table 1 reports 3.40 / 3.41 top and 3.45 / 3.45 bottom on ImageNet: the point is the gap).
4. `judge`: `scripts/train_classifier.py` on CIFAR-10 (a small ResNet): the feature network of the metrics and the
   judge of rejection sampling; its test accuracy.
5. `samples`: class-conditional samples (the same number per class) of both models, and the metrics of
   `hf_vqvae.evaluation.sample_quality` in the judge's feature space (penultimate layer): Fréchet distance ("FD
   (CIFAR-10 ResNet features)", not Inception FID), KID, precision and recall (k = 3), each set against the 10,000
   test images. Rows: training images (the floor), reconstructions of those by each VQ model (what its decoder
   allows its samples at best), VQ-VAE-2 images with the top codes of those and bottom codes sampled by the bottom
   prior (how much of the samples' distance the bottom prior causes), VQ-VAE-2 samples, single-level VQ-VAE
   samples, and VQ-VAE-2 samples after classifier-based rejection sampling (VQ-VAE-2 §3.3), keeping the top
   fraction by the judge's p(class) in each class (every row has the same number of images, so the rows compare).
   Then CAS (Classification Accuracy Score): a fresh classifier trained only on samples, tested on the real test
   set, beside the same classifier trained on as many real training images. Writes the class-conditional sample
   grid (one row per class) and the quality/diversity trade-off plot (precision and recall against the kept
   fraction; the paper's Fig. 5) as PNG files.

`--device` (default: CUDA when there is a GPU) is where the judge trains and the samples part runs; the VQ models
and the priors train through Accelerate, on its device.

Usage:

    .venv/bin/python benchmarks/samples_cifar10.py --json samples.json      # all parts
    .venv/bin/python benchmarks/samples_cifar10.py --parts samples --json s.json
    .venv/bin/python benchmarks/samples_cifar10.py --quick                  # smoke run, a few minutes
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import extract_codes  # noqa: E402
import train as train_script  # noqa: E402
import train_classifier  # noqa: E402

from hf_vqvae import PixelCNNPriorModel, VQVAE2Pipeline  # noqa: E402
from hf_vqvae.devices import add_device_argument, resolve_device  # noqa: E402
from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits  # noqa: E402
from hf_vqvae.data.codes import code_batches, load_codes  # noqa: E402
from hf_vqvae.evaluation.sample_quality import FeatureNetwork, classification_accuracy_score, compare  # noqa: E402
from hf_vqvae.pipelines import ClassifierJudge  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "cifar10_jpeg"
PARTS = ("vq", "codes", "priors", "judge", "samples")
CLASSES = 10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default=str(DATASET), help="CIFAR-10 (Hub layout: train and test parquet)")
    parser.add_argument("--output_dir", default="outputs/samples-cifar10", help="models, codes, features, PNGs")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run, in order")
    parser.add_argument("--vqvae2", default=None, help="a trained VQ-VAE-2 `cifar10` folder (skips its training)")
    parser.add_argument("--vqvae", default=None, help="a trained single-level VQ-VAE (K = 2048) folder")
    parser.add_argument("--vq_steps", type=int, default=2500, help="training steps of each VQ model")
    parser.add_argument("--prior_hidden_channels", type=int, default=64,
                        help="width of every prior (the presets' is 128: a GPU's budget)")  # fmt: skip
    parser.add_argument("--top_steps", type=int, default=2000, help="training steps of the top prior")
    parser.add_argument("--bottom_steps", type=int, default=1000, help="training steps of the bottom prior")
    parser.add_argument("--single_steps", type=int, default=1000, help="training steps of the single-level prior")
    parser.add_argument("--prior_batch_size", type=int, default=128)
    parser.add_argument("--prior_learning_rate", type=float, default=1e-3)
    parser.add_argument("--judge_steps", type=int, default=2000, help="training steps of the judge classifier")
    parser.add_argument("--samples_per_class", type=int, default=150, help="images per class in every metrics row")
    parser.add_argument("--keep_fractions", type=float, nargs="+", default=[0.5, 0.25, 0.1],
                        help="rejection sampling: the top fractions kept by the judge's p(class)")  # fmt: skip
    parser.add_argument("--cas_steps", type=int, default=1000, help="training steps of each CAS classifier")
    parser.add_argument("--sample_batch_size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    add_device_argument(parser)  # the judge and the samples part; the VQ models and priors train through Accelerate
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps, a few images")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.vq_steps, args.top_steps, args.bottom_steps, args.single_steps = 3, 3, 3, 3
        args.judge_steps, args.cas_steps, args.samples_per_class, args.prior_hidden_channels = 3, 3, 4, 8
        args.max_samples = 200
    else:
        args.max_samples = None
    unknown = [part for part in args.parts.split(",") if part not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    if any(not 0 < fraction < 1 for fraction in args.keep_fractions):
        parser.error("--keep_fractions must lie in (0, 1)")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Parts 1-4: models
# ----------------------------------------------------------------------------------------------------------------


def _done(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and (folder / "model.safetensors").is_file()


def _run_training(folder: Path, arguments: list[str]) -> dict:
    """scripts/train.py into `folder` unless a finished run is there; returns its metrics.json."""
    if not _done(folder):
        train_script.main(train_script.parse_args([*arguments, "--report_to", "none", "--seed", "0",
                                                   "--output_dir", str(folder)]))  # fmt: skip
    return json.loads((folder / "metrics.json").read_text())


def vq_part(args, paths: dict) -> dict:
    common = ["--dataset_name", args.dataset, "--max_train_steps", str(args.vq_steps), "--train_batch_size", "32",
              "--learning_rate", "3e-4", "--max_eval_samples", "2000"]  # fmt: skip
    results = {}
    if args.vqvae2 is None:
        results["vqvae2"] = _run_training(paths["vqvae2"], ["--model", "vqvae2", "--preset", "cifar10", *common])
    if args.vqvae is None:
        arguments = ["--model", "vqvae", "--preset", "cifar10", "--num_embeddings", "2048", *common]
        results["vqvae"] = _run_training(paths["vqvae"], arguments)
    return {name: _training_summary(metrics) for name, metrics in results.items()}


def _training_summary(metrics: dict) -> dict:
    training = metrics.get("training", {})
    keys = ("normalized_mse", "psnr", "nll_nats_per_code", "bits_per_dim", "accuracy")
    return {"steps": training.get("steps"), "wall_time_s": training.get("wall_time_s"),
            **{key: metrics[key] for key in keys if key in metrics}}  # fmt: skip


def codes_part(args, paths: dict) -> dict:
    out = {}
    for name in ("vqvae2", "vqvae"):
        folder = paths[f"codes_{name}"]
        if not (folder / "codes_info.json").is_file():
            start = time.perf_counter()
            arguments = ["--model", str(paths[name]), "--dataset_name", args.dataset, "--output_dir", str(folder)]
            if args.max_samples:
                arguments += ["--max_samples", str(args.max_samples)]
            extract_codes.main(extract_codes.parse_args(arguments))
            out[f"{name}_seconds"] = time.perf_counter() - start
        out[name] = json.loads((folder / "codes_info.json").read_text())["splits"]
    return out


def _prior_arguments(args, preset: str, codes: Path, level: int, steps: int, extra=(), width=None) -> list[str]:
    width = str(width or args.prior_hidden_channels)
    return ["--model", "pixelcnn-prior", "--preset", preset, "--codes_dataset", str(codes), "--level", str(level),
            "--max_train_steps", str(steps), "--train_batch_size", str(args.prior_batch_size),
            "--learning_rate", str(args.prior_learning_rate), "--lr_warmup_steps", "100",
            "--adam_weight_decay", "0.1", "--hidden_channels", width, *extra]  # fmt: skip


def single_prior_width(args) -> int:
    """Width of the single-level prior that gives it about the parameters of the top and bottom priors together."""
    from hf_vqvae import PixelCNNPriorConfig

    def size(preset: str, **overrides) -> int:
        model = PixelCNNPriorModel(PixelCNNPriorConfig.from_preset(preset, **overrides))
        return sum(p.numel() for p in model.parameters())

    width = args.prior_hidden_channels
    target = size("vqvae2-cifar10-top", hidden_channels=width) + size(
        "vqvae2-cifar10-bottom", hidden_channels=width, condition_hidden_channels=width)
    candidates = range(8, 4 * width + 1, 8)
    single = lambda w: size("vqvae2-cifar10-bottom", hidden_channels=w, num_embeddings=2048, condition_num_embeddings=0)  # noqa: E731
    return min(candidates, key=lambda w: abs(single(w) - target))


def priors_part(args, paths: dict) -> dict:
    width = str(args.prior_hidden_channels)
    runs = {
        "top": _prior_arguments(args, "vqvae2-cifar10-top", paths["codes_vqvae2"], 0, args.top_steps),
        "bottom": _prior_arguments(args, "vqvae2-cifar10-bottom", paths["codes_vqvae2"], 1, args.bottom_steps,
                                   ["--condition_hidden_channels", width]),
        "single": _prior_arguments(args, "vqvae2-cifar10-bottom", paths["codes_vqvae"], 0, args.single_steps,
                                   ["--condition_num_embeddings", "0", "--num_embeddings", "2048"],
                                   width=single_prior_width(args)),
    }  # fmt: skip
    results = {}
    for name, arguments in runs.items():
        metrics = _run_training(paths[f"prior_{name}"], arguments)
        model = PixelCNNPriorModel.from_pretrained(paths[f"prior_{name}"])
        codes = paths["codes_vqvae" if name == "single" else "codes_vqvae2"]
        level = 1 if name == "bottom" else 0
        results[name] = {**_training_summary(metrics), "parameters": sum(p.numel() for p in model.parameters()),
                         "test_nll": metrics["nll_nats_per_code"],
                         "train_nll": prior_nll(model, codes, level, "train", max_maps=10_000)}  # fmt: skip
    return results


@torch.no_grad()
def prior_nll(model, codes_folder: Path, level: int, split: str, max_maps: int) -> float:
    """Mean cross-entropy in nats per code of `model` on the first `max_maps` code maps of `split`."""
    dataset, _ = load_codes(codes_folder)
    data = dataset[split].select(range(min(max_maps, len(dataset[split]))))
    model.eval()
    total, count = 0.0, 0
    for batch in code_batches(data, level, batch_size=500, seed=0, epoch=0, shuffle=False, drop_last=False,
                              with_labels=model.config.num_classes > 0):  # fmt: skip
        logits = model(**batch).logits
        total += float(F.cross_entropy(logits, batch["codes"], reduction="sum"))
        count += batch["codes"].numel()
    return total / count


def judge_part(args, paths: dict) -> dict:
    folder = paths["judge"]
    if not (folder / "metrics.json").is_file():
        train_classifier.main(train_classifier.parse_args([
            "--dataset_name", args.dataset, "--image_size", "32", "--num_channels", "3", "--hidden_sizes", "64", "128",
            "--max_train_steps", str(args.judge_steps), "--batch_size", "128", "--output_dir", str(folder),
            "--seed", str(args.seed), "--device", str(resolve_device(args.device)),
            *(["--max_eval_samples", "200"] if args.quick else []),
        ]))  # fmt: skip
    return json.loads((folder / "metrics.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# Part 5: samples and their metrics
# ----------------------------------------------------------------------------------------------------------------


def real_images(args, split: str, count: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images of `split` drawn at random (all when None), in [0, 1] (N, 3, 32, 32), and their labels."""
    limit = {"max_train_samples": count} if split == "train" else {"max_eval_samples": count}
    splits = load_image_splits(DataArguments(dataset_name=args.dataset, **limit), seed=seed)
    dataset = splits.train if split == "train" else splits.eval
    images, labels = [], []
    for batch in batches_for_rank(dataset, splits.image_column, ImageTransform(32, 3, (0.0, 1.0)), batch_size=500,
                                  seed=seed, epoch=0, shuffle=False, drop_last=False, columns=("label",)):  # fmt: skip
        images.append(batch["pixel_values"]), labels.append(batch["label"])
    return torch.cat(images), torch.cat(labels)


def generate(pipe, labels: list[int], batch_size: int, seed: int) -> torch.Tensor:
    """Class-conditional samples of `pipe` for `labels`, in [0, 1] (N, 3, H, W), on the CPU."""
    generator, images = torch.Generator(device=pipe.device).manual_seed(seed), []
    for start in range(0, len(labels), batch_size):
        chunk = labels[start : start + batch_size]
        out = pipe(len(chunk), class_labels=chunk, generator=generator, output_type="np").images
        images.append(torch.from_numpy(np.ascontiguousarray(out)).permute(0, 3, 1, 2).float())
    return torch.cat(images)


def class_labels(per_class: int) -> list[int]:
    return [label for label in range(CLASSES) for _ in range(per_class)]


@torch.no_grad()
def reconstruct(vqvae, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    out = [((vqvae(batch.to(vqvae.device) * 2 - 1).reconstruction + 1) / 2).clamp(0, 1).cpu()
           for batch in images.split(batch_size)]  # fmt: skip
    return torch.cat(out)


@torch.no_grad()
def codes_below_real_top(pipe, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> list:
    """Codes per level (top first): the top codes of `images` (in [0, 1]) kept, every lower level sampled by its prior
    given them and the class `labels`."""
    encoded = pipe.vqvae.encode(images.to(pipe.vqvae.device) * 2 - 1).codes
    keep = [torch.full_like(code, level == 0, dtype=torch.bool) for level, code in enumerate(encoded)]
    return pipe.sample_codes(len(images), [code.shape[-2:] for code in encoded], labels.to(pipe.vqvae.device),
                             generator=generator, fixed_codes=encoded, fixed_masks=keep)  # fmt: skip


@torch.no_grad()
def sample_below_real_top(pipe, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> torch.Tensor:
    """Images decoded from `codes_below_real_top`, in [0, 1]: how far these lie from the test set is the part of the
    samples' distance that the priors below the top cause (the top prior's share is what the samples add)."""
    generator, out = torch.Generator(device=pipe.device).manual_seed(seed), []
    for chunk, chunk_labels in zip(images.split(batch_size), labels.split(batch_size)):
        codes = codes_below_real_top(pipe, chunk, chunk_labels, generator)
        out.append(((pipe.vqvae.decode_code(codes) + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(out)


def keep_top(probabilities: torch.Tensor, labels: torch.Tensor, fraction: float, per_class: int) -> torch.Tensor:
    """Indices of rejection sampling at `fraction`: in each class, the `per_class` most confident of the first
    `per_class / fraction` samples (the pools nest, so every row has `per_class` images per class)."""
    keep = []
    for label in range(CLASSES):
        pool = (labels == label).nonzero().squeeze(1)[: round(per_class / fraction)]
        keep.append(pool[probabilities[pool].argsort(descending=True)[:per_class]])
    return torch.cat(keep)


def samples_part(args, paths: dict) -> dict:
    vqvae2_pipe = VQVAE2Pipeline.from_pretrained(paths["pipeline"]) if (paths["pipeline"] / "model_index.json").is_file() else None
    if vqvae2_pipe is None:
        vqvae2_pipe = _assemble(paths, "vqvae2", ["prior_top", "prior_bottom"])
        vqvae2_pipe.save_pretrained(paths["pipeline"])
    single_pipe = _assemble(paths, "vqvae", ["prior_single"])
    device = resolve_device(args.device)
    for pipe in (vqvae2_pipe, single_pipe):
        pipe.to(device).set_progress_bar_config(disable=True)
    judge = ClassifierJudge.from_pretrained(paths["judge"])
    judge.model.to(device)
    features = FeatureNetwork(judge)  # the judge's penultimate layer, named after its folder
    per_class = args.samples_per_class
    timings = {}

    test_images, test_labels = real_images(args, "test", None if not args.quick else 200, args.seed)
    reference = features.features(test_images)
    train_images, train_labels = real_images(args, "train", per_class * CLASSES, args.seed)

    start = time.perf_counter()
    largest_pool = class_labels(round(per_class / min(args.keep_fractions)))
    pool = generate(vqvae2_pipe, largest_pool, args.sample_batch_size, args.seed)
    timings["vqvae2_samples_s"] = time.perf_counter() - start
    pool_labels = torch.tensor(largest_pool)
    start = time.perf_counter()
    single = generate(single_pipe, class_labels(per_class), args.sample_batch_size, args.seed)
    timings["vqvae_samples_s"] = time.perf_counter() - start
    with torch.no_grad():
        confidence = torch.cat([judge(batch).softmax(-1).cpu() for batch in pool.split(500)])
    probability = confidence[torch.arange(len(pool)), pool_labels]
    plain = keep_top(torch.zeros(len(pool)), pool_labels, 1.0, per_class)  # the first per_class of each class

    in_class_order = torch.tensor(class_labels(per_class))  # the samples' rows hold per_class of each class, in order
    rows = {"training images (floor)": (train_images, train_labels),
            "VQ-VAE-2 reconstructions of those": (reconstruct(vqvae2_pipe.vqvae, train_images), train_labels),
            "VQ-VAE K=2048 reconstructions of those": (reconstruct(single_pipe.vqvae, train_images), train_labels),
            "VQ-VAE-2, real top codes + sampled bottom": (sample_below_real_top(
                vqvae2_pipe, train_images, train_labels, args.sample_batch_size, args.seed), train_labels),
            "VQ-VAE-2 samples (top + bottom prior)": (pool[plain], in_class_order),
            "VQ-VAE K=2048 samples (one prior)": (single, in_class_order)}  # fmt: skip
    for fraction in sorted(args.keep_fractions, reverse=True):
        kept = keep_top(probability, pool_labels, fraction, per_class)
        rows[f"VQ-VAE-2 samples, rejection: top {fraction:g}"] = (pool[kept], in_class_order)
    metric_name = f"FD ({features.name} features)"
    table = {}
    for name, (images, labels) in rows.items():
        table[name] = {**compare(reference, features.features(images), seed=args.seed), "images": len(images),
                       "judge_accuracy": _judge_accuracy(judge, images, labels)}  # fmt: skip
        print(f"{name:50s} {metric_name} {table[name]['fd']:8.2f}  KID {table[name]['kid_mean']:.4f}  "
              f"precision {table[name]['precision']:.3f}  recall {table[name]['recall']:.3f}", flush=True)
    cas = cas_rows(args, pool, pool_labels, test_images, test_labels, device)
    grid_path = write_grid(pool, pool_labels, Path(args.output_dir) / "samples_grid.png")
    plot_path = write_tradeoff_plot(table, Path(args.output_dir) / "tradeoff.png")
    return {"metric": metric_name, "reference": f"CIFAR-10 test set ({len(test_images)} images)", "rows": table,
            "cas": cas, "timings": timings, "pool": len(pool), "grid": str(grid_path), "plot": str(plot_path)}  # fmt: skip


@torch.no_grad()
def _judge_accuracy(judge, images: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = torch.cat([judge(batch).argmax(-1).cpu() for batch in images.split(500)])
    return float((predictions == labels).float().mean())


def _assemble(paths: dict, vq: str, priors: list[str]) -> VQVAE2Pipeline:
    from transformers import AutoModel

    import hf_vqvae  # noqa: F401  (registers the model types with the Auto classes)

    components = {f"prior_level_{level}": PixelCNNPriorModel.from_pretrained(paths[name]).eval()
                  for level, name in enumerate(priors)}  # fmt: skip
    return VQVAE2Pipeline(vqvae=AutoModel.from_pretrained(paths[vq]).eval(), **components)


def cas_rows(args, pool, pool_labels, test_images, test_labels, device) -> dict:
    """CAS: the judge's architecture trained from scratch on samples only, and on as many real training images."""
    real_images_, real_labels = real_images(args, "train", len(pool), args.seed + 1)

    def build():
        return train_classifier.build_classifier(3, [str(c) for c in range(CLASSES)], (64, 128)).to(device)

    settings = dict(build_model=build, steps=args.cas_steps, batch_size=128, learning_rate=1e-3, seed=args.seed)
    return {
        "train_images": len(pool),
        "samples": classification_accuracy_score(pool, pool_labels, test_images, test_labels, **settings),
        "real": classification_accuracy_score(real_images_, real_labels, test_images, test_labels, **settings),
    }


# ----------------------------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------------------------


def write_grid(images: torch.Tensor, labels: torch.Tensor, path: Path, per_row: int = 10, scale: int = 2) -> Path:
    """One row per class: the first `per_row` samples of each class, each image enlarged `scale` times."""
    size = images.shape[-1] * scale
    grid = Image.new("RGB", (per_row * size, CLASSES * size))
    for label in range(CLASSES):
        for column, index in enumerate((labels == label).nonzero().squeeze(1)[:per_row].tolist()):
            pixels = (images[index].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)
            grid.paste(tile, (column * size, label * size))
    grid.save(path)
    return path


def write_tradeoff_plot(table: dict, path: Path, width: int = 480, height: int = 320) -> Path:
    """Precision and recall of the VQ-VAE-2 samples against the kept fraction (1 = no rejection), as in the paper's
    Fig. 5: a small line plot drawn with PIL (the project needs no plotting library)."""
    points = [(1.0, row) for name, row in table.items() if name.startswith("VQ-VAE-2 samples (")]
    points += [(float(name.rsplit(" ", 1)[1]), row) for name, row in table.items() if "rejection" in name]
    points.sort(key=lambda point: -point[0])
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 50, 20, width - 130, height - 40
    draw.rectangle((left, top, right, bottom), outline="black")
    xs = [math.log2(fraction) for fraction, _ in points]
    span = (min(xs) - 0.5, 0.5)
    to_x = lambda x: left + (x - span[0]) / (span[1] - span[0]) * (right - left)  # noqa: E731
    to_y = lambda y: bottom - y * (bottom - top)  # noqa: E731
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.text((left - 35, to_y(tick) - 6), f"{tick:.2f}", fill="black")
    for fraction, _ in points:
        draw.text((to_x(math.log2(fraction)) - 10, bottom + 8), f"{fraction:g}", fill="black")
    draw.text(((left + right) // 2 - 50, bottom + 22), "kept fraction (log scale)", fill="black")
    for key, colour in (("precision", "blue"), ("recall", "red")):
        line = [(to_x(math.log2(fraction)), to_y(row[key])) for fraction, row in points]
        draw.line(line, fill=colour, width=2)
        for x, y in line:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((right + 10, line[-1][1] - 6), key, fill=colour)
    image.save(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def paths_for(args) -> dict:
    out = Path(args.output_dir)
    return {"vqvae2": Path(args.vqvae2) if args.vqvae2 else out / "vqvae2", "vqvae": Path(args.vqvae) if args.vqvae
            else out / "vqvae-k2048", "codes_vqvae2": out / "codes-vqvae2", "codes_vqvae": out / "codes-vqvae-k2048",
            "prior_top": out / "prior-top", "prior_bottom": out / "prior-bottom", "prior_single": out / "prior-single",
            "judge": out / "judge", "pipeline": out / "pipeline-vqvae2"}  # fmt: skip


# What each part reads that an earlier part writes (a part run alone needs them in --output_dir or given).
NEEDS = {"codes": ("vqvae2", "vqvae"), "priors": ("codes_vqvae2", "codes_vqvae"),
         "samples": ("vqvae2", "vqvae", "prior_top", "prior_bottom", "prior_single", "judge")}  # fmt: skip
MADE_BY = {"vqvae2": "vq", "vqvae": "vq", "codes_vqvae2": "codes", "codes_vqvae": "codes", "prior_top": "priors",
           "prior_bottom": "priors", "prior_single": "priors", "judge": "judge"}  # fmt: skip


def check_inputs(parts: list[str], paths: dict) -> None:
    """Stop before any work when a part would read what no earlier part of this run makes and is not there."""
    for index, part in enumerate(parts):
        for name in NEEDS.get(part, ()):
            if MADE_BY[name] not in parts[:index] and not paths[name].exists():
                raise SystemExit(f"part {part} reads {paths[name]}, which is absent: run the part {MADE_BY[name]!r} "
                                 f"first (--parts {MADE_BY[name]},{part}) or point --output_dir at the folder of "
                                 "an earlier run")  # fmt: skip


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    for flag in ("vqvae2", "vqvae"):
        given = getattr(args, flag)
        if given is not None and not Path(given).exists():
            raise SystemExit(f"--{flag} {given} is absent: give the folder of a trained model, or leave --{flag} out "
                             "and the part 'vq' trains one")  # fmt: skip
    if not (Path(args.dataset) / "data").is_dir():
        raise SystemExit(f"{args.dataset} is absent: this benchmark reads the shared CIFAR-10 (Hub layout)")
    paths = paths_for(args)
    check_inputs(args.parts.split(","), paths)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    parts = {"vq": vq_part, "codes": codes_part, "priors": priors_part, "judge": judge_part, "samples": samples_part}
    config = {key: value for key, value in vars(args).items() if key != "json"}
    results = {"config": {**config, "device": str(resolve_device(args.device))}}
    for name in args.parts.split(","):
        start = time.perf_counter()
        results[name] = parts[name](args, paths)
        results[f"{name}_seconds"] = time.perf_counter() - start
        print(f"part {name}: {results[f'{name}_seconds']:.0f} s", flush=True)
        if args.json:  # after every part: nothing is lost when a later part fails
            Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps({key: value for key, value in results.items() if key != "config"}, indent=2, default=float))
    return results


if __name__ == "__main__":
    main(parse_args())
