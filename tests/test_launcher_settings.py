"""Settings given to `accelerate launch` (or its config file) reach the run unless scripts/train.py overrides them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_VQ = ["--model", "vqvae", "--preset", "mnist", "--resolution", "8", "--num_downsamples", "1",
           "--hidden_channels", "16", "--residual_channels", "8", "--num_embeddings", "32", "--embedding_dim", "4",
           "--train_batch_size", "16", "--report_to", "none", "--max_train_steps", "2", "--lr_warmup_steps", "1"]  # fmt: skip


def launch(tmp_path: Path, launcher_options: list[str], script_options: list[str]) -> dict:
    """`accelerate launch` one CPU process (no accelerate config file of the machine) -> the run's metrics.json."""
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf_home")}  # holds accelerate's default config file
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "--num_machines", "1", "--dynamo_backend", "no", *launcher_options, str(ROOT / "scripts" / "train.py"),
               *TINY_VQ, "--output_dir", str(tmp_path / "run"), *script_options]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


@pytest.mark.slow
def test_the_launchers_mixed_precision_is_used_when_the_script_does_not_set_one(tmp_path):
    metrics = launch(tmp_path, ["--mixed_precision", "bf16"], [])
    assert metrics["training"]["mixed_precision"] == "bf16"  # was "no": the script's default overrode the launcher


@pytest.mark.slow
def test_the_scripts_option_wins_over_the_launcher(tmp_path):
    metrics = launch(tmp_path, ["--mixed_precision", "bf16"], ["--mixed_precision", "no"])
    assert metrics["training"]["mixed_precision"] == "no"


def test_the_option_is_unset_by_default_and_validated():
    sys.path.insert(0, str(ROOT / "scripts"))
    import train as train_script
    from hf_vqvae.training import TrainArguments

    _, _, train_args, _ = train_script.parse_args(TINY_VQ)
    assert train_args.mixed_precision is None  # Accelerate then reads the launcher's setting (default "no")
    with pytest.raises(ValueError, match="--mixed_precision must be no, bf16 or fp16 \\(or unset\\), got 'fp8'"):
        TrainArguments(mixed_precision="fp8")
