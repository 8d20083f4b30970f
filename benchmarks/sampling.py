"""Sampling speed of the priors: naive vs cached PixelCNN, transformer without vs with the KV cache.

Public PixelCNN implementations re-run the whole network once per position (32x32 = 1,024 full passes); ours
reuses the computation of earlier positions and gives exactly the same codes. In one run, on the same models and
seeds (batch 8, 2 threads by default), this times:

* PixelCNN prior, naive (`use_cache=False`) and cached (`use_cache=True`), on 32x32 and 64x64 code maps;
* the transformer prior through `generate()` without and with its KV cache, on a 32x32 map;
* the two-level CIFAR-10 pipeline (`VQVAE2Pipeline`: the `cifar10` VQ-VAE-2 with the `vqvae2-cifar10-top` and
  `vqvae2-cifar10-bottom` priors, class-conditional): the whole ancestral sampler, 4x4 top codes then 8x8 bottom
  codes read by the bottom prior, then the decoder, as images/s at batch 64, naive and cached. Random weights of
  the presets' size by default (the speed does not depend on the weights); `--pipeline DIR` times a trained one.

The naive sampler at 64x64 runs 4,096 full passes over a 64x64 map (about an hour on a 2-core CPU even for the
small model), so by default its time is estimated as 4,096 x the measured time of one such pass plus the sampling
step (`pixelcnn_naive_64_estimated: true` in the JSON); `--full_naive_64` runs it in full instead.

Target: cached PixelCNN >= 10x faster than naive at 32x32. Usage:

    .venv/bin/python benchmarks/sampling.py --json sampling.json
    .venv/bin/python benchmarks/sampling.py --quick          # smoke run (8x8 maps), seconds
    .venv/bin/python benchmarks/sampling.py --two_level_only --pipeline outputs/samples-cifar10/pipeline-vqvae2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hf_vqvae import (
    PixelCNNPriorConfig,
    PixelCNNPriorModel,
    TransformerPriorConfig,
    TransformerPriorModel,
    VQVAE2Config,
    VQVAE2Model,
    VQVAE2Pipeline,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    mnist = PixelCNNPriorConfig.from_preset("mnist")
    parser.add_argument("--hidden_channels", type=int, default=mnist.hidden_channels,
                        help="PixelCNN width (the mnist preset's)")
    parser.add_argument("--num_layers", type=int, default=mnist.num_layers,
                        help="PixelCNN gated layers (the mnist preset's)")
    parser.add_argument("--num_embeddings", type=int, default=mnist.num_embeddings,
                        help="codebook size K (the mnist preset's)")
    parser.add_argument("--full_naive_64", action="store_true", help="run the 64x64 naive sampler in full (slow)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="square code-map sizes for the PixelCNN")
    parser.add_argument("--transformer_size", type=int, default=32)
    parser.add_argument("--two_level_batch_size", type=int, default=64, help="images per call of the CIFAR-10 pipeline")
    parser.add_argument("--pipeline", default=None,
                        help="a trained two-level VQVAE2Pipeline folder to time (default: random weights, the presets' size)")
    parser.add_argument("--two_level_only", action="store_true", help="time only the two-level CIFAR-10 pipeline")
    parser.add_argument("--quick", action="store_true", help="8x8 maps and small models, for a smoke test")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.transformer_size, args.hidden_channels, args.num_layers = [8, 8], 8, 16, 2
        args.full_naive_64, args.two_level_batch_size = True, 4
    return args


def pixelcnn(args) -> PixelCNNPriorModel:
    config = PixelCNNPriorConfig(num_embeddings=args.num_embeddings, hidden_channels=args.hidden_channels,
                                 num_layers=args.num_layers, num_classes=10)  # fmt: skip
    torch.manual_seed(0)
    return PixelCNNPriorModel(config).eval()


def transformer(args) -> TransformerPriorModel:
    size = args.transformer_size
    config = TransformerPriorConfig.from_preset("mnist", num_embeddings=args.num_embeddings, code_shape=[size, size])
    torch.manual_seed(0)
    return TransformerPriorModel(config).eval()


def timed_sample(model, args, size, use_cache: bool) -> tuple[float, torch.Tensor]:
    shape = (size, size) if isinstance(size, int) else tuple(size)
    labels = torch.arange(args.batch_size) % 10
    start = time.perf_counter()
    codes = model.sample(args.batch_size, shape=shape, class_labels=labels, use_cache=use_cache,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    return time.perf_counter() - start, codes


@torch.no_grad()
def estimated_naive(model, args, size: int, repeats: int = 3, check_rows: int = 2) -> tuple[float, int]:
    """Naive sampling time on a size x size map: positions x (one full forward pass + one draw), measured.

    Returns the estimate and how many first rows to sample naively for the same-codes check (the first rows of a
    map are sampled identically whatever its height: the model is causal and draws in raster order).
    """
    codes = torch.zeros(args.batch_size, size, size, dtype=torch.long)
    labels = torch.arange(args.batch_size) % 10
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        logits = model(codes, class_labels=labels).logits[:, :, 0, 0]
        torch.multinomial(torch.softmax(logits, dim=-1), 1)
        passes.append(time.perf_counter() - start)
    return sorted(passes)[repeats // 2] * size * size, check_rows


def cifar10_pipeline(args) -> VQVAE2Pipeline:
    """The trained `--pipeline`, else the `cifar10` VQ-VAE-2 and its two prior presets with random weights."""
    if args.pipeline:
        return VQVAE2Pipeline.from_pretrained(args.pipeline)
    small = dict(hidden_channels=8, num_layers=2)
    top_size = dict(small, num_attention_layers=1) if args.quick else {}
    bottom_size = dict(small, condition_hidden_channels=8, condition_num_residual_blocks=1) if args.quick else {}
    torch.manual_seed(0)
    vqvae = VQVAE2Model(VQVAE2Config.from_preset("cifar10")).eval()
    top = PixelCNNPriorModel(PixelCNNPriorConfig.from_preset("vqvae2-cifar10-top", **top_size)).eval()
    bottom = PixelCNNPriorModel(PixelCNNPriorConfig.from_preset("vqvae2-cifar10-bottom", **bottom_size)).eval()
    return VQVAE2Pipeline(vqvae=vqvae, prior_level_0=top, prior_level_1=bottom)


@torch.no_grad()
def timed_pipeline(pipe: VQVAE2Pipeline, batch_size: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    """Seconds for the whole ancestral sampler (top codes, bottom codes, decoder) on one batch, and the images."""
    num_classes = pipe.prior_level_0.config.num_classes
    labels = torch.arange(batch_size) % num_classes if num_classes else None
    shapes = pipe.vqvae.config.latent_shapes()
    start = time.perf_counter()
    codes = pipe.sample_codes(batch_size, shapes, labels, generator=torch.Generator().manual_seed(0), use_cache=use_cache)
    images = pipe.vqvae.decode_code(codes)
    return time.perf_counter() - start, images


def two_level_rows(args) -> dict:
    pipe = cifar10_pipeline(args)
    batch = args.two_level_batch_size
    cached_s, cached = timed_pipeline(pipe, batch, use_cache=True)
    naive_s, naive = timed_pipeline(pipe, batch, use_cache=False)
    top, bottom = pipe.prior_level_0.config, pipe.prior_level_1.config
    return {"two_level_cached_images_per_s": batch / cached_s, "two_level_naive_images_per_s": batch / naive_s,
            "two_level_cached_s": cached_s, "two_level_naive_s": naive_s, "two_level_speedup": naive_s / cached_s,
            "two_level_same_images": bool(torch.equal(cached, naive)),
            "two_level_model": {"pipeline": args.pipeline or "random weights (presets)", "batch_size": batch,
                                "code_shapes": [list(s) for s in pipe.vqvae.config.latent_shapes()],
                                "top": f"{top.num_layers} layers x {top.hidden_channels}, {top.num_attention_layers} attention blocks",
                                "bottom": f"{bottom.num_layers} layers x {bottom.hidden_channels}"}}  # fmt: skip


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.two_level_only:
        results = two_level_rows(args)
        _print_two_level(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return results
    results, same = {}, {}
    prior = pixelcnn(args)
    for key, size in zip(("32", "64"), args.sizes):
        cached_s, cached = timed_sample(prior, args, size, use_cache=True)
        if key == "64" and not args.full_naive_64:
            naive_s, rows = estimated_naive(prior, args, size)
            _, first_rows = timed_sample(prior, args, (rows, size), use_cache=False)  # the same first rows
            naive = cached[:, :rows]
            cached, naive = naive, first_rows
        else:
            naive_s, naive = timed_sample(prior, args, size, use_cache=False)
        results[f"pixelcnn_naive_s_{key}"], results[f"pixelcnn_cached_s_{key}"] = naive_s, cached_s
        same[f"pixelcnn_{key}"] = bool(torch.equal(naive, cached))
    results["pixelcnn_naive_64_estimated"] = not args.full_naive_64
    model = transformer(args)
    cache_s, with_cache = timed_sample(model, args, args.transformer_size, use_cache=True)
    nocache_s, without = timed_sample(model, args, args.transformer_size, use_cache=False)
    results["transformer_nocache_s_32"], results["transformer_cache_s_32"] = nocache_s, cache_s
    same["transformer_32"] = bool(torch.equal(with_cache, without))
    results["pixelcnn_speedup_32"] = results["pixelcnn_naive_s_32"] / results["pixelcnn_cached_s_32"]
    results["pixelcnn_speedup_64"] = results["pixelcnn_naive_s_64"] / results["pixelcnn_cached_s_64"]
    results["transformer_speedup_32"] = nocache_s / cache_s
    results["identical_codes"] = same
    results.update(two_level_rows(args))
    results["config"] = {k: v for k, v in vars(args).items() if k != "json"}
    _print(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def _print(results: dict, args) -> None:
    print(f"batch {args.batch_size}, {args.threads} threads; PixelCNN {args.num_layers} layers x {args.hidden_channels}, "
          f"K = {args.num_embeddings}; maps {args.sizes} (keys _32/_64)")  # fmt: skip
    print(f"{'model':<28}{'without cache s':>17}{'with cache s':>14}{'speed-up':>10}  same codes")
    for name, key, off, on in (("PixelCNN _32", "pixelcnn_32", "pixelcnn_naive_s_32", "pixelcnn_cached_s_32"),
                               ("PixelCNN _64", "pixelcnn_64", "pixelcnn_naive_s_64", "pixelcnn_cached_s_64"),
                               ("transformer _32", "transformer_32", "transformer_nocache_s_32", "transformer_cache_s_32")):  # fmt: skip
        print(f"{name:<28}{results[off]:>17.2f}{results[on]:>14.2f}{results[off] / results[on]:>9.1f}x  "
              f"{results['identical_codes'][key]}")
    verdict = "PASS" if results["pixelcnn_speedup_32"] >= 10 else "MISS"
    print(f"{verdict}  cached PixelCNN >= 10x faster than naive at 32x32 ({results['pixelcnn_speedup_32']:.1f}x)")
    if results["pixelcnn_naive_64_estimated"]:
        print("(naive _64: estimated as H x W positions x one measured full pass; same codes checked on the first rows)")
    _print_two_level(results)



def _print_two_level(results: dict) -> None:
    model = results["two_level_model"]
    print(f"two-level CIFAR-10 pipeline ({model['pipeline']}), batch {model['batch_size']}, codes {model['code_shapes']}: "
          f"top {model['top']}, bottom {model['bottom']}")
    print(f"{'sampler':<28}{'seconds':>10}{'images/s':>10}")
    for name in ("naive", "cached"):
        print(f"{name:<28}{results[f'two_level_{name}_s']:>10.2f}{results[f'two_level_{name}_images_per_s']:>10.1f}")
    print(f"speed-up {results['two_level_speedup']:.1f}x; same images: {results['two_level_same_images']}")


if __name__ == "__main__":
    main(parse_args())
