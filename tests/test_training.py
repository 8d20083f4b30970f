"""scripts/train.py and hf_vqvae.training: outputs, exact resume, crash safety, fine-tuning, non-finite losses."""

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train as train_script  # noqa: E402

from hf_vqvae.training import NonFiniteLossError, list_checkpoints  # noqa: E402
from hf_vqvae.training.checkpointing import checkpoint_root  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_VQ = ["--model", "vqvae", "--preset", "mnist", "--resolution", "8", "--num_downsamples", "1",
           "--hidden_channels", "16", "--residual_channels", "8", "--num_embeddings", "32", "--embedding_dim", "4",
           "--train_batch_size", "16", "--report_to", "none", "--logging_steps", "2", "--lr_warmup_steps", "2"]  # fmt: skip


def run_train(output_dir, *extra):
    return train_script.main(train_script.parse_args([*TINY_VQ, "--output_dir", str(output_dir), *extra]))


def weights(folder) -> dict:
    return load_file(Path(folder) / "model.safetensors")


def test_a_run_writes_the_model_folder_grid_metrics_and_card(tmp_path):
    metrics = run_train(tmp_path, "--max_train_steps", "4", "--image_logging_steps", "2")
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["step-2.png", "step-4.png"]
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "reconstructions.png",
                 "metrics.json"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    written = json.loads((tmp_path / "metrics.json").read_text())
    training = written.pop("training")
    assert written == metrics and written["train_steps"] == 4
    assert training["steps"] == 4 and training["dataset"] == "sklearn-digits" and training["base_model"] is None
    assert 0 <= written["codebook_usage_level_0"] <= 1 and written["mse"] > 0
    card = (tmp_path / "README.md").read_text()
    assert "library_name: transformers" in card and f"{written['mse']:.5g}" in card
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tmp_path)
    assert model.config.num_embeddings == 32 and model.config.image_size == 8
    grid = Image.open(tmp_path / "reconstructions.png")
    assert grid.size[1] == 2 * 8 + 3 * 2  # two rows of 8x8 images with padding


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_train(straight, "--max_train_steps", "8")
    run_train(interrupted, "--max_train_steps", "8", "--checkpointing_steps", "4", "--checkpoints_total_limit", "1")
    assert [p.name for p in list_checkpoints(checkpoint_root(interrupted))] == ["checkpoint-8"]
    for path in interrupted.glob("model.safetensors"):
        path.unlink()
    # Resume from step 4 as if the run had stopped there: the checkpoint holds optimizer, scheduler, RNG, data position.
    run_train(tmp_path / "half", "--max_train_steps", "8", "--checkpointing_steps", "4")
    half = tmp_path / "half"
    (checkpoint_root(half) / "checkpoint-8").rename(checkpoint_root(half) / ".tmp-checkpoint-8")  # as if killed mid-save
    (half / "model.safetensors").unlink()
    run_train(half, "--max_train_steps", "8", "--resume_from_checkpoint", "latest")
    expected, got = weights(straight), weights(half)
    for key in expected:
        assert torch.allclose(expected[key].float(), got[key].float(), atol=1e-6), key


def test_non_finite_loss_stops_naming_the_step_and_saves_nothing(tmp_path, monkeypatch):
    from hf_vqvae.training import loop

    original = loop._Run._forward
    calls = {"n": 0}

    def forward_with_nan(self, pixel_values):
        calls["n"] += 1
        output = original(self, pixel_values)
        if calls["n"] == 3:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(loop._Run, "_forward", forward_with_nan)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        run_train(tmp_path / "stop", "--max_train_steps", "5")
    assert not (tmp_path / "stop" / "model.safetensors").exists()
    calls["n"] = 0
    metrics = run_train(tmp_path / "skip", "--max_train_steps", "5", "--skip_nonfinite")
    assert metrics["train_steps"] == 5
    assert all(torch.isfinite(t.float()).all() for t in weights(tmp_path / "skip").values())


