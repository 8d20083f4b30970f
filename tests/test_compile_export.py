"""torch.compile and torch.export: the training forward of every convolutional family traces whole (no graph break),
`encode` / `decode_code` export and the exported programs give the eager outputs, a compiled training run equals the
eager one, and `scripts/train.py --torch_compile --channels_last` trains and saves a model that loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_vqvae import VAEConfig, VAEModel, VQVAE2Config, VQVAE2Model, VQVAEConfig, VQVAEModel
from hf_vqvae.models.pixelcnn_prior import PixelCNNPriorConfig, PixelCNNPriorModel
from hf_vqvae.models.vqvae import quantizer as vq_quantizer

ROOT = Path(__file__).resolve().parents[1]

# The quantizer's training-time work, all switched on: k-means init, EMA with bias correction, dead-code restarts
# after one unused step (so they fire in every step of these tests); and the other lookup options.
EMA_OPTIONS = dict(num_embeddings=16, embedding_dim=4, kmeans_init=True, ema_decay=0.9, ema_bias_correction=True,
                   dead_code_threshold=1)  # fmt: skip
LOSS_OPTIONS = dict(num_embeddings=16, embedding_dim=4, kmeans_init=True, ema_decay=None, dead_code_threshold=1,
                    rotation_trick=True, use_cosine_sim=True, codebook_dim=3)  # fmt: skip


def tiny_vqvae(**options) -> VQVAEModel:
    config = VQVAEConfig(image_size=16, hidden_channels=8, residual_channels=4, num_residual_blocks=1,
                         num_downsamples=2, **options)  # fmt: skip
    return VQVAEModel(config)


def tiny_vqvae2(**options) -> VQVAE2Model:
    config = VQVAE2Config(image_size=16, hidden_channels=8, residual_channels=4, num_residual_blocks=1,
                          level_downsamples=[1, 1], **options)  # fmt: skip
    return VQVAE2Model(config)


def tiny_prior() -> PixelCNNPriorModel:
    """Class-conditional, conditioned on a 2x smaller code map, with causal self-attention (both VQ-VAE-2 priors)."""
    config = PixelCNNPriorConfig(num_embeddings=8, hidden_channels=16, num_layers=3, kernel_size=3, first_kernel_size=5,
                                 num_classes=3, condition_num_embeddings=5, condition_hidden_channels=8,
                                 condition_num_residual_blocks=1, condition_upsample_factor=2, dropout=0.1,
                                 code_shape=[6, 6], num_attention_layers=2, num_heads=2)  # fmt: skip
    return PixelCNNPriorModel(config)


def pixels(batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def training_case(name: str):
    """(model in train mode, forward keyword arguments) of each convolutional family, VQ codebooks initialised."""
    if name.startswith("vae"):
        config = VAEConfig(image_size=8, hidden_size=16, latent_dim=3, conv_channels=[4, 8], architecture=name[4:])
        return VAEModel(config).train(), {"pixel_values": torch.rand(2, 1, 8, 8)}
    if name == "pixelcnn_prior":
        inputs = {"codes": torch.randint(0, 8, (2, 6, 6)), "class_labels": torch.tensor([0, 2]),
                  "condition_codes": torch.randint(0, 5, (2, 3, 3))}  # fmt: skip
        return tiny_prior().train(), inputs
    family, options = name.split("-")
    model = (tiny_vqvae if family == "vqvae" else tiny_vqvae2)(**(EMA_OPTIONS if options == "ema" else LOSS_OPTIONS))
    model.train().initialize_codebooks(pixels())
    return model, {"pixel_values": pixels(seed=1)}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "name", ["vae-mlp", "vae-conv", "vqvae-ema", "vqvae-loss", "vqvae2-ema", "vqvae2-loss", "pixelcnn_prior"]
)
def test_training_forward_traces_without_a_graph_break(name):
    model, inputs = training_case(name)
    explanation = torch._dynamo.explain(model)(**inputs)
    reasons = [reason.reason.splitlines()[0] for reason in explanation.break_reasons]
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, reasons


class _Encode(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return tuple(self.model.encode(pixel_values).codes)


class _DecodeCode(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *codes):
        return self.model.decode_code(list(codes))


@pytest.mark.parametrize("make", [tiny_vqvae, tiny_vqvae2], ids=["vqvae", "vqvae2"])
@pytest.mark.parametrize("options", [EMA_OPTIONS, LOSS_OPTIONS], ids=["ema", "loss"])
def test_exported_encode_and_decode_code_give_the_eager_outputs(make, options):
    model = make(**options)
    model.train()(pixels())  # k-means, EMA and restarts: a trained state, not the init
    model.eval()
    images = pixels(seed=3)
    codes = tuple(model.encode(images).codes)
    encode = torch.export.export(_Encode(model), (images,)).module()
    assert all(torch.equal(got, want) for got, want in zip(encode(images), codes, strict=True))
    decode = torch.export.export(_DecodeCode(model), codes).module()
    assert torch.equal(decode(*codes), model.decode_code(list(codes)))
    # The value checks stay in the exported program, as assertions.
    with pytest.raises(RuntimeError, match=r"codes must lie in \[0, 16\)"):
        decode(*codes[:-1], torch.full_like(codes[-1], 16))
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        encode(torch.full_like(images, float("nan")))


def _train_steps(compiled: bool, channels_last: bool = False, steps: int = 3):
    torch.manual_seed(0)
    model = tiny_vqvae2(**EMA_OPTIONS).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(1)
    model.initialize_codebooks(pixels())
    # aot_eager: dynamo + AOTAutograd (the traced graph, run by eager kernels): no C++ build, same random draws.
    forward = torch.compile(model, backend="aot_eager") if compiled else model
    losses = []
    for step in range(steps):
        images = pixels(seed=step)
        images = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        optimizer.zero_grad()
        output = forward(images)
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.detach())
    return torch.stack(losses), model.state_dict()


def test_compiled_and_channels_last_training_equals_eager():
    losses, state = _train_steps(compiled=False)
    compiled_losses, compiled_state = _train_steps(compiled=True)
    assert torch.equal(losses, compiled_losses)
    for key, value in state.items():  # codebooks, EMA statistics, restart counters, weights
        assert torch.equal(value, compiled_state[key]), key
    cl_losses, cl_state = _train_steps(compiled=False, channels_last=True)
    assert torch.allclose(losses, cl_losses, rtol=1e-5)
    for key, value in state.items():
        assert torch.allclose(value.float(), cl_state[key].float(), atol=1e-5), key


def test_initialize_codebooks_is_the_first_eager_steps_k_means():
    options = dict(EMA_OPTIONS, dead_code_threshold=None)  # restarts draw random rows in another order
    torch.manual_seed(0)
    eager = tiny_vqvae2(**options).train()
    torch.manual_seed(0)
    explicit = tiny_vqvae2(**options).train()
    torch.manual_seed(1)
    first = eager(pixels())  # k-means inside the first training forward
    torch.manual_seed(1)
    assert explicit.initialize_codebooks(pixels()) == [0, 1]
    assert explicit.initialize_codebooks(pixels()) == [], "no second k-means"
    second = explicit(pixels())
    assert torch.equal(first.loss, second.loss) and torch.equal(first.reconstruction, second.reconstruction)
    for key, value in eager.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[key]), key


def test_a_compiled_training_forward_refuses_an_uninitialised_codebook():
    model = tiny_vqvae2(**EMA_OPTIONS).train()
    with pytest.raises(RuntimeError, match="initialize_codebooks"):
        torch.compile(model, backend="aot_eager")(pixels())


def _distributed_worker(rank, world_size, store, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    latents = torch.randn(2 * world_size, 3, 4, 4, generator=torch.Generator().manual_seed(7))[2 * rank : 2 * rank + 2]
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)  # the same initial codebook on every rank, and for both runs
        quantizer = vq_quantizer.VectorQuantizer(8, 3, ema_decay=0.9, ema_bias_correction=True, dead_code_threshold=1)
        quantizer.train()(latents)  # EMA statistics all-reduced, restarts from rank 0's rows
        if compiled:  # explain runs the forward once more, as the eager run does
            results["breaks"] = torch._dynamo.explain(quantizer)(latents).graph_break_count
        else:
            quantizer(latents)
        results.update({f"{int(compiled)}.{key}": value for key, value in quantizer.state_dict().items()})
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_training_forward_traces_whole_and_equals_eager(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert rank0.pop("breaks") == rank1.pop("breaks") == 0, "the all-reduces trace; no dist.broadcast in the forward"
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), f"{key} differs between ranks"
        if key.startswith("1."):
            assert torch.equal(value, rank0["0." + key[2:]]), f"{key[2:]}: traced != eager"


@pytest.mark.slow
def test_train_script_with_torch_compile_and_channels_last_saves_a_model_that_loads(tmp_path):
    """One short inductor run (the compile takes tens of seconds on a CPU): trains, checkpoints, saves, loads."""
    from torch._dynamo.utils import counters
    from transformers import AutoModel

    sys.path.insert(0, str(ROOT / "scripts"))
    import train as train_script

    counters.clear()
    arguments = ["--model", "vqvae", "--preset", "mnist", "--resolution", "8", "--num_downsamples", "1",
                 "--hidden_channels", "16", "--residual_channels", "8", "--num_embeddings", "32",
                 "--embedding_dim", "4",
                 "--train_batch_size", "16", "--report_to", "none", "--logging_steps", "1", "--lr_warmup_steps", "1",
                 "--max_train_steps", "3", "--checkpointing_steps", "2", "--torch_compile", "--channels_last",
                 "--output_dir", str(tmp_path)]  # fmt: skip
    metrics = train_script.main(train_script.parse_args(arguments))
    assert metrics["train_steps"] == 3 and metrics["codebook_usage_level_0"] > 0
    assert counters["stats"]["unique_graphs"] >= 1, "the training step was compiled"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "model.safetensors").is_file(), "save_state with channels-last"
    model = AutoModel.from_pretrained(tmp_path)
    assert type(model).__name__ == "VQVAEModel"
    assert bool(model.quantizers[0].initialized), "k-means ran before the first compiled step"
    assert all(parameter.is_contiguous() for parameter in model.parameters())
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.isfinite(model.eval().decode_code(model.encode(images).codes)).all()
