"""Careless runs of scripts/train.py (issue 13, points 2, 3, 4, 5 and 9): no hang, no lost run, no silent reuse.

- No full batch can be formed (batch larger than the data, every image broken, a text column): an error saying why,
  never an endless loop.
- A folder holding another run's checkpoints is refused unless the user says to resume or overwrite; a checkpoint
  past --max_train_steps is an error; a corrupt RNG file in a checkpoint is an error, not an INFO line.
- An unwritable output folder is an error before the first step; a save that fails (a full disk) leaves the folder's
  previous model loadable.
- Ctrl-C and SIGTERM save a checkpoint, say how to resume, and exit with 128 + the signal number.
"""

import errno
import faulthandler
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import train as train_script  # noqa: E402

from hf_vqvae.training import EmptyEpochError, list_checkpoints  # noqa: E402
from hf_vqvae.training.checkpointing import checkpoint_root  # noqa: E402

TINY_VQ = ["--model", "vqvae", "--preset", "mnist", "--resolution", "8", "--num_downsamples", "1",
           "--hidden_channels", "16", "--residual_channels", "8", "--num_embeddings", "32", "--embedding_dim", "4",
           "--train_batch_size", "16", "--report_to", "none", "--logging_steps", "2", "--lr_warmup_steps", "2"]  # fmt: skip


def run_train(output_dir, *extra):
    return train_script.main(train_script.parse_args([*TINY_VQ, "--output_dir", str(output_dir), *extra]))