def _write_imagefolder(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for index in range(count):
        kind = "a" if index % 2 else "b"
        (folder / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(folder / kind / f"{index}.png")
    return folder


def test_fine_tune_a_saved_model_on_an_imagefolder(tmp_path, monkeypatch):
    run_train(tmp_path / "base", "--max_train_steps", "2")
    images = _write_imagefolder(tmp_path / "images", 40)
    common = ["--model", "vqvae", "--init_from", str(tmp_path / "base"), "--train_data_dir", str(images),
              "--resolution", "8", "--train_batch_size", "8", "--report_to", "none", "--lr_warmup_steps", "1"]  # fmt: skip
    base = weights(tmp_path / "base")
    from hf_vqvae.training import loop

    seeded = {}
    original = loop._reset_dead_codes

    def spy(run, *args, **kwargs):
        before = run.unwrapped.quantizers[0].codebook.detach().clone()
        original(run, *args, **kwargs)
        seeded["changed"] = (run.unwrapped.quantizers[0].codebook.detach() != before).any(dim=1)
        seeded["codebook"] = run.unwrapped.quantizers[0].codebook.detach().clone()
        seeded["old"] = before

    monkeypatch.setattr(loop, "_reset_dead_codes", spy)
    metrics = train_script.main(train_script.parse_args(
        [*common, "--max_train_steps", "3", "--reset_dead_codes", "--output_dir", str(tmp_path / "tuned")]))
    # Re-seeded codes are new vectors (encoder outputs on the new data), not copies of existing codes.
    changed = seeded["changed"]
    assert changed.any()
    for vector in seeded["codebook"][changed]:
        assert (seeded["old"] - vector).abs().sum(dim=1).min() > 1e-6
    tuned = weights(tmp_path / "tuned")
    assert metrics["train_steps"] == 3 and set(tuned) == set(base)
    assert not torch.equal(tuned["decoder.blocks.0.weight"], base["decoder.blocks.0.weight"])
    with pytest.raises(ValueError, match="--preset mnist conflicts with --init_from"):
        train_script.main(train_script.parse_args([*common, "--preset", "mnist", "--output_dir", str(tmp_path / "x")]))


def test_vae_trains_on_the_negative_elbo_and_writes_samples(tmp_path):
    args = ["--model", "vae", "--preset", "mnist-paper", "--hidden_size", "32", "--latent_dim", "4",
            "--resolution", "28", "--train_batch_size", "16", "--max_train_steps", "3", "--report_to", "none",
            "--num_latent_samples", "2", "--binarize", "dynamic", "--output_dir", str(tmp_path)]  # fmt: skip
    metrics = train_script.main(train_script.parse_args(args))
    assert metrics["elbo"] < 0 and metrics["elbo_bits_per_dim"] > 0
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "reconstructions.png").is_file()
    assert metrics["binarize"] == "dynamic"
    with pytest.raises(ValueError, match="--binarize dynamic applies to a VAE with a Bernoulli decoder"):
        run_train(tmp_path / "vq", "--max_train_steps", "1", "--binarize", "dynamic")


def test_bf16_mixed_precision_run(tmp_path):
    # Accelerate fixes the precision once per process: a fresh process.
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), *TINY_VQ, "--output_dir", str(tmp_path),
               "--max_train_steps", "3", "--mixed_precision", "bf16"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_steps"] == 3 and all(torch.isfinite(t.float()).all() for t in weights(tmp_path).values())
    assert weights(tmp_path)["quantizers.0.codebook"].dtype == torch.float32


def test_unknown_option_is_an_error_naming_it(capsys):
    with pytest.raises(SystemExit):
        train_script.parse_args(["--model", "vqvae", "--num_embedings", "3"])
    assert "unknown option --num_embedings" in capsys.readouterr().err


