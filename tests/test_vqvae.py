import pytest
import torch

from hf_vqvae import PAPER_CODEBOOK, VQVAE2Config, VQVAE2Model, VQVAEConfig, VQVAEModel, list_presets
from model_mixin import ModelTesterMixin


def tiny_vqvae_config(**overrides):
    values = dict(num_channels=3, image_size=16, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                  num_downsamples=2, num_embeddings=32, embedding_dim=8)
    return VQVAEConfig(**{**values, **overrides})


def tiny_vqvae2_config(**overrides):
    values = dict(num_channels=3, image_size=32, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                  level_downsamples=[1, 2], num_embeddings=32, embedding_dim=8)
    return VQVAE2Config(**{**values, **overrides})


class _VQTester(ModelTesterMixin):
    def make_inputs(self):
        config = self.make_config()
        size = config.image_size
        generator = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.rand(2, config.num_channels, size, size, generator=generator) * 2 - 1}

    def outputs_to_compare(self, model, inputs):
        with torch.no_grad():
            output = model(**inputs)
        return [output.reconstruction, *output.codes]

    def expected_shapes(self, config, inputs):
        batch = inputs["pixel_values"].shape[0]
        levels = config.num_levels
        return {
            "reconstruction": tuple(inputs["pixel_values"].shape),
            "codes": [(batch, *shape) for shape in config.latent_shapes()],
            "perplexity": (levels,),
            "usage": (levels, config.num_embeddings),
        }


class TestVQVAE(_VQTester):
    model_class = VQVAEModel

    def make_config(self):
        return tiny_vqvae_config()


class TestVQVAEGradientCodebook(_VQTester):
    model_class = VQVAEModel

    def make_config(self):
        return tiny_vqvae_config(ema_decay=None, num_channels=1)


class TestVQVAE2(_VQTester):
    model_class = VQVAE2Model

    def make_config(self):
        return tiny_vqvae2_config()


class TestVQVAE2ThreeLevels(_VQTester):
    model_class = VQVAE2Model

    def make_config(self):
        return tiny_vqvae2_config(level_downsamples=[1, 1, 2], dead_code_threshold=2, ema_bias_correction=True)


class TestVQVAECompact(_VQTester):
    model_class = VQVAEModel

    def make_config(self):
        return tiny_vqvae_config(architecture="compact", num_channels=1)


class TestVQVAE2Compact(_VQTester):
    model_class = VQVAE2Model

    def make_config(self):
        return tiny_vqvae2_config(architecture="compact")


def test_compact_codes_depend_only_on_their_own_patch():
    """The compact encoder's code at a position changes only when pixels near its 4x4 patch change."""
    model = VQVAEModel(tiny_vqvae_config(architecture="compact", num_channels=1, image_size=32)).eval()
    pixels = torch.rand(1, 1, 32, 32) * 2 - 1
    changed = pixels.clone()
    changed[..., 16:, 16:] = torch.rand(1, 1, 16, 16) * 2 - 1  # the bottom-right quarter
    with torch.no_grad():
        before, after = model.encode(pixels).codes[0], model.encode(changed).codes[0]
        features = model.pre_quantizers[0](model.encoders[0](pixels))
        features_changed = model.pre_quantizers[0](model.encoders[0](changed))
    untouched = (slice(None), slice(None), slice(0, 3), slice(None))  # latent rows 0..2 read pixel rows 0..11 only
    assert torch.equal(features[untouched], features_changed[untouched])
    assert torch.equal(before[:, :3], after[:, :3])
    assert not torch.equal(features, features_changed)
    paper = VQVAEModel(tiny_vqvae_config(num_channels=1, image_size=32)).eval()  # the paper's encoder sees further
    with torch.no_grad():
        wide = paper.pre_quantizers[0](paper.encoders[0](pixels)), paper.pre_quantizers[0](paper.encoders[0](changed))
    assert not torch.equal(wide[0][untouched], wide[1][untouched])


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="architecture must be one of paper, compact, got 'resnet'"):
        VQVAEConfig(architecture="resnet")


