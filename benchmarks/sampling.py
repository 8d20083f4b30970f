"""Sampling speed of the priors: naive vs cached PixelCNN, transformer without vs with the KV cache.

Public PixelCNN implementations re-run the whole network once per position (32x32 = 1,024 full passes); ours
reuses the computation of earlier positions and gives exactly the same codes. In one run, on the same models and
seeds (batch 8, 2 threads by default), this times:

* PixelCNN prior, naive (`use_cache=False`) and cached (`use_cache=True`), on 32x32 and 64x64 code maps;
* the transformer prior through `generate()` without and with its KV cache, on a 32x32 map.

Target: cached PixelCNN >= 10x faster than naive at 32x32. Usage:

    .venv/bin/python benchmarks/sampling.py --json sampling.json
    .venv/bin/python benchmarks/sampling.py --quick          # smoke run (8x8 maps), seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hf_vqvae import PixelCNNPriorConfig, PixelCNNPriorModel, TransformerPriorConfig, TransformerPriorModel


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden_channels", type=int, default=128, help="PixelCNN width")
    parser.add_argument("--num_layers", type=int, default=12, help="PixelCNN gated layers")
    parser.add_argument("--num_embeddings", type=int, default=512, help="codebook size K")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="square code-map sizes for the PixelCNN")
    parser.add_argument("--transformer_size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="8x8 maps and small models, for a smoke test")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.transformer_size, args.hidden_channels, args.num_layers = [8, 8], 8, 16, 2
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


def timed_sample(model, args, size: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    labels = torch.arange(args.batch_size) % 10
    start = time.perf_counter()
    codes = model.sample(args.batch_size, shape=(size, size), class_labels=labels, use_cache=use_cache,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    return time.perf_counter() - start, codes


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    results, same = {}, {}
    prior = pixelcnn(args)
    for key, size in zip(("32", "64"), args.sizes):
        cached_s, cached = timed_sample(prior, args, size, use_cache=True)
        naive_s, naive = timed_sample(prior, args, size, use_cache=False)
        results[f"pixelcnn_naive_s_{key}"], results[f"pixelcnn_cached_s_{key}"] = naive_s, cached_s
        same[f"pixelcnn_{key}"] = bool(torch.equal(naive, cached))
    model = transformer(args)
    cache_s, with_cache = timed_sample(model, args, args.transformer_size, use_cache=True)
    nocache_s, without = timed_sample(model, args, args.transformer_size, use_cache=False)
    results["transformer_nocache_s_32"], results["transformer_cache_s_32"] = nocache_s, cache_s
    same["transformer_32"] = bool(torch.equal(with_cache, without))
    results["pixelcnn_speedup_32"] = results["pixelcnn_naive_s_32"] / results["pixelcnn_cached_s_32"]
    results["pixelcnn_speedup_64"] = results["pixelcnn_naive_s_64"] / results["pixelcnn_cached_s_64"]
    results["transformer_speedup_32"] = nocache_s / cache_s
    results["identical_codes"] = same
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


if __name__ == "__main__":
    main(parse_args())
