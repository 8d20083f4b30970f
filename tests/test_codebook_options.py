"""The quantizer's codebook mechanisms on values: the rotation trick's gradient, cosine lookup, factorised codes,
k-means on small batches, and the defaults through save_pretrained / from_pretrained and remote code."""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from hf_vqvae import PAPER_CODEBOOK, VectorQuantizer, VQVAE2Config, VQVAE2Model, VQVAEConfig, VQVAEModel
from hf_vqvae.training import ModelArguments
from hf_vqvae.training.builders import build_model
from test_auto_and_hub import BLOCK_PACKAGE, _run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def _rotation_by_hand(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """λ R for one pair of vectors, as the explicit (d, d) matrix of Fifty et al. (2024), eq. 4 and §4.1."""
    z_hat, e_hat = z / z.norm(), e / e.norm()
    r = (z_hat + e_hat) / (z_hat + e_hat).norm()
    eye = torch.eye(len(z), dtype=z.dtype)
    rotation = eye - 2 * torch.outer(r, r) + 2 * torch.outer(e_hat, z_hat)
    return (e.norm() / z.norm()) * rotation


def test_rotation_trick_gradient_equals_the_formula_by_hand():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 5, beta=0.0, rotation_trick=True).train()
    latents = torch.randn(2, 5, 3, 2, dtype=torch.float32, requires_grad=True)
    out = quantizer(latents)
    upstream = torch.randn_like(out.quantized)
    (out.quantized * upstream).sum().backward()

    flat = latents.detach().movedim(1, -1).reshape(-1, 5).double()
    grads = upstream.movedim(1, -1).reshape(-1, 5).double()
    codes = quantizer.codebook.detach().double()[out.indices.flatten()]
    expected = torch.stack([_rotation_by_hand(z, e).T @ g for z, e, g in zip(flat, codes, grads)])
    got = latents.grad.movedim(1, -1).reshape(-1, 5).double()
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(got, grads, atol=1e-3), "the rotation changes the gradient (not straight-through)"
    # The matrix maps z onto its code exactly (λ R z = e), and the forward value is the code itself.
    z, e = flat[0], codes[0]
    assert torch.allclose(_rotation_by_hand(z, e) @ z, e, atol=1e-10)
    assert torch.equal(out.quantized.detach(), quantizer.codebook.detach()[out.indices].movedim(-1, 1))


def test_rotation_trick_keeps_the_commitment_gradient():
    torch.manual_seed(1)
    quantizer = VectorQuantizer(8, 4, beta=0.25, rotation_trick=True, ema_decay=0.99).train()
    latents = torch.randn(1, 4, 3, 3, requires_grad=True)
    codebook = quantizer.codebook.detach().clone()  # before this step's EMA update
    out = quantizer(latents)
    out.loss.backward()
    codes = codebook[out.indices].movedim(-1, 1)
    assert torch.allclose(latents.grad, 0.25 * 2 * (latents - codes).detach() / latents.numel(), atol=1e-7)


def test_cosine_lookup_picks_the_largest_normalised_dot_product():
    torch.manual_seed(2)
    quantizer = VectorQuantizer(32, 6, use_cosine_sim=True).eval()
    with torch.no_grad():
        quantizer.codebook.mul_(torch.rand(32, 1) * 10)  # stored codes of any length: the lookup normalises them
    latents = torch.randn(3, 6, 4, 5) * 7
    out = quantizer(latents)
    flat = latents.movedim(1, -1).reshape(-1, 6).double()
    similarity = F.normalize(flat, dim=1) @ F.normalize(quantizer.codebook.detach().double(), dim=1).T
    assert torch.equal(out.indices.flatten(), similarity.argmax(dim=1))
    # The quantized vectors are the unit-length codes.
    norms = out.quantized.movedim(1, -1).norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    # An encoder output scaled by any positive factor picks the same code (only its direction counts).
    assert torch.equal(quantizer(latents * 0.01).indices, out.indices)


def test_factorised_codes_are_looked_up_in_the_low_dimensional_space():
    torch.manual_seed(3)
    quantizer = VectorQuantizer(16, 8, codebook_dim=3).eval()
    assert quantizer.codebook.shape == (16, 3) and quantizer.project_in.weight.shape == (3, 8)
    latents = torch.randn(2, 8, 3, 3)
    out = quantizer(latents)
    flat = latents.movedim(1, -1).reshape(-1, 8)
    projected = quantizer.project_in(flat).detach()
    brute = torch.cdist(projected.double(), quantizer.codebook.detach().double()).argmin(dim=1)
    assert torch.equal(out.indices.flatten(), brute)
    expected = quantizer.project_out(quantizer.codebook[out.indices]).movedim(-1, 1)
    assert out.quantized.shape == (2, 8, 3, 3) and torch.allclose(out.quantized, expected, atol=1e-6)
    assert torch.equal(quantizer.embed(out.indices), out.quantized.detach()), "decode_code sees the forward's vectors"


