"""hf_vqvae.evaluation against independent computations, and scripts/evaluate.py end to end on the offline digits."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_vqvae import VAEConfig, VAEModel, VQVAE2Config, VQVAE2Model, VQVAEConfig, VQVAEModel
from hf_vqvae.evaluation import (
    binarize,
    codebook_health,
    codebook_health_per_level,
    evaluate_vae,
    evaluate_vq,
    psnr,
    ssim_per_image,
    to_jsonable,
)

ROOT = Path(__file__).resolve().parents[1]


def tiny_vqvae(**overrides) -> VQVAEModel:
    values = dict(num_channels=1, image_size=8, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                  num_downsamples=1, num_embeddings=16, embedding_dim=4)
    return VQVAEModel(VQVAEConfig(**{**values, **overrides}))


def tiny_vqvae2(**overrides) -> VQVAE2Model:
    values = dict(num_channels=3, image_size=16, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                  level_downsamples=[1, 1, 1], num_embeddings=16, embedding_dim=4)
    return VQVAE2Model(VQVAE2Config(**{**values, **overrides}))


def tiny_vae(**overrides) -> VAEModel:
    values = dict(image_size=8, hidden_size=16, latent_dim=3, conv_channels=[4, 8])
    return VAEModel(VAEConfig(**{**values, **overrides}))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image_batches(config, sizes=(4, 4, 3), low=-1.0, seed=1) -> list[dict]:
    height, width = (config.image_size,) * 2 if isinstance(config.image_size, int) else config.image_size
    generator = gen(seed)
    return [
        {"pixel_values": torch.rand(size, config.num_channels, height, width, generator=generator) * (1 - low) + low}
        for size in sizes
    ]


def stacked(batches: list[dict]) -> torch.Tensor:
    return torch.cat([batch["pixel_values"] for batch in batches])


def close(a: float, b: float, rel: float = 1e-5) -> bool:
    return math.isclose(a, float(b), rel_tol=rel, abs_tol=1e-7)


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------------------------
# evaluate_vq
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_vqvae, tiny_vqvae2])
def test_vq_reconstruction_metrics_match_an_independent_computation(make):
    model = make().eval()
    batches = image_batches(model.config)
    metrics = evaluate_vq(model, batches)
    pixels = stacked(batches)
    with torch.no_grad():
        reconstruction = torch.cat([model(b["pixel_values"]).reconstruction for b in batches])
    mse = F.mse_loss(reconstruction, pixels).item()
    mse_01 = F.mse_loss((reconstruction + 1) / 2, (pixels + 1) / 2).item()
    assert metrics["num_images"] == 11
    assert close(metrics["mse"], mse) and close(metrics["mse_01"], mse_01)
    assert close(metrics["psnr"], 10 * math.log10(1 / mse_01))
    assert close(metrics["pixel_variance"], pixels.double().var(unbiased=False))
    assert close(metrics["normalized_mse"], mse / pixels.double().var(unbiased=False).item())
    last = model.config.num_levels - 1
    assert metrics[f"mse_levels_0_to_{last}"] == metrics["mse"]
    assert metrics[f"psnr_levels_0_to_{last}"] == metrics["psnr"]
    shown = (reconstruction.clamp(-1, 1) + 1) / 2  # SSIM of the reconstructions as shown, in [0, 1]
    assert close(metrics["ssim"], ssim_per_image(shown, (pixels + 1) / 2).mean())


def _ssim_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. (2004) SSIM of two (C, H, W) images in [0, 1], window by window with an explicit Gaussian."""
    offsets = np.arange(11) - 5
    weights = np.exp(-np.add.outer(offsets**2, offsets**2) / (2 * 1.5**2))
    weights /= weights.sum()
    c1, c2, values = 0.01**2, 0.03**2, []
    for channel in range(x.shape[0]):
        for top in range(x.shape[1] - 10):
            for left in range(x.shape[2] - 10):
                a, b = x[channel, top : top + 11, left : left + 11], y[channel, top : top + 11, left : left + 11]
                mu_a, mu_b = (weights * a).sum(), (weights * b).sum()
                var_a, var_b = (weights * (a - mu_a) ** 2).sum(), (weights * (b - mu_b) ** 2).sum()
                cov = (weights * (a - mu_a) * (b - mu_b)).sum()
                values.append((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_window_by_window_computation():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 14, 13, generator=generator)
    references = (images + 0.2 * torch.randn(2, 3, 14, 13, generator=generator)).clamp(0, 1)
    got = ssim_per_image(images, references)
    expected = [_ssim_by_loops(a.double().numpy(), b.double().numpy()) for a, b in zip(images, references)]
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(ssim_per_image(images, images), torch.ones(2, dtype=torch.float64))
    # Two flat images a and b: no variance, so SSIM = (2ab + C1) / (a² + b² + C1).
    flat = ssim_per_image(torch.full((1, 1, 16, 16), 0.3), torch.full((1, 1, 16, 16), 0.7))
    assert close(flat[0], (2 * 0.3 * 0.7 + 1e-4) / (0.3**2 + 0.7**2 + 1e-4))
    with pytest.raises(ValueError, match="one shape"):
        ssim_per_image(images, references[:1])


def test_vq_top_levels_only_reconstructions_zero_the_lower_levels():
    model = tiny_vqvae2().eval()
    batches = image_batches(model.config)
    metrics = evaluate_vq(model, batches)
    pixels = stacked(batches)
    with torch.no_grad():
        quantized = [torch.cat(level) for level in zip(*(model.encode(b["pixel_values"]).quantized for b in batches))]
        for last in range(model.config.num_levels):
            kept = quantized[: last + 1] + [torch.zeros_like(q) for q in quantized[last + 1 :]]
            mse = F.mse_loss(model.decode(kept), pixels).item()
            assert close(metrics[f"mse_levels_0_to_{last}"], mse)
            assert close(metrics[f"mse_01_levels_0_to_{last}"], mse / 4)
            assert close(metrics[f"psnr_levels_0_to_{last}"], 10 * math.log10(4 / mse))
    assert metrics["mse_levels_0_to_0"] != metrics["mse_levels_0_to_2"]


def test_vq_codebook_usage_counts_the_codes_of_the_whole_eval_set():
    model = tiny_vqvae2().eval()
    batches = image_batches(model.config)
    metrics = evaluate_vq(model, batches)
    num_codes = model.config.num_embeddings
    with torch.no_grad():
        codes = [torch.cat(level) for level in zip(*(model.encode(b["pixel_values"]).codes for b in batches))]
    for level, level_codes in enumerate(codes):
        unique = level_codes.unique().numel()
        probs = torch.bincount(level_codes.flatten(), minlength=num_codes).double() / level_codes.numel()
        probs = probs[probs > 0]
        assert metrics[f"codebook_usage_level_{level}"] == unique / num_codes
        assert metrics[f"codebook_dead_codes_level_{level}"] == num_codes - unique
        assert close(metrics[f"codebook_perplexity_level_{level}"], torch.exp(-(probs * probs.log()).sum()))


def test_vq_evaluation_restores_training_mode_and_leaves_the_weights_alone():
    model = tiny_vqvae().train()  # EMA codebook: a training-mode forward would update it
    model.quantizers[0].eval()  # a mixed state must come back exactly
    before = {name: value.clone() for name, value in model.state_dict().items()}
    evaluate_vq(model, image_batches(model.config))
    assert model.training and not model.quantizers[0].training and model.decoder.training
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert torch.is_grad_enabled()


def test_vq_max_batches_and_bad_inputs():
    model = tiny_vqvae()
    batches = image_batches(model.config)
    assert evaluate_vq(model, batches, max_batches=2)["num_images"] == 8
    assert evaluate_vq(model, iter(batches), max_batches=1)["num_images"] == 4
    with pytest.raises(ValueError, match="no batches"):
        evaluate_vq(model, [])
    with pytest.raises(ValueError, match="max_batches"):
        evaluate_vq(model, batches, max_batches=0)
    with pytest.raises(ValueError, match="pixel_values"):
        evaluate_vq(model, [batches[0]["pixel_values"]])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        evaluate_vq(model, [{"pixel_values": batches[0]["pixel_values"] * 255}])


# ------------------------------------------------------------------------------------------------------------------
# codebook_health, psnr, to_jsonable
# ------------------------------------------------------------------------------------------------------------------


def test_codebook_health_of_a_hand_made_window():
    usage = torch.tensor([[3, 0, 1, 0], [0, 0, 0, 0]])
    health = codebook_health(usage)
    expected_perplexity = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert health["codebook_usage_level_0"] == 0.5 and health["codebook_dead_codes_level_0"] == 2
    assert close(health["codebook_perplexity_level_0"], expected_perplexity)
    assert health["codebook_usage_level_1"] == 0.0 and health["codebook_dead_codes_level_1"] == 4
    assert health["codebook_perplexity_level_1"] == 1.0  # empty window: the quantizer's convention
    assert codebook_health(torch.tensor([1, 1, 1, 1.0]))["codebook_perplexity_level_0"] == pytest.approx(4.0)
    per_level = codebook_health_per_level(usage)
    assert per_level[0] == {"usage": 0.5, "dead_codes": 2, "perplexity": health["codebook_perplexity_level_0"]}


@pytest.mark.parametrize("bad", [torch.tensor([[1, -1]]), torch.zeros(2, 2, 2), torch.zeros(1, 0), [1, 2]])
def test_codebook_health_rejects_bad_windows(bad):
    with pytest.raises(ValueError, match="usage_window"):
        codebook_health(bad)


def test_psnr_and_to_jsonable():
    assert psnr(0.01) == pytest.approx(20.0) and psnr(0.0) == math.inf
    with pytest.raises(ValueError):
        psnr(-1.0)
    metrics = {"a": torch.tensor(1.5), "b": torch.tensor([1, 2]), "c": np.float32(0.25), "d": np.int64(3),
               "e": (np.arange(2), {"f": torch.tensor([[0.5]])}), "g": "text", "h": None, "i": True}
    converted = to_jsonable(metrics)
    assert converted == {"a": 1.5, "b": [1, 2], "c": 0.25, "d": 3, "e": [[0, 1], {"f": [[0.5]]}], "g": "text",
                         "h": None, "i": True}
    assert type(converted["c"]) is float and type(converted["d"]) is int
    json.dumps(converted)
    with pytest.raises(ValueError, match="JSON"):
        to_jsonable({"x": object()})


# ------------------------------------------------------------------------------------------------------------------
# evaluate_vae
# ------------------------------------------------------------------------------------------------------------------


def test_vae_elbo_nll_and_mse_match_the_model():
    model = tiny_vae().eval()
    batches = image_batches(model.config, low=0.0)
    metrics = evaluate_vae(model, batches, num_samples=5, generator=gen(0))
    generator, elbo, kl, log_px, recon = gen(0), [], [], [], []
    with torch.no_grad():
        for batch in batches:
            output = model(batch["pixel_values"], generator=generator)
            elbo.append(output.elbo), kl.append(output.kl), recon.append(output.reconstruction)
            log_px.append(model.log_likelihood(batch["pixel_values"], num_samples=5, generator=generator))
    elbo, log_px, pixels = torch.cat(elbo), torch.cat(log_px), stacked(batches)
    dims = 1 * 8 * 8
    assert metrics["num_images"] == 11 and metrics["num_dims"] == dims and metrics["num_samples"] == 5
    assert close(metrics["elbo"], elbo.mean()) and close(metrics["kl"], torch.cat(kl).mean())
    assert close(metrics["elbo_bits_per_dim"], -elbo.mean().item() / (dims * math.log(2)))
    assert close(metrics["nll"], -log_px.mean())
    assert close(metrics["nll_bits_per_dim"], -log_px.mean() / (dims * math.log(2)))
    mse_01 = F.mse_loss(torch.cat(recon), pixels).item()
    assert close(metrics["mse_01"], mse_01) and close(metrics["psnr"], 10 * math.log10(1 / mse_01))
    assert "nll" not in evaluate_vae(model, batches)


def test_vae_single_batch_elbo_is_the_forward_mean():
    model = tiny_vae(decoder_distribution="gaussian").eval()
    batch = image_batches(model.config, sizes=(6,), low=0.0)[0]
    metrics = evaluate_vae(model, [batch], generator=gen(3))
    with torch.no_grad():
        expected = model(batch["pixel_values"], generator=gen(3)).elbo.mean()
    assert close(metrics["elbo"], expected)


def test_vae_binarisation():
    model = tiny_vae().train()
    batches = image_batches(model.config, low=0.0)
    dynamic = evaluate_vae(model, batches, num_samples=2, generator=gen(5), binarize="dynamic")
    assert dynamic == evaluate_vae(model, batches, num_samples=2, generator=gen(5), binarize="dynamic")
    assert dynamic["elbo"] != evaluate_vae(model, batches, num_samples=2, generator=gen(6), binarize="dynamic")["elbo"]
    assert model.training
    thresholded = [{"pixel_values": (b["pixel_values"] > 0.5).float()} for b in batches]
    threshold = evaluate_vae(model, batches, generator=gen(7), binarize="threshold")
    assert threshold == {**evaluate_vae(model, thresholded, generator=gen(7)), "binarize": "threshold"}
    sample = binarize(batches[0]["pixel_values"], "dynamic", gen(1))
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sample, binarize(batches[0]["pixel_values"], "dynamic", gen(1)))


