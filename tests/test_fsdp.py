"""Sharded priors: 2 CPU processes (gloo) train a prior under Accelerate's FSDP2 plugin through scripts/train.py, and
match a single process stepping on the same global batches; the saved model loads with `from_pretrained`.

The 2-process run shards the data: rank r reads its half of the epoch order in micro-batches of B (`code_batches(...,
rank=r, world_size=2)`), A of them per optimizer step. The single-process reference here steps on the union of the
2A micro-batches of each step (the global batch of 2AB), from the same seed, with the loop's own optimizer, schedule
and clipping: FSDP averages the two ranks' accumulated gradients, which is the gradient of the mean loss on that
union. Dropout is 0 so that the forward passes are deterministic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import extract_codes  # noqa: E402

from hf_vqvae import VQVAE2Config, VQVAE2Model  # noqa: E402
from hf_vqvae.data.codes import code_batches, load_codes  # noqa: E402
from hf_vqvae.training import ModelArguments, TrainArguments, parse_config_overrides  # noqa: E402
from hf_vqvae.training.builders import build_model, build_optimizer, build_scheduler, config_class_for  # noqa: E402
from hf_vqvae.training.distributed import make_accelerator, prepare_for_sharding  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, LEVEL = 3, 4, 1  # level 1: conditioned on the 4x4 top codes and the class
PRIORS = {
    "transformer-prior": dict(
        config=["--n_embd", "32", "--n_layer", "2", "--n_head", "2", "--resid_pdrop", "0", "--embd_pdrop", "0",
                "--attn_pdrop", "0"],
        fsdp=["--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP"],  # one FSDP unit per GPT2Block
        accumulation=1,
    ),
    "pixelcnn-prior": dict(
        config=["--hidden_channels", "8", "--num_layers", "2", "--condition_hidden_channels", "8",
                "--condition_num_residual_blocks", "1", "--dropout", "0"],
        # One FSDP unit (the whole model): a unit per GatedMaskedConvLayer fails, as the model calls the layer's
        # condition() outside its forward, where FSDP has not gathered the layer's weights.
        fsdp=[],
        accumulation=2,  # gradient accumulation (no gradient sync on the first micro-batch) under FSDP too
    ),
}  # fmt: skip


def fsdp_command(model: str, codes: Path, output: Path, *extra: str) -> list[str]:
    """`accelerate launch` with FSDP2 on 2 processes; on a CPU-only machine run it with ACCELERATE_USE_CPU=1."""
    return [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--use_fsdp", "--fsdp_version", "2",
        *PRIORS[model]["fsdp"], "--fsdp_state_dict_type", "SHARDED_STATE_DICT", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(ROOT / "scripts" / "train.py"), "--model", model, "--preset", "mnist", "--codes_dataset", str(codes),
        "--level", str(LEVEL), "--train_batch_size", str(BATCH), "--max_train_steps", str(STEPS),
        "--lr_warmup_steps", "0", "--learning_rate", "1e-3", "--report_to", "none", "--checkpointing_steps", "2",
        "--gradient_accumulation_steps", str(PRIORS[model]["accumulation"]), "--debug_rank_outputs",
        "--output_dir", str(output), *PRIORS[model]["config"], *extra,
    ]  # fmt: skip


def launch(command: list[str]) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-5000:]


@pytest.fixture(scope="module")
def codes(tmp_path_factory) -> Path:
    """Codes of 64 digits from a tiny two-level VQ-VAE-2: 4x4 top and 8x8 bottom maps, K = 16, 10 classes."""
    root = tmp_path_factory.mktemp("fsdp-codes")
    config = VQVAE2Config(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                          num_residual_blocks=1, level_downsamples=[1, 1], num_embeddings=16, embedding_dim=4)  # fmt: skip
    torch.manual_seed(0)
    VQVAE2Model(config).save_pretrained(root / "vqvae2")
    extract_codes.main(extract_codes.parse_args(["--model", str(root / "vqvae2"), "--output_dir", str(root / "codes"),
                                                 "--max_samples", "64"]))  # fmt: skip
    return root / "codes"


@pytest.fixture(scope="module")
def runs(codes, tmp_path_factory):
    """model -> the output folder of its 2-process FSDP run (launched once per module, when first asked for)."""
    done = {}

    def get(model: str) -> Path:
        if model not in done:
            output = tmp_path_factory.mktemp("fsdp") / model
            launch(fsdp_command(model, codes, output))
            done[model] = output
        return done[model]

    return get


def single_process_reference(model_type: str, codes: Path, steps: int = STEPS):
    """The same prior trained in this process on the union of the two ranks' micro-batches of every step.

    Returns (model, [(rank 0 loss, rank 1 loss) per micro-batch], [global-batch loss per step]); each loss is taken
    with the weights before its step, as the training loop logs it.
    """
    from accelerate.utils import set_seed

    accumulation = PRIORS[model_type]["accumulation"]
    model_args = ModelArguments(model=model_type, preset="mnist", codes_dataset=str(codes), level=LEVEL)
    overrides = parse_config_overrides(PRIORS[model_type]["config"], config_class_for(model_type))
    args = TrainArguments(train_batch_size=BATCH, max_train_steps=steps, lr_warmup_steps=0, learning_rate=1e-3,
                          gradient_accumulation_steps=accumulation, report_to="none")  # fmt: skip
    set_seed(args.seed)  # as train() does before building the model, so the initial weights are the same
    model = build_model(model_args, overrides, None).train()
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args, steps, num_processes=1)
    train = load_codes(codes)[0]["train"]
    halves = [list(code_batches(train, LEVEL, batch_size=BATCH, seed=args.seed, epoch=0, rank=rank, world_size=2,
                                with_labels=True)) for rank in (0, 1)]  # fmt: skip
    micro_losses, step_losses = [], []
    for step in range(steps):
        micro = range(step * accumulation, (step + 1) * accumulation)
        with torch.no_grad():
            micro_losses += [tuple(float(model(**halves[rank][index]).loss) for rank in (0, 1)) for index in micro]
        parts = [halves[rank][index] for index in micro for rank in (0, 1)]
        loss = model(**{key: torch.cat([part[key] for part in parts]) for key in parts[0]}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_losses.append(float(loss.detach()))
    return model, micro_losses, step_losses


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(PRIORS))
def test_fsdp_on_two_processes_matches_one_process_on_the_same_global_batches(model_type, codes, runs):
    from transformers import AutoModel

    output = runs(model_type)
    reference, reference_micro, reference_steps = single_process_reference(model_type, codes)

    # The loss: each rank's loss of every micro-batch is the reference's on that rank's part of the global batch, and
    # their mean over the ranks (and the accumulated micro-batches) is the loss of the global batch.
    logged = [json.loads((output / f"losses_rank{rank}.json").read_text()) for rank in (0, 1)]
    accumulation = PRIORS[model_type]["accumulation"]
    assert len(logged[0]) == len(logged[1]) == len(reference_micro) == STEPS * accumulation
    for index, (rank0, rank1) in enumerate(reference_micro):
        assert logged[0][index] == pytest.approx(rank0, rel=1e-5), f"micro-batch {index + 1}, rank 0"
        assert logged[1][index] == pytest.approx(rank1, rel=1e-5), f"micro-batch {index + 1}, rank 1"
    for step, union in enumerate(reference_steps):
        micro = slice(step * accumulation, (step + 1) * accumulation)
        mean = (sum(logged[0][micro]) + sum(logged[1][micro])) / (2 * accumulation)
        assert mean == pytest.approx(union, rel=1e-5), f"step {step + 1}"

    # The saved model loads with from_pretrained as its own class, with the single-process weights after 3 steps.
    loaded = AutoModel.from_pretrained(output)
    assert type(loaded).__name__ == type(reference).__name__
    assert json.loads((output / "config.json").read_text())["architectures"] == [type(reference).__name__]
    expected = reference.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")

    # It really was sharded: each rank held a part of every parameter, and the parts make up the saved weights.
    shards = [load_file(output / f"weights_rank{rank}.safetensors") for rank in (0, 1)]
    saved = load_file(output / "model.safetensors")
    parameters = dict(loaded.named_parameters())
    assert set(parameters) <= set(shards[0]) and set(shards[0]) == set(shards[1])
    for name in parameters:
        assert torch.equal(torch.cat([shards[0][name], shards[1][name]]), saved[name]), name
        if saved[name].shape[0] > 1:
            assert shards[0][name].shape[0] < saved[name].shape[0], f"{name} was not sharded"

    # The end-of-run evaluation ran on the sharded model (every process) and reports the saved model's held-out NLL.
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["train_steps"] == STEPS and metrics["training"]["processes"] == 2
    test = load_codes(codes)[0]["test"]
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in code_batches(test, LEVEL, batch_size=64, seed=0, epoch=0, shuffle=False, drop_last=False,
                                  with_labels=True):  # fmt: skip
            logits = loaded.eval()(**batch).logits.float()
            total += float(torch.nn.functional.cross_entropy(logits, batch["codes"], reduction="sum"))
            count += batch["codes"].numel()
    assert metrics["nll_nats_per_code"] == pytest.approx(total / count, rel=1e-5)


@pytest.mark.slow
def test_fsdp_resumes_from_a_sharded_checkpoint_to_the_same_model(codes, runs, tmp_path):
    straight = runs("transformer-prior")
    checkpoint = straight / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir() and (checkpoint / "optimizer_0").is_dir()  # sharded (DCP)

    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for name in ("model.safetensors", "losses_rank0.json", "losses_rank1.json"):
        (resumed / name).unlink()
    launch(fsdp_command("transformer-prior", codes, resumed, "--resume_from_checkpoint", "latest"))

    # Only step 3 ran, on the batches the straight run took at step 3, from the checkpoint's weights and Adam moments.
    for rank in (0, 1):
        again = json.loads((resumed / f"losses_rank{rank}.json").read_text())
        assert again == pytest.approx(json.loads((straight / f"losses_rank{rank}.json").read_text())[2:], rel=1e-6)
    first, second = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert set(first) == set(second)
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=1e-6, atol=1e-7)


def test_fsdp1_on_cpu_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match=r"FSDP on CPU runs only as FSDP2: pass --fsdp_version 2.*FSDP1 needs a GPU"):
        make_accelerator()


def test_a_vq_model_is_refused_under_fsdp():
    from accelerate.utils import DistributedType

    from hf_vqvae import VQVAEConfig, VQVAEModel

    class ShardedAccelerator:
        distributed_type = DistributedType.FSDP

    model = VQVAEModel(VQVAEConfig(image_size=8, num_downsamples=1, hidden_channels=8, residual_channels=4,
                                   num_embeddings=8, embedding_dim=4))  # fmt: skip
    with pytest.raises(ValueError, match="FSDP .* trains the priors .*not a vqvae model.*without --use_fsdp"):
        prepare_for_sharding(ShardedAccelerator(), model)