def test_ema_codebook_stays_on_the_unit_sphere_with_cosine_lookup():
    quantizer = VectorQuantizer(8, 4, use_cosine_sim=True, ema_decay=0.9, kmeans_init=True).train()
    for _ in range(3):
        quantizer(torch.randn(2, 4, 4, 4) * 5)
    norms = quantizer.codebook.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones(8), atol=1e-5)


def test_kmeans_init_on_fewer_vectors_than_codes_uses_every_vector():
    quantizer = VectorQuantizer(8, 2, kmeans_init=True, ema_decay=0.99).train()
    latents = torch.randn(1, 2, 1, 3)  # 3 vectors for 8 codes: no error, each vector becomes a code
    flat = latents.movedim(1, -1).reshape(-1, 2)
    quantizer(latents)
    assert bool(quantizer.initialized)
    for vector in flat:
        assert (quantizer.codebook.detach() - vector).abs().sum(dim=1).min() < 1e-6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(codebook_dim=0), "codebook_dim"),
        (dict(codebook_dim=2.5), "codebook_dim"),
        (dict(rotation_trick="yes"), "rotation_trick must be true or false"),
        (dict(use_cosine_sim=1), "use_cosine_sim must be true or false"),
        (dict(kmeans_init=None), "kmeans_init must be true or false"),
    ],
)
def test_bad_codebook_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VQVAEConfig(**kwargs)


OPTIONS = dict(rotation_trick=True, use_cosine_sim=True, codebook_dim=4, kmeans_init=False, dead_code_threshold=7)


def _tiny(**options):
    torch.manual_seed(0)
    config = VQVAE2Config(image_size=16, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                          level_downsamples=[1, 1], num_embeddings=16, embedding_dim=8, **options)  # fmt: skip
    return VQVAE2Model(config)


def test_codebook_defaults_round_trip_through_save_pretrained(tmp_path):
    model = _tiny()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    defaults = VQVAE2Config()
    for name in ("kmeans_init", "dead_code_threshold", "rotation_trick", "use_cosine_sim", "codebook_dim"):
        assert saved[name] == getattr(defaults, name), name  # written out, so a later default change cannot alter it
    loaded = VQVAE2Model.from_pretrained(tmp_path)
    for ours, theirs in zip(model.quantizers, loaded.quantizers):
        assert ours.extra_repr() == theirs.extra_repr()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


LOAD_WITHOUT_PACKAGE = """
import json, sys, torch
from safetensors.torch import load_file, save_file
{block}
from transformers import AutoModel
model = AutoModel.from_pretrained("saved", trust_remote_code=True).eval()
pixels = load_file("inputs.safetensors")["pixels"]
with torch.no_grad():
    output = model(pixels)
save_file({{"reconstruction": output.reconstruction.contiguous()}}, "outputs.safetensors")
quantizer = model.quantizers[1]
print(json.dumps({{"module": type(model).__module__, "rotation_trick": quantizer.rotation_trick,
                  "use_cosine_sim": quantizer.use_cosine_sim, "codebook_dim": quantizer.codebook_dim,
                  "dead_code_threshold": quantizer.dead_code_threshold}}))
"""


def test_codebook_options_travel_with_the_remote_code_copy(tmp_path):
    from safetensors.torch import load_file

    model = _tiny(**OPTIONS).eval()
    model.save_pretrained(tmp_path / "saved")
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    save_file({"pixels": pixels}, tmp_path / "inputs.safetensors")
    with torch.no_grad():
        expected = model(pixels).reconstruction
    stdout = _run(LOAD_WITHOUT_PACKAGE.format(block=BLOCK_PACKAGE), {}, tmp_path)
    found = json.loads(stdout.strip().splitlines()[-1])
    assert found.pop("module").startswith("transformers_modules")
    assert found == {"rotation_trick": True, "use_cosine_sim": True, "codebook_dim": 4, "dead_code_threshold": 7}
    assert torch.equal(load_file(tmp_path / "outputs.safetensors")["reconstruction"], expected)


# A small VQ-VAE-2 on CIFAR-10: the architecture is shrunk, no codebook option is given.
SMALL_CIFAR_VQVAE2 = ["--model", "vqvae2", "--preset", "cifar10", "--hidden_channels", "32", "--residual_channels", "16",
                      "--num_embeddings", "128", "--train_batch_size", "32", "--max_train_steps", "40",
                      "--learning_rate", "3e-4", "--lr_warmup_steps", "10", "--logging_steps", "20",
                      "--max_train_samples", "2000", "--max_eval_samples", "512", "--report_to", "none"]  # fmt: skip