def test_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), *TINY_VQ, "--output_dir", str(tmp_path),
               "--max_train_steps", "400", "--checkpointing_steps", "3", "--logging_steps", "50"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while len(list_checkpoints(checkpoint_root(tmp_path))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for a file, not timing anything
        assert list_checkpoints(checkpoint_root(tmp_path)), "no checkpoint within two minutes"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert not (tmp_path / "model.safetensors").exists(), "the run was killed before finishing"
    last = list_checkpoints(checkpoint_root(tmp_path))[-1]
    metrics = run_train(tmp_path, "--max_train_steps", "400", "--checkpointing_steps", "100",
                        "--resume_from_checkpoint", "latest")  # fmt: skip
    assert metrics["train_steps"] == 400 and (tmp_path / "model.safetensors").is_file()
    assert int(last.name.split("-")[1]) % 3 == 0


def test_arguments_from_a_yaml_file_match_the_command_line():
    from_file = train_script.parse_args([str(ROOT / "configs" / "vqvae2-cifar10.yaml")])
    model_args, data_args, train_args, overrides = from_file
    assert (model_args.model, model_args.preset, data_args.resolution, data_args.streaming) == (
        "vqvae2", "cifar10", None, True)
    assert train_args.max_train_steps == 20000 and train_args.learning_rate == 3e-4
    assert overrides == {"num_embeddings": 512} and not model_args.paper_codebook
    assert from_file == train_script.parse_args(train_script.arguments_from_file(str(ROOT / "configs" / "vqvae2-cifar10.yaml")))


def test_lr_scheduler_constant_or_cosine_after_the_warm_up():
    from hf_vqvae.training import TrainArguments
    from hf_vqvae.training.builders import build_scheduler

    def learning_rates(name):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        args = TrainArguments(learning_rate=1e-3, lr_warmup_steps=2, lr_scheduler=name)
        scheduler = build_scheduler(optimizer, args, total_steps=10, num_processes=1)
        rates = []
        for _ in range(10):
            rates.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return rates

    assert learning_rates("constant") == pytest.approx([0.0, 5e-4] + [1e-3] * 8)
    cosine = learning_rates("cosine")
    assert cosine[:3] == pytest.approx([0.0, 5e-4, 1e-3]) and cosine[-1] < 1e-4
    assert all(a >= b for a, b in zip(cosine[2:], cosine[3:])), "decays after the warm-up"
    with pytest.raises(ValueError, match="--lr_scheduler must be cosine or constant"):
        TrainArguments(lr_scheduler="linear")


def test_image_grids_also_go_to_tensorboard(tmp_path):
    """--report_to tensorboard: each grid written under images/ is also an image event of the run's log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_train(tmp_path, "--max_train_steps", "4", "--image_logging_steps", "2", "--report_to", "tensorboard")
    events = sorted((tmp_path / "logs").rglob("events.out.tfevents.*")) if (tmp_path / "logs").is_dir() else sorted(
        tmp_path.rglob("events.out.tfevents.*"))
    assert events, "no tensorboard event file"
    images = []
    for path in events:
        accumulator = EventAccumulator(str(path.parent), size_guidance={"images": 0})
        accumulator.Reload()
        images += [(tag, event.step, event.width, event.height) for tag in accumulator.Tags()["images"]
                   for event in accumulator.Images(tag)]  # fmt: skip
    grid = Image.open(tmp_path / "images" / "step-2.png")
    assert sorted(step for _, step, _, _ in images) == [2, 4]
    assert all(tag.endswith("reconstructions") and (w, h) == grid.size for tag, _, w, h in images)


def test_push_to_hub_publishes_the_finished_run_validated(tmp_path, monkeypatch):
    """--push_to_hub runs scripts/push_to_hub.py on the run: the repo folder, validated without the package, uploaded
    (the upload is patched, as in tests/test_hub.py)."""
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw)))

    def upload_folder(self, **kw):
        calls.append(("upload_folder", kw["repo_id"], sorted(p.name for p in Path(kw["folder_path"]).iterdir())))
        return "commit-url"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    run_train(tmp_path / "run", "--max_train_steps", "2", "--push_to_hub", "--hub_model_id", "org/tiny-vqvae",
              "--hub_private_repo")  # fmt: skip
    assert calls[0] == ("create_repo", "org/tiny-vqvae", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls[1][0] == "upload_folder" and calls[1][1] == "org/tiny-vqvae"
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "modeling_vqvae.py"} <= set(calls[1][2])


def test_hub_options_without_push_to_hub_or_a_repo_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        run_train(tmp_path, "--push_to_hub")
    with pytest.raises(ValueError, match="--hub_model_id and --hub_private_repo apply with --push_to_hub"):
        run_train(tmp_path, "--hub_model_id", "org/x")