@pytest.fixture
def no_hang():
    """These tests reproduce endless loops: if one comes back, the test process dies with a traceback after 2 minutes
    instead of hanging the suite."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def imagefolder(folder: Path, count: int, broken: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        if broken:
            (folder / f"{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        else:
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


# ---------------------------------------------------------------------------------------------------- no full batch
def test_batch_larger_than_the_data_is_an_error_not_an_endless_loop(tmp_path, no_hang):
    # The command: 1,617 training digits, batch 5000, --max_train_steps 2 (was stuck at 0/2 for ever).
    with pytest.raises(EmptyEpochError, match=r"1617 training images give no full batch of 5000 per process"):
        run_train(tmp_path / "run", "--train_batch_size", "5000", "--max_train_steps", "2")
    with pytest.raises(EmptyEpochError, match=r"\d+ training images give no full batch of 64"):
        train_script.main(train_script.parse_args([*TINY_VQ, "--train_data_dir", str(imagefolder(tmp_path / "20", 20)),
                                                   "--train_batch_size", "64", "--max_train_steps", "2",
                                                   "--output_dir", str(tmp_path / "run20")]))  # fmt: skip


def test_a_stream_too_short_for_one_batch_stops_after_one_pass(tmp_path, no_hang):
    # A stream has no length to check up front: the first pass that yields no batch stops the run.
    args = [*TINY_VQ, "--train_data_dir", str(imagefolder(tmp_path / "20", 20)), "--streaming", "--max_eval_samples",
            "4", "--train_batch_size", "64", "--max_train_steps", "2", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    with pytest.raises(EmptyEpochError, match=r"gave process 0 no batch of 64 images: 16 decoded, 0 skipped"):
        train_script.main(train_script.parse_args(args))


def test_every_image_undecodable_stops_with_the_count_and_few_log_lines(tmp_path, no_hang, caplog):
    folder = imagefolder(tmp_path / "broken", 60, broken=True)
    args = [*TINY_VQ, "--train_data_dir", str(folder), "--max_train_steps", "2", "--output_dir", str(tmp_path / "run")]
    with pytest.raises(EmptyEpochError, match=r"0 decoded, 54 skipped as undecodable \(first: example 0 \(.*\.png\)"):
        train_script.main(train_script.parse_args(args))
    skip_lines = [record for record in caplog.records if "skipped an undecodable image" in record.getMessage()]
    assert 5 <= len(skip_lines) <= 7  # the first five, then the 10th (was one line per image, 97,625 in 40 s)
    assert not (tmp_path / "run" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------ decompression bomb
def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_decompression_bomb_is_skipped_by_training_evaluation_and_code_extraction(tmp_path):
    data = tmp_path / "data"
    for split, count in (("train", 40), ("test", 8)):
        imagefolder(data / split, count)
        Image.new("1", (20000, 20000)).save(data / split / "bomb.png")  # 48 KB on disk, 400 M pixels decoded
    metrics = run_train(tmp_path / "run", "--train_data_dir", str(data), "--max_train_steps", "9",
                        "--train_batch_size", "8")  # fmt: skip
    # Epoch 0 (5 steps) reads every image, so the bomb is skipped once; epoch 1 (4 steps) may meet it again.
    assert metrics["train_steps"] == 9 and metrics["skipped_images"] in (1, 2) and metrics["num_images"] == 8
    evaluate = load_script("evaluate")
    report = evaluate.main(evaluate.parse_args([str(tmp_path / "run"), "--train_data_dir", str(data)]))
    assert report["skipped_images"] == 1 and report["metrics"]["num_images"] == 8
    extract = load_script("extract_codes")
    extract.main(extract.parse_args(["--model", str(tmp_path / "run"), "--output_dir", str(tmp_path / "codes"),
                                     "--train_data_dir", str(data), "--batch_size", "16"]))  # fmt: skip
    info = json.loads((tmp_path / "codes" / "codes_info.json").read_text())
    assert info["splits"] == {"train": 40, "test": 8}  # the bombs skipped


# ------------------------------------------------------------------------------------------------ reused output dir
def test_a_folder_holding_another_runs_checkpoints_is_refused(tmp_path):
    folder = tmp_path / "run"
    run_train(folder, "--max_train_steps", "4", "--checkpointing_steps", "4")
    old = load_file(checkpoint_root(folder) / "checkpoint-4" / "model.safetensors")
    with pytest.raises(ValueError, match=r"already holds checkpoints of another run \(checkpoint-4\); pass "
                                         r"--resume_from_checkpoint latest .* --overwrite_output_dir"):  # fmt: skip
        run_train(folder, "--max_train_steps", "2", "--checkpointing_steps", "1", "--checkpoints_total_limit", "1")
    kept = load_file(checkpoint_root(folder) / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(old[key], kept[key]) for key in old), "the refused run touched the old checkpoint"
    # A checkpoint past this run's last step: an error, not "resumed, 0 steps trained".
    with pytest.raises(ValueError, match=r"checkpoint-4 is at step 4, past this run's 2 steps"):
        run_train(folder, "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
    # Told to overwrite: the old checkpoints go, the new run keeps its own.
    metrics = run_train(folder, "--max_train_steps", "2", "--checkpointing_steps", "1", "--checkpoints_total_limit",
                        "1", "--overwrite_output_dir")  # fmt: skip
    assert metrics["train_steps"] == 2
    assert [path.name for path in list_checkpoints(checkpoint_root(folder))] == ["checkpoint-2"]


def test_a_corrupt_random_state_file_is_refused_on_resume(tmp_path):
    run_train(tmp_path, "--max_train_steps", "2", "--checkpointing_steps", "2")
    (checkpoint_root(tmp_path) / "checkpoint-2" / "random_states_0.pkl").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"random_states_0.pkl is missing or corrupt .* would not reproduce"):
        run_train(tmp_path, "--max_train_steps", "4", "--resume_from_checkpoint", "latest")


# ------------------------------------------------------------------------------------------------ failed saves
def test_an_unwritable_output_folder_is_refused_before_training(tmp_path, monkeypatch):
    from hf_vqvae.training import loop

    built = []
    monkeypatch.setattr(loop, "build_model", lambda *args: built.append(args))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"cannot write to the output folder .*a_file/run .*nothing was trained"):
        run_train(tmp_path / "a_file" / "run", "--max_train_steps", "2")  # no folder can be made under a file
    if os.geteuid() != 0:  # root writes into read-only folders; for other users, the exact case
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o555)
        with pytest.raises(ValueError, match=r"cannot write to the output folder .*PermissionError"):
            run_train(read_only, "--max_train_steps", "2")
    assert built == [], "a model was built (and trained) before the folder was checked"


def test_a_save_that_fails_midway_leaves_the_previous_model_loadable(tmp_path, monkeypatch):
    from transformers import AutoModel, modeling_utils

    run_train(tmp_path, "--max_train_steps", "2")
    before = load_file(tmp_path / "model.safetensors")
    config_before = (tmp_path / "config.json").read_text()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(modeling_utils, "safe_save_file", disk_full)  # config.json is written first, then this fails
    with pytest.raises(OSError, match="No space left on device"):
        run_train(tmp_path, "--max_train_steps", "3", "--num_embeddings", "64")
    assert (tmp_path / "config.json").read_text() == config_before
    model = AutoModel.from_pretrained(tmp_path)
    assert model.config.num_embeddings == 32
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".tmp")] == []


# ------------------------------------------------------------------------------------------------ Ctrl-C and SIGTERM
@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, signal_number):
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), *TINY_VQ, "--output_dir", str(tmp_path),
               "--max_train_steps", "100000", "--image_logging_steps", "3", "--logging_steps", "50"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not (tmp_path / "images" / "step-3.png").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no training step within two minutes"
            time.sleep(0.05)  # polling for a file, not timing anything
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal_number, stderr[-2000:]
    step = json.loads((list_checkpoints(checkpoint_root(tmp_path))[-1] / "training_state.json").read_text())["global_step"]
    assert step >= 3
    assert (f"stopped by {signal.Signals(signal_number).name} at step {step} of 100000; checkpoint saved to "
            f"{checkpoint_root(tmp_path) / f'checkpoint-{step}'}. Resume with the same command plus "
            f"--resume_from_checkpoint latest") in stderr  # fmt: skip
    assert "Traceback" not in stderr
    metrics = run_train(tmp_path, "--max_train_steps", str(step + 1), "--resume_from_checkpoint", "latest")
    assert metrics["train_steps"] == step + 1


def test_a_second_ctrl_c_stops_at_once_but_a_sigterm_after_it_does_not():
    from hf_vqvae.training.interrupts import StopSignals

    with StopSignals() as signals:  # what `accelerate launch` does on Ctrl-C: its workers get SIGINT, then SIGTERM
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == signal.SIGINT  # the checkpoint is still written
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back