PAPER_CODEBOOK_ARGS = ["--paper_codebook"]


@pytest.mark.slow
@pytest.mark.parametrize("codebook", ["defaults", "paper"])
def test_cifar10_vqvae2_keeps_its_codes_alive_with_no_option(codebook, shared_dir, tmp_path, caplog):
    import train as train_script  # scripts/train.py

    extra = PAPER_CODEBOOK_ARGS if codebook == "paper" else []
    argv = [*SMALL_CIFAR_VQVAE2, "--dataset_name", str(shared_dir / "datasets" / "cifar10_jpeg"), *extra]
    with caplog.at_level("WARNING", logger="hf_vqvae.training.loop"):
        metrics = train_script.main(train_script.parse_args([*argv, "--output_dir", str(tmp_path)]))
    usage = [metrics["codebook_usage_level_0"], metrics["codebook_usage_level_1"]]  # over 512 held-out images
    warnings = [record.getMessage() for record in caplog.records if "codebook collapse" in record.getMessage()]
    if codebook == "defaults":
        assert min(usage) > 0.6, f"codes used per level (top, bottom): {usage}"
        assert warnings == []
    else:  # the paper's EMA codebook from its Uniform(-1/K, 1/K) start: the same run collapses, and is told so
        assert max(usage) < 0.1, f"codes used per level (top, bottom): {usage}"
        assert len(warnings) == 2 and "level 0" in warnings[0] and "level 1" in warnings[1]


def _saved_paper_vqvae(folder):
    config = VQVAEConfig(image_size=16, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                         num_embeddings=16, embedding_dim=4, **PAPER_CODEBOOK)  # fmt: skip
    torch.manual_seed(0)
    model = VQVAEModel(config)
    model.save_pretrained(folder)
    return model


def test_fine_tuning_a_paper_codebook_turns_on_the_default_restarts(tmp_path):
    saved = _saved_paper_vqvae(tmp_path / "paper")
    tuned = build_model(ModelArguments(model="vqvae", init_from=str(tmp_path / "paper")), {}, None)
    assert tuned.config.dead_code_threshold == VQVAEConfig().dead_code_threshold == 20
    assert tuned.quantizers[0].dead_code_threshold == 20 and torch.equal(tuned.quantizers[0].steps_since_used, torch.zeros(16, dtype=torch.long))
    assert torch.equal(tuned.quantizers[0].codebook, saved.quantizers[0].codebook), "the trained codes are kept"
    kept_off = build_model(ModelArguments(model="vqvae", init_from=str(tmp_path / "paper")), {"dead_code_threshold": None}, None)
    assert kept_off.quantizers[0].dead_code_threshold is None
    paper = build_model(ModelArguments(model="vqvae", init_from=str(tmp_path / "paper"), paper_codebook=True), {}, None)
    assert paper.quantizers[0].dead_code_threshold is None and not paper.quantizers[0].rotation_trick
    rotated = build_model(ModelArguments(model="vqvae", init_from=str(tmp_path / "paper")), {"rotation_trick": True}, None)
    assert rotated.quantizers[0].rotation_trick
    with pytest.raises(ValueError, match="cannot change a saved model's architecture"):
        build_model(ModelArguments(model="vqvae", init_from=str(tmp_path / "paper")), {"codebook_dim": 2}, None)


def test_paper_codebook_flag_gives_the_papers_quantizer():
    model = build_model(ModelArguments(model="vqvae2", preset="cifar10", paper_codebook=True), {}, None)
    for quantizer in model.quantizers:
        assert (quantizer.kmeans_init, quantizer.dead_code_threshold, quantizer.rotation_trick) == (False, None, False)
        assert bool(quantizer.initialized), "no k-means will run"
    default = build_model(ModelArguments(model="vqvae2", preset="cifar10"), {}, None)
    assert all(q.kmeans_init and q.dead_code_threshold == 20 for q in default.quantizers)
    with pytest.raises(ValueError, match="--paper_codebook applies to the VQ models"):
        build_model(ModelArguments(model="vae", paper_codebook=True), {}, None)


def test_every_option_together_under_bfloat16_autocast_and_cast():
    model = _tiny(**OPTIONS).train()
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(pixels)
    output.loss.backward()
    assert torch.isfinite(output.loss) and output.loss.dtype == torch.float32
    assert model.quantizers[0].project_in.weight.grad is not None, "the factorised projection trains"
    cast = _tiny(**OPTIONS).to(torch.bfloat16).eval()
    encoded = cast.encode(pixels.to(torch.bfloat16))
    assert torch.equal(cast.decode_code(encoded.codes), cast.decode(encoded.quantized))