@pytest.mark.parametrize("make", [tiny_vqvae_config, tiny_vqvae2_config])
def test_decode_code_reproduces_forward(make):
    config = make()
    model = (VQVAEModel if isinstance(config, VQVAEConfig) else VQVAE2Model)(config).eval()
    pixels = torch.rand(3, 3, config.image_size, config.image_size) * 2 - 1
    with torch.no_grad():
        output = model(pixels)
        encoded = model.encode(pixels)
        decoded = model.decode_code(encoded.codes)
    assert all(code.dtype == torch.long for code in encoded.codes)
    assert torch.equal(decoded, output.reconstruction)
    # Re-encoding the code vectors' decoding is not the identity, but codes are valid indices.
    assert all(0 <= int(code.min()) and int(code.max()) < config.num_embeddings for code in encoded.codes)


def test_loss_is_sum_of_its_terms():
    config = tiny_vqvae2_config(ema_decay=None, beta=0.5)
    model = VQVAE2Model(config).train()
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    output = model(pixels)
    expected = torch.nn.functional.mse_loss(output.reconstruction, pixels)
    assert torch.allclose(output.reconstruction_loss, expected)
    total = output.reconstruction_loss + output.codebook_loss + 0.5 * output.commitment_loss
    assert torch.allclose(output.loss, total)
    # With the codebook loss, ‖sg[z_e] - e‖² and ‖z_e - sg[e]‖² have the same value.
    assert torch.allclose(output.codebook_loss, output.commitment_loss)
    assert output.usage.sum(dim=1).tolist() == [2 * 4 * 4, 2 * 8 * 8]
    assert torch.all(output.perplexity >= 1) and torch.all(output.perplexity <= config.num_embeddings)


def test_lower_level_depends_on_upper_level_codes():
    """VQ-VAE-2 Fig. 2a: the bottom quantizer input is conditioned on the decoded top level."""
    model = VQVAE2Model(tiny_vqvae2_config()).eval()
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    features = model._encoder_features(pixels)
    top = model.encode(pixels).quantized[0]
    condition = model.condition_decoders[0](top)
    assert condition.shape == (1, 8, 8, 8)
    other = model.condition_decoders[0](torch.randn_like(top))
    assert not torch.allclose(condition, other)
    assert features[1].shape == (1, 16, 8, 8) and features[0].shape == (1, 16, 4, 4)


def test_presets_match_the_papers():
    presets = list_presets()
    assert presets["VQVAEConfig"] == ["cifar10", "cifar10-paper", "imagenet128-paper", "mnist", "mnist-residual"]
    assert presets["VQVAE2Config"] == ["cifar10", "ffhq1024-paper", "imagenet256-paper", "rosinality-ffhq256"]
    # Sonnet's vqvae_example size: 128 hidden, 2 residual blocks of 32, 8x8 latent, K = 512, D = 64, EMA 0.99.
    sonnet = VQVAEConfig.from_preset("cifar10")
    assert (sonnet.hidden_channels, sonnet.residual_channels, sonnet.num_residual_blocks) == (128, 32, 2)
    assert (sonnet.num_embeddings, sonnet.embedding_dim, sonnet.ema_decay) == (512, 64, 0.99)
    assert sonnet.latent_shapes() == [(8, 8)] and sonnet.num_downsamples == 2
    assert VQVAE2Config.from_preset("cifar10").latent_shapes() == [(4, 4), (8, 8)]
    # Every preset gets the codebook defaults (k-means init, restarts); PAPER_CODEBOOK restores the papers' codebook.
    assert (sonnet.kmeans_init, sonnet.dead_code_threshold, sonnet.rotation_trick) == (True, 20, False)
    paper = VQVAE2Config.from_preset("imagenet256-paper", **PAPER_CODEBOOK)
    assert (paper.kmeans_init, paper.dead_code_threshold, paper.rotation_trick) == (False, None, False)
    assert VQVAEConfig.from_preset("imagenet128-paper").latent_shapes() == [(32, 32)]
    assert VQVAEConfig.from_preset("mnist").latent_shapes() == [(7, 7)]
    assert VQVAEConfig.from_preset("mnist").num_embeddings == 128
    cifar = VQVAEConfig.from_preset("cifar10-paper", num_embeddings=64, embedding_dim=10)
    assert (cifar.hidden_channels, cifar.num_embeddings, cifar.embedding_dim) == (256, 64, 10)
    assert cifar.latent_shapes() == [(8, 8)]
    imagenet = VQVAE2Config.from_preset("imagenet256-paper")
    assert imagenet.latent_shapes() == [(32, 32), (64, 64)]
    assert (imagenet.num_embeddings, imagenet.embedding_dim) == (512, 64)
    assert VQVAE2Config.from_preset("ffhq1024-paper").latent_shapes() == [(32, 32), (64, 64), (128, 128)]
    assert VQVAEConfig.from_preset("mnist", num_embeddings=256).num_embeddings == 256