def test_vae_bad_arguments():
    batches = image_batches(tiny_vae().config, low=0.0)
    with pytest.raises(ValueError, match="Bernoulli"):
        evaluate_vae(tiny_vae(decoder_distribution="gaussian"), batches, binarize="dynamic")
    with pytest.raises(ValueError, match="binarize"):
        evaluate_vae(tiny_vae(), batches, binarize="random")
    with pytest.raises(ValueError, match="num_samples"):
        evaluate_vae(tiny_vae(), batches, num_samples=-1)


# ------------------------------------------------------------------------------------------------------------------
# scripts/evaluate.py
# ------------------------------------------------------------------------------------------------------------------


def test_evaluate_script_on_a_saved_vqvae(tmp_path, capsys):
    script = load_script()
    model_dir = tmp_path / "vqvae"
    tiny_vqvae().save_pretrained(model_dir)
    report = script.main(script.parse_args([str(model_dir), "--dataset_name", "sklearn-digits", "--batch_size", "16",
                                            "--max_eval_samples", "40", "--device", "cpu"]))
    written = json.loads((model_dir / "eval_results.json").read_text())
    assert written == report and written["model_type"] == "vqvae" and written["skipped_images"] == 0
    metrics = written["metrics"]
    for key in ("mse", "mse_01", "psnr", "pixel_variance", "normalized_mse", "mse_levels_0_to_0",
                "psnr_levels_0_to_0", "codebook_usage_level_0", "codebook_dead_codes_level_0",
                "codebook_perplexity_level_0"):
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), key
    assert metrics["num_images"] == 40
    assert metrics["mse"] > 0 and close(metrics["mse_01"], metrics["mse"] / 4)
    assert 0 < metrics["codebook_usage_level_0"] <= 1 and 1 <= metrics["codebook_perplexity_level_0"] <= 16
    assert 0 <= metrics["codebook_dead_codes_level_0"] < 16
    assert "codebook_usage_level_0" in capsys.readouterr().out


