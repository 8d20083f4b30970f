"""Bad input gets a ValueError that says what is wrong and how to fix it (issue: core library, point 5)."""

import pytest
import torch

from hf_vqvae import VQVAE2Config, VQVAE2Model, VQVAEConfig, VQVAEModel


@pytest.fixture(scope="module")
def model():
    config = VQVAE2Config(image_size=32, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                          level_downsamples=[1, 2], num_embeddings=32, embedding_dim=8)  # fmt: skip
    return VQVAE2Model(config).eval()


def test_wrong_channel_count(model):
    with pytest.raises(ValueError, match="has 1 channels but the model expects 3"):
        model(torch.zeros(1, 1, 32, 32))


def test_wrong_number_of_dimensions(model):
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        model(torch.zeros(3, 32, 32))


def test_size_not_divisible_by_the_downsampling_factor(model):
    with pytest.raises(ValueError, match="30x32 is not divisible by the total downsampling factor 8; .* 24x32"):
        model(torch.zeros(1, 3, 30, 32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels(model, bad):
    pixels = torch.zeros(1, 3, 32, 32)
    pixels[0, 1, 2, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.encode(pixels)


def test_codes_out_of_range(model):
    codes = [torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 8, 8), 32)]
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 32\), got values in \[32, 32\]"):
        model.decode_code(codes)
    codes[1] = torch.full((1, 8, 8), -1)
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model.decode_code(codes)


def test_codes_of_the_wrong_shape(model):
    with pytest.raises(ValueError, match=r"level 0 has shape \(1, 5, 4\), expected \(1, 4, 4\)"):
        model.decode_code([torch.zeros(1, 5, 4, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"\(batch, height, width\)"):
        model.decode_code([torch.zeros(4, 4, dtype=torch.long), torch.zeros(8, 8, dtype=torch.long)])


def test_wrong_number_of_levels(model):
    with pytest.raises(ValueError, match="expects 2 code map"):
        model.decode_code([torch.zeros(1, 8, 8, dtype=torch.long)])


def test_single_level_model_accepts_a_bare_code_tensor():
    model = VQVAEModel(VQVAEConfig(image_size=16, hidden_channels=8, residual_channels=4, num_embeddings=16)).eval()
    codes = model.encode(torch.zeros(1, 3, 16, 16)).codes
    assert torch.equal(model.decode_code(codes[0]), model.decode_code(codes))


@pytest.mark.parametrize(
    "config_class, kwargs, message",
    [
        (VQVAEConfig, dict(num_embeddings=0), "num_embeddings must be an integer >= 1, got 0"),
        (VQVAEConfig, dict(beta=-1.0), "beta .* got -1.0"),
        (VQVAEConfig, dict(ema_decay=1.5), "ema_decay must lie strictly between 0 and 1"),
        (VQVAEConfig, dict(ema_decay=0.0), "ema_decay must lie strictly between 0 and 1"),
        (VQVAEConfig, dict(embedding_dim=-3), "embedding_dim"),
        (VQVAEConfig, dict(image_size=30), "image_size 30 is not divisible by the total downsampling factor 4"),
        (VQVAE2Config, dict(level_downsamples=[]), "level_downsamples must be a non-empty list"),
        (VQVAE2Config, dict(level_downsamples=[1, -1]), "level_downsamples"),
        (VQVAE2Config, dict(dead_code_threshold=0), "dead_code_threshold"),
    ],
)
def test_config_values_out_of_range(config_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config_class(**kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown VQVAE2Config preset 'imagenet'; known presets: cifar10, ffhq1024-paper, "
                                         "imagenet256-paper, rosinality-ffhq256"):  # fmt: skip
        VQVAE2Config.from_preset("imagenet")
    with pytest.raises(ValueError, match="known presets: cifar10, cifar10-paper, imagenet128-paper, mnist"):
        VQVAEConfig.from_preset("cifar")