def _rosinality_layout(shared_dir):
    lines = (shared_dir / "reference" / "rosinality_vqvae2_state_dict.txt").read_text().splitlines()
    layout = {}
    for line in lines:
        key, rest = line.split(" ", 1)
        shape = tuple(int(v) for v in rest.split(")")[0].strip("(").split(",") if v.strip())
        layout[key] = shape
    return layout


ROSINALITY_PREFIXES = {
    "enc_b.": "encoders.1.", "enc_t.": "encoders.0.", "quantize_conv_t.": "pre_quantizers.0.",
    "quantize_conv_b.": "pre_quantizers.1.", "dec_t.": "condition_decoders.0.", "dec.": "decoder.",
    "upsample_t.": "upsamplers.0_to_1.blocks.0.", "quantize_t.": "quantizers.0.", "quantize_b.": "quantizers.1.",
}  # fmt: skip
ROSINALITY_QUANTIZER = {"embed": ("codebook", True), "cluster_size": ("ema_cluster_size", False),
                        "embed_avg": ("ema_embed_sum", True)}  # fmt: skip


def test_rosinality_preset_has_every_tensor_of_the_reference_layout(shared_dir):
    """Each key of rosinality's VQVAE() state dict maps to one of ours with the same (or transposed) shape."""
    ours = {key: tuple(value.shape) for key, value in VQVAE2Model(VQVAE2Config.from_preset("rosinality-ffhq256")).state_dict().items()}
    reference = _rosinality_layout(shared_dir)
    assert len(reference) == 64
    matched = set()
    for key, shape in reference.items():
        prefix = next(p for p in ROSINALITY_PREFIXES if key.startswith(p))
        name = ROSINALITY_PREFIXES[prefix] + key[len(prefix):]
        if prefix.startswith("quantize_") and not prefix.startswith("quantize_conv"):
            field, transposed = ROSINALITY_QUANTIZER[key[len(prefix):]]
            name, shape = ROSINALITY_PREFIXES[prefix] + field, shape[::-1] if transposed else shape
        assert ours.get(name) == shape, f"{key} -> {name}: {ours.get(name)} != {shape}"
        matched.add(name)
    leftover = {key for key in ours if key not in matched}
    assert leftover == {f"quantizers.{i}.{b}" for i in (0, 1) for b in ("ema_steps", "initialized", "steps_since_used")}


def test_bfloat16_autocast_keeps_the_quantizer_in_float32():
    model = VQVAE2Model(tiny_vqvae2_config()).train()
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(pixels)
    assert output.reconstruction.dtype == torch.bfloat16
    assert output.commitment_loss.dtype == torch.float32 and torch.isfinite(output.loss)
    assert all(q.codebook.dtype == torch.float32 and q.ema_embed_sum.dtype == torch.float32 for q in model.quantizers)
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_a_model_cast_to_bfloat16_runs_end_to_end():
    model = VQVAEModel(tiny_vqvae_config()).to(torch.bfloat16).train()
    output = model(torch.rand(2, 3, 16, 16, dtype=torch.bfloat16) * 2 - 1)
    assert output.reconstruction.dtype == torch.bfloat16 and torch.isfinite(output.loss)
    assert torch.isfinite(model.quantizers[0].codebook).all()