def test_evaluate_script_on_a_saved_vae(tmp_path):
    script = load_script()
    model_dir, out = tmp_path / "vae", tmp_path / "out" / "vae.json"
    tiny_vae().save_pretrained(model_dir)
    script.main(script.parse_args([str(model_dir), "--max_eval_samples", "20", "--num_samples", "3",
                                   "--binarize", "dynamic", "--output_json", str(out), "--device", "cpu"]))
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["num_images"] == 20 and metrics["num_dims"] == 64 and metrics["binarize"] == "dynamic"
    assert metrics["elbo"] < 0 and metrics["nll"] > 0 and metrics["elbo_bits_per_dim"] > 0
    assert 0 <= metrics["mse_01"] <= 1
    assert not (model_dir / "eval_results.json").exists()


def test_evaluate_script_errors(tmp_path):
    script = load_script()
    with pytest.raises(SystemExit):
        script.parse_args([str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        script.parse_args(["org/model"])  # a Hub id needs --output_json
    with pytest.raises(SystemExit):
        script.parse_args([str(tmp_path), "--batch_size", "0"])
    with pytest.raises(ValueError, match="config.json"):
        script.main(script.parse_args([str(tmp_path)]))
    (tmp_path / "config.json").write_text(json.dumps(tiny_vqvae().config.to_dict()))
    with pytest.raises(ValueError, match="safetensors"):
        script.main(script.parse_args([str(tmp_path)]))
