"""The benchmark script runs and writes the documented JSON keys (the speed targets themselves live in the
benchmark's printed table, not in a timed test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quantizer_benchmark_quick_run_writes_the_json_keys(tmp_path):
    out = tmp_path / "quantizer.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quantizer.py"), "--quick", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for key in ("floor_ms", "floor_chunked_ms", "ours_grad_ms", "ours_ema_ms", "diffusers_ms", "vqp_ema_ms"):
        assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures["ours_ema_over_floor"] == figures["ours_ema_ms"] / figures["floor_ms"]
    assert "ours_ema" in result.stdout and "vqp_ema" in result.stdout


def test_quality_benchmark_quick_run(tmp_path, shared_dir):
    out = tmp_path / "quality.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality_mnist.py"), "--quick", "--threads", "1",
         "--datasets", str(shared_dir / "datasets"), "--output_dir", str(tmp_path / "runs"), "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["quick"] is True and figures["vqvae_test_images"] == 64
    assert 0 <= figures["vqvae_codebook_usage"] <= 1 and figures["vae_nll_nats"] > 0 and figures["frey_elbo_nats"] < 1e6
    assert 0 <= figures["prior_samples_recognised"] <= 1 and figures["prior_nll_nats_per_code"] > 0
    assert 0 <= figures["classifier_test_accuracy"] <= 1
    assert "VQ-VAE mnist: normalised MSE" in result.stdout and "PixelCNN prior" in result.stdout


def test_sampling_benchmark_quick_run_writes_the_json_keys(tmp_path):
    out = tmp_path / "sampling.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sampling.py"), "--quick", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for key in ("pixelcnn_naive_s_32", "pixelcnn_cached_s_32", "pixelcnn_naive_s_64", "pixelcnn_cached_s_64",
                "transformer_nocache_s_32", "transformer_cache_s_32", "two_level_naive_s", "two_level_cached_s"):  # fmt: skip
        assert figures[key] > 0, key
    assert all(figures["identical_codes"].values()), "cached and uncached samplers give the same codes"
    assert figures["two_level_same_images"], "the two-level pipeline draws the same images with and without cache"
    assert figures["two_level_cached_images_per_s"] == pytest.approx(4 / figures["two_level_cached_s"])
    assert figures["two_level_model"]["code_shapes"] == [[4, 4], [8, 8]]


def test_cifar10_quality_benchmark_quick_run(tmp_path, shared_dir):
    out = tmp_path / "cifar10.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality_cifar10.py"), "--quick", "--threads", "1",
         "--codebook_rows", "1,9,10", "--datasets", str(shared_dir / "datasets"), "--output_dir", str(tmp_path / "runs"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    rows = figures["codebook"]
    assert list(rows) == ["paper: EMA codebook", "EMA + k-means + restarts: the defaults (no option)",
                          "vqp: VectorQuantize, plain"]  # fmt: skip
    for row in [*rows.values(), figures["vqvae"], *figures["hierarchy"].values()]:
        assert row["test_images"] == 64 and 0 <= row["codes_used"] <= 1 and row["normalized_mse"] > 0
        assert 0 < row["ssim"] <= 1 and row["ms_per_step"] > 0
    assert 1 <= figures["vqvae"]["batch_perplexity"] <= 512
    assert figures["hierarchy"]["vqvae2"]["bits_per_image"] == 80 * 9
    assert figures["hierarchy"]["vqvae_k2048"]["bits_per_image"] == 64 * 11
    assert "Codebook options" in result.stdout and "vs Sonnet" in result.stdout and "hierarchy help" in result.stdout
