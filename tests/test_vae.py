"""VAE (Kingma & Welling 2013): configs, the ELBO terms against torch.distributions, importance sampling, I/O."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from model_mixin import ModelTesterMixin
from torch.distributions import Bernoulli, Normal, kl_divergence

from hf_vqvae import VAEConfig, VAEModel, VQVAEConfig
from hf_vqvae.models.vae import VAEDecoderOutput, VAEEncoderOutput, VAEModelOutput

VAE_DIR = Path(__file__).resolve().parents[1] / "src" / "hf_vqvae" / "models" / "vae"


def tiny(**overrides) -> VAEConfig:
    fields = dict(image_size=8, hidden_size=16, latent_dim=3, conv_channels=[4, 8])
    return VAEConfig(**{**fields, **overrides})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(config: VAEConfig, batch: int = 4, binary: bool = False, seed: int = 1) -> torch.Tensor:
    height, width = config.image_hw
    x = torch.rand(batch, config.num_channels, height, width, generator=gen(seed))  # (B, C, H, W) in [0, 1]
    return (x > 0.5).float() if binary else x


def reference_log_px(model: VAEModel, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """log p(x | z) per (sample, example) with torch.distributions; latents (L, B, J) -> (L, B)."""
    decoded = model.decode(latents.flatten(0, 1))
    target = x.expand(latents.shape[0], *x.shape).flatten(0, 1)
    if model.config.decoder_distribution == "bernoulli":
        dist = Bernoulli(logits=decoded.logits)
    else:
        dist = Normal(decoded.mean, torch.exp(0.5 * decoded.log_variance))
    return dist.log_prob(target).sum(dim=(1, 2, 3)).view(latents.shape[:2])


def reference_latents(output, num: int, seed: int) -> torch.Tensor:
    """The latents forward drew with `gen(seed)`: z = μ + σ ε, ε (L, B, J) drawn first."""
    mean, log_variance = output.latent_mean, output.latent_log_variance
    noise = torch.randn(num, *mean.shape, generator=gen(seed))
    return mean + torch.exp(0.5 * log_variance) * noise


# ------------------------------------------------------------------------------------------------------------------
# The shared model tests
# ------------------------------------------------------------------------------------------------------------------


class _VAETester(ModelTesterMixin):
    model_class = VAEModel

    def make_inputs(self) -> dict:
        return {"pixel_values": images(self.make_config(), batch=3), "generator": gen(0)}

    def outputs_to_compare(self, model, inputs):
        output = model(inputs["pixel_values"], num_latent_samples=2, generator=gen(5))
        return [output.loss, output.elbo, output.reconstruction, model.sample(2, generator=gen(6))]

    def expected_shapes(self, config, inputs):
        batch, (height, width), dim = inputs["pixel_values"].shape[0], config.image_hw, config.latent_dim
        return {
            "loss": (), "elbo": (batch,), "reconstruction_log_likelihood": (batch,), "kl": (batch,),
            "reconstruction": (batch, config.num_channels, height, width),
            "latent_mean": (batch, dim), "latent_log_variance": (batch, dim),
        }  # fmt: skip


class TestMLPBernoulli(_VAETester):
    def make_config(self):
        return tiny()


class TestConvGaussian(_VAETester):
    def make_config(self):
        return tiny(architecture="conv", num_channels=3, decoder_distribution="gaussian", initializer_range=None)


class TestFreyConv(_VAETester):
    def make_config(self):
        return tiny(architecture="conv", image_size=[28, 20], decoder_distribution="gaussian")


# ------------------------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------------------------


def test_presets_match_the_paper():
    mnist = VAEConfig.from_preset("mnist-paper")
    assert (mnist.architecture, mnist.hidden_size, mnist.hidden_activation) == ("mlp", 500, "tanh")
    assert (mnist.decoder_distribution, mnist.image_size, mnist.latent_dim) == ("bernoulli", 28, 20)
    assert mnist.initializer_range == 0.01
    frey = VAEConfig.from_preset("frey-paper")
    assert (frey.image_size, frey.hidden_size, frey.decoder_distribution) == ([28, 20], 200, "gaussian")
    assert frey.learn_decoder_variance is True
    assert VAEConfig.from_preset("mnist-conv").architecture == "conv"
    assert VAEConfig.list_presets() == ["frey-paper", "mnist-conv", "mnist-paper"]
    assert VAEConfig.from_preset("mnist-paper", latent_dim=2).latent_dim == 2


def test_mnist_paper_parameter_count_and_init():
    model = VAEModel(VAEConfig.from_preset("mnist-paper"))
    encoder = (784 * 500 + 500) + (500 * 40 + 40)  # x -> h -> [μ, log σ²]
    decoder = (20 * 500 + 500) + (500 * 784 + 784)  # z -> h -> logits
    assert model.num_parameters() == encoder + decoder
    weight = model.decoder.body[2].weight
    assert abs(weight.std().item() - 0.01) < 5e-4 and abs(weight.mean().item()) < 5e-4  # N(0, 0.01)
    assert all(torch.count_nonzero(p) == 0 for name, p in model.named_parameters() if name.endswith("bias"))


def test_initializer_range_none_uses_pytorch_default():
    torch.manual_seed(3)
    model = VAEModel(tiny(initializer_range=None))
    layer = model.encoder.head  # nn.Linear(16, 6): kaiming-uniform weights and biases in ±1/sqrt(16)
    assert layer.weight.abs().max() <= 0.25 and layer.weight.std() > 0.1
    assert torch.count_nonzero(layer.bias) == layer.bias.numel() and layer.bias.abs().max() <= 0.25


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(architecture="rnn"), "mlp, conv"),
        (dict(decoder_distribution="poisson"), "bernoulli, gaussian"),
        (dict(hidden_activation="gelu"), "tanh, relu"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_channels=0), "num_channels"),
        (dict(num_latent_samples=0), "num_latent_samples"),
        (dict(image_size=[28]), "image_size"),
        (dict(image_size=0), "image_size"),
        (dict(conv_channels=[]), "conv_channels"),
        (dict(conv_channels=[4, 0]), "conv_channels"),
        (dict(architecture="conv", image_size=30, conv_channels=[4, 8]), "divisible by 4"),
        (dict(architecture="conv", image_size=[28, 20], conv_channels=[4, 8, 16]), "divisible by 8"),
        (dict(initializer_range=-1.0), "initializer_range"),
        (dict(decoder_log_variance=float("nan")), "decoder_log_variance"),
        (dict(learn_decoder_variance="yes"), "learn_decoder_variance"),
    ],
)
def test_bad_config_values_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_unknown_preset_lists_known_presets():
    with pytest.raises(ValueError, match="frey-paper, mnist-conv, mnist-paper"):
        VAEConfig.from_preset("cifar-paper")


def test_config_round_trip_and_refuses_other_model_types(tmp_path):
    config = VAEConfig.from_preset("frey-paper", latent_dim=4)
    config.save_pretrained(tmp_path / "vae")
    loaded = VAEConfig.from_pretrained(tmp_path / "vae")
    assert loaded.image_size == [28, 20] and loaded.latent_dim == 4 and loaded.decoder_distribution == "gaussian"
    VQVAEConfig().save_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match="model_type 'vqvae'"):
        VAEConfig.from_pretrained(tmp_path / "vq")


def test_folder_imports_only_torch_transformers_and_same_folder_modules():
    allowed = {"torch", "transformers", "__future__", "copy", "math", "os", "dataclasses", "typing"}
    for path in VAE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{path.name}: only single-dot relative imports"
                assert node.level == 1 or node.module.split(".")[0] in allowed, f"{path.name}: {node.module}"
            elif isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] in allowed for alias in node.names), path.name


# ------------------------------------------------------------------------------------------------------------------
# The ELBO terms
# ------------------------------------------------------------------------------------------------------------------


def test_encode_decode_shapes_and_fields():
    config = tiny(image_size=[8, 4])
    model = VAEModel(config)
    encoded = model.encode(images(config, batch=5), generator=gen(0))
    assert isinstance(encoded, VAEEncoderOutput)
    assert encoded.mean.shape == encoded.log_variance.shape == encoded.latent.shape == (5, 3)
    noise = torch.randn(5, 3, generator=gen(0))
    torch.testing.assert_close(encoded.latent, encoded.mean + torch.exp(0.5 * encoded.log_variance) * noise)
    decoded = model.decode(encoded.latent)
    assert isinstance(decoded, VAEDecoderOutput) and decoded.log_variance is None
    assert decoded.mean.shape == decoded.logits.shape == (5, 1, 8, 4)
    torch.testing.assert_close(decoded.mean, torch.sigmoid(decoded.logits))


def test_gaussian_decoder_variance_learned_or_fixed():
    latent = torch.randn(2, 3)
    learned = VAEModel(tiny(decoder_distribution="gaussian", initializer_range=None)).decode(latent)
    assert learned.logits is None and learned.log_variance.shape == (2, 1, 8, 8)
    assert learned.log_variance.std() > 0 and 0 < learned.mean.min() and learned.mean.max() < 1
    fixed = VAEModel(tiny(decoder_distribution="gaussian", learn_decoder_variance=False, decoder_log_variance=-2.0))
    assert torch.equal(fixed.decode(latent).log_variance, torch.full((2, 1, 8, 8), -2.0))


def test_kl_matches_torch_distributions():
    config = tiny(initializer_range=None)
    output = VAEModel(config)(images(config), generator=gen(0))
    mean, std = output.latent_mean, torch.exp(0.5 * output.latent_log_variance)
    expected = kl_divergence(Normal(mean, std), Normal(torch.zeros_like(mean), torch.ones_like(std))).sum(-1)
    torch.testing.assert_close(output.kl, expected)
    assert (output.kl > 0).all()


@pytest.mark.parametrize("num_latent_samples", [1, 3])
def test_bernoulli_elbo_matches_torch_distributions(num_latent_samples):
    config = tiny(initializer_range=None)
    model, x = VAEModel(config), images(config, binary=True)
    output = model(x, num_latent_samples=num_latent_samples, generator=gen(7))
    latents = reference_latents(output, num_latent_samples, seed=7)
    expected = reference_log_px(model, x, latents).mean(0)  # 1/L Σ_l log p(x | z_l)
    torch.testing.assert_close(output.reconstruction_log_likelihood, expected)
    torch.testing.assert_close(output.elbo, output.reconstruction_log_likelihood - output.kl)
    torch.testing.assert_close(output.loss, -output.elbo.mean())
    torch.testing.assert_close(output.reconstruction, model.decode(latents[0]).mean)  # the first sample's mean


@pytest.mark.parametrize("learned", [True, False])
def test_gaussian_reconstruction_matches_torch_distributions(learned):
    config = tiny(decoder_distribution="gaussian", learn_decoder_variance=learned, decoder_log_variance=-1.5)
    model, x = VAEModel(config), images(config)
    output = model(x, num_latent_samples=2, generator=gen(8))
    expected = reference_log_px(model, x, reference_latents(output, 2, seed=8)).mean(0)
    torch.testing.assert_close(output.reconstruction_log_likelihood, expected)
    torch.testing.assert_close(output.elbo, expected - output.kl)


def test_gradient_flows_through_the_reparameterised_sample():
    config = tiny(initializer_range=None)
    model = VAEModel(config)
    output = model(images(config), generator=gen(0))
    output.reconstruction_log_likelihood.sum().backward()  # no KL: the encoder is reached only through z = μ + σε
    for name, parameter in model.encoder.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} got a zero gradient"
    log_variance_rows = model.encoder.head.weight.grad[config.latent_dim :]  # the σ part of the reparameterisation
    assert log_variance_rows.abs().sum() > 0


def test_forward_return_tuple():
    config = tiny()
    model, x = VAEModel(config), images(config)
    output = model(x, generator=gen(0))
    as_tuple = model(x, generator=gen(0), return_dict=False)
    assert isinstance(output, VAEModelOutput) and len(as_tuple) == 7
    torch.testing.assert_close(as_tuple[0], output.loss)


# ------------------------------------------------------------------------------------------------------------------
# Importance-sampled log-likelihood
# ------------------------------------------------------------------------------------------------------------------


def reference_log_likelihood(model, x, num_samples: int, seed: int) -> torch.Tensor:
    """logsumexp_k [log p(x|z_k) + log p(z_k) − log q(z_k|x)] − log K, all K samples at once."""
    with torch.no_grad():
        output = model(x, generator=gen(0))
        mean, std = output.latent_mean, torch.exp(0.5 * output.latent_log_variance)
        latents = mean + std * torch.randn(num_samples, *mean.shape, generator=gen(seed))  # (K, B, J)
        log_pz = Normal(0.0, 1.0).log_prob(latents).sum(-1)
        log_qz = Normal(mean, std).log_prob(latents).sum(-1)
        log_weights = reference_log_px(model, x, latents) + log_pz - log_qz  # (K, B)
    return torch.logsumexp(log_weights, dim=0) - math.log(num_samples)


@pytest.mark.parametrize("distribution", ["bernoulli", "gaussian"])
def test_log_likelihood_matches_direct_computation(distribution):
    config = tiny(decoder_distribution=distribution, initializer_range=None)
    model, x = VAEModel(config), images(config, binary=distribution == "bernoulli")
    estimate = model.log_likelihood(x, num_samples=20, chunk_size=6, generator=gen(11))
    assert estimate.shape == (4,)
    torch.testing.assert_close(estimate, reference_log_likelihood(model, x, 20, seed=11))


def test_log_likelihood_is_invariant_to_chunk_size():
    config = tiny(initializer_range=None)
    model, x = VAEModel(config), images(config)
    results = [model.log_likelihood(x, num_samples=30, chunk_size=size, generator=gen(2)) for size in (1, 7, 30, 99)]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], rtol=1e-6, atol=1e-5)


def test_log_likelihood_bounds_the_elbo_and_is_stable():
    config = tiny(decoder_distribution="gaussian", initializer_range=None)
    model, x = VAEModel(config), images(config, batch=8)
    elbo = model(x, num_latent_samples=256, generator=gen(0)).elbo.detach()
    estimate = model.log_likelihood(x, num_samples=256, chunk_size=64, generator=gen(1))
    assert estimate.mean() > elbo.mean()  # the IWAE bound with K = 256 is tighter than the ELBO (nats per example)
    # A sharp decoder makes every log-weight around -1e4: exp() underflows, the logsumexp must not.
    sharp = VAEModel(tiny(decoder_distribution="gaussian", learn_decoder_variance=False, decoder_log_variance=-10.0))
    log_px = sharp.log_likelihood(x, num_samples=16, chunk_size=5, generator=gen(1))
    assert torch.isfinite(log_px).all() and (log_px < -1000).all()


# ------------------------------------------------------------------------------------------------------------------
# Sampling, Frey faces, I/O and input checks
# ------------------------------------------------------------------------------------------------------------------


def test_sample_shape_range_and_reproducibility():
    model = VAEModel(tiny(image_size=[8, 4], initializer_range=None))
    first, again, other = (model.sample(6, generator=gen(seed)) for seed in (3, 3, 4))
    assert first.shape == (6, 1, 8, 4) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)
    torch.testing.assert_close(first, model.decode(torch.randn(6, 3, generator=gen(3))).mean)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_frey_image_size(architecture):
    config = VAEConfig.from_preset("frey-paper", architecture=architecture, hidden_size=32, conv_channels=[4, 8])
    model, x = VAEModel(config), images(config, batch=2)
    output = model(x, generator=gen(0))
    assert output.reconstruction.shape == x.shape == (2, 1, 28, 20)
    assert output.latent_mean.shape == (2, 10) and torch.isfinite(output.elbo).all()
    assert model.sample(3, generator=gen(0)).shape == (3, 1, 28, 20)
    assert model.log_likelihood(x, num_samples=4, generator=gen(0)).shape == (2,)


def test_saved_folder_loads_as_remote_code_with_identical_outputs(tmp_path):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = tiny(architecture="conv", decoder_distribution="gaussian")
    model, x = VAEModel(config).eval(), images(config)
    model.save_pretrained(tmp_path)
    assert {"configuration_vae.py", "modeling_vae.py", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    remote_class = get_class_from_dynamic_module("modeling_vae.VAEModel", str(tmp_path))
    assert remote_class is not VAEModel
    for loaded in (VAEModel.from_pretrained(tmp_path), remote_class.from_pretrained(tmp_path)):
        before, after = model(x, generator=gen(3)), loaded.eval()(x, generator=gen(3))
        assert torch.equal(before.elbo, after.elbo) and torch.equal(before.reconstruction, after.reconstruction)


def test_from_pretrained_refuses_missing_or_truncated_weights(tmp_path):
    model = VAEModel(tiny())
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        VAEModel.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(ValueError, match="no model.safetensors"):
        VAEModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: x[:, :0], "channels"),
        (lambda x: torch.cat([x, x], dim=1), "channels"),
        (lambda x: x[..., :4], "size"),
        (lambda x: x[0], r"\(batch, 1, 8, 8\)"),
        (lambda x: x.index_fill(0, torch.tensor([1]), float("nan")), "NaN"),
        (lambda x: x.index_fill(0, torch.tensor([1]), float("inf")), "Inf"),
        (lambda x: x * 2 - 1, r"\[0, 1\]"),
    ],
)
def test_bad_pixel_values_raise(make, message):
    config = tiny()
    model = VAEModel(config)
    with pytest.raises(ValueError, match=message):
        model(make(images(config)))


def test_bad_arguments_raise():
    config = tiny(decoder_distribution="gaussian")
    model, x = VAEModel(config), images(config)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.log_likelihood(x + 0.5, num_samples=2)
    with pytest.raises(ValueError, match="latent_dim = 3"):
        model.decode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="num_latent_samples"):
        model(x, num_latent_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        model.log_likelihood(x, num_samples=2, chunk_size=0)
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(0)
