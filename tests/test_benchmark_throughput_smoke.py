"""The training-throughput benchmark runs and writes the documented JSON keys (the >= 3x target itself lives in
the benchmark's printed table, not in a timed test)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"  # the benchmark's default --data_dir
TRAIN_KEYS = (
    "vqvae_mnist_img_s",
    "vqvae_cifar10-paper_img_s",
    "vqvae_cifar10_img_s",
    "vqvae2_cifar10_img_s",
    "vqvae2_cifar10-16x16_img_s",
    "vqvae2_imagenet256-paper@64_img_s",
    "vae_mnist-paper_img_s",
    "vae_frey-paper_img_s",
)


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_train_throughput_benchmark_quick_run_writes_the_json_keys(tmp_path):
    out = tmp_path / "throughput.json"
    # One torch thread: pytest-xdist runs the tests two at a time on two cores.
    script = ROOT / "benchmarks" / "train_throughput.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for key in TRAIN_KEYS:
        assert _positive(figures[key]), (key, figures.get(key))
    assert figures["config"]["batch_size"] == 4 and figures["config"]["quick"] is True
    assert figures["training"]["vqvae2_imagenet256-paper@64"]["input_shape"] == [4, 3, 64, 64]
    # The VQ-VAE-2 step options side by side; --quick leaves out the compiled ones (they compile for minutes).
    for option in ("eager", "channels_last", "foreach_adamw", "fused_adamw", "channels_last_fused_adamw"):
        assert _positive(figures[f"vqvae2_step_{option}_img_s"]), option
        assert figures["step_options"][option]["input_shape"] == [4, 3, 64, 64]
    assert figures["vqvae2_step_eager_over_eager"] == 1.0
    assert figures["vqvae2_step_compiled_img_s"] is None and figures["step_options"]["compiled"] is None
    assert isinstance(figures["targets"]["vqvae2_step_best_over_eager >= 1.25"], bool)
    target = "data_over_train_mnist >= 3"
    if MNIST.is_dir():
        assert _positive(figures["data_mnist_img_s"])
        assert figures["data_over_train_mnist"] == figures["data_mnist_img_s"] / figures["vqvae_mnist_img_s"]
        assert isinstance(figures["targets"][target], bool)
        assert ("PASS" in result.stdout) or ("MISS" in result.stdout)
    else:  # the shared data folder is absent: the data figure is null, and the script says why
        assert figures["data_mnist_img_s"] is None and figures["data_over_train_mnist"] is None
        assert figures["targets"][target] is None
        assert "absent" in result.stdout
    assert "vqvae_mnist" in result.stdout and "data_mnist" in result.stdout


def _convolution_flops(model: torch.nn.Module, pixels: torch.Tensor) -> int:
    """Forward and backward FLOPs of every Conv2d / ConvTranspose2d of one training forward + backward, counted from
    the shapes the layers see: forward 2 * batch * positions * weight elements (positions: output's for a conv, the
    input's for a transposed conv); backward as much for the weight's gradient, and again for the input's when the
    input needs one (not for the pixels)."""
    total, handles = [0], []

    def count(layer, inputs, output):
        transposed = isinstance(layer, torch.nn.ConvTranspose2d)
        positions = (inputs[0] if transposed else output).shape[2:].numel()
        forward = 2 * inputs[0].shape[0] * positions * layer.weight.numel()
        total[0] += forward * (2 + inputs[0].requires_grad)

    for layer in model.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            handles.append(layer.register_forward_hook(count))
    model(pixels).loss.backward()
    for handle in handles:
        handle.remove()
    return total[0]


def test_convolution_ceiling_counts_the_convolutions_flops_and_bounds_the_speed_up():
    bench = load_script("benchmarks/train_throughput.py")
    threads = torch.get_num_threads()
    try:
        config = bench.make_config(bench.parse_args(["--quick", "--threads", "1"]))
        ceiling = bench.convolution_ceiling(config)
        _, model = bench.make_option_step(bench.STEP_OPTIONS[0], config, bench.step_pixels(config))
        expected = _convolution_flops(model, bench.step_pixels(config))
    finally:
        torch.set_num_threads(threads)
    assert ceiling["convolution_gflop"] == pytest.approx(expected / 1e9, rel=1e-12)
    assert ceiling["convolution_gflop"] < ceiling["step_gflop"] < 1.05 * ceiling["convolution_gflop"]  # all but a few
    # the convolutions run inside the step: their time is a part of it, and the bounds follow from the parts
    assert 0 < ceiling["convolution_ms"] < ceiling["step_ms"]
    assert ceiling["convolution_share"] == pytest.approx(ceiling["convolution_ms"] / ceiling["step_ms"])
    assert ceiling["ceiling_if_only_convolutions"] == pytest.approx(1 / ceiling["convolution_share"])
    at_matmul_speed_ms = ceiling["convolution_gflop"] / ceiling["matmul_gflop_s"] * 1e3
    assert ceiling["ceiling_if_convolutions_at_matmul_speed"] == pytest.approx(ceiling["step_ms"] / at_matmul_speed_ms)
    gflop_s = ceiling["convolution_gflop"] / ceiling["convolution_ms"] * 1e3
    assert ceiling["convolution_gflop_s"] == pytest.approx(gflop_s)
