"""The rows of benchmarks/samples_cifar10.py that are built from models: the top codes of real images kept, the bottom
codes sampled by the bottom prior."""

import pytest
import torch
from script_modules import load_script

from hf_vqvae import PixelCNNPriorConfig, PixelCNNPriorModel, VQVAE2Config, VQVAE2Model, VQVAE2Pipeline


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/samples_cifar10.py")


@pytest.fixture(scope="module")
def pipe():
    """A tiny untrained two-level VQ-VAE-2 (RGB 16x16) with a class-conditional prior per level."""
    torch.manual_seed(0)
    vqvae = VQVAE2Model(VQVAE2Config(num_channels=3, image_size=16, hidden_channels=16, residual_channels=8,
                                     num_residual_blocks=1, level_downsamples=[1, 1], num_embeddings=16,
                                     embedding_dim=4))  # fmt: skip
    top_shape, bottom_shape = vqvae.config.latent_shapes(None)
    small = dict(num_embeddings=16, hidden_channels=8, num_layers=2, num_classes=10)
    top = PixelCNNPriorModel(PixelCNNPriorConfig(**small, condition_num_embeddings=0, code_shape=list(top_shape)))
    bottom = PixelCNNPriorModel(PixelCNNPriorConfig(
        **small, condition_num_embeddings=16, condition_hidden_channels=8, condition_num_residual_blocks=1,
        condition_upsample_factor=bottom_shape[0] // top_shape[0], code_shape=list(bottom_shape)))  # fmt: skip
    return VQVAE2Pipeline(vqvae=vqvae.eval(), prior_level_0=top.eval(), prior_level_1=bottom.eval())


def test_the_top_codes_of_the_images_are_kept_and_the_bottom_codes_are_sampled(bench, pipe):
    images, labels = torch.rand(6, 3, 16, 16), torch.arange(6)
    encoded = pipe.vqvae.encode(images * 2 - 1).codes
    codes = bench.codes_below_real_top(pipe, images, labels, torch.Generator().manual_seed(0))
    assert [code.shape for code in codes] == [code.shape for code in encoded]
    assert torch.equal(codes[0], encoded[0])
    assert (codes[1] != encoded[1]).float().mean() > 0.5  # drawn from 16 codes by an untrained prior, not kept
    again = bench.codes_below_real_top(pipe, images, labels, torch.Generator().manual_seed(0))
    other = bench.codes_below_real_top(pipe, images, labels, torch.Generator().manual_seed(1))
    assert torch.equal(again[1], codes[1]) and not torch.equal(other[1], codes[1])


def test_the_row_decodes_those_codes_in_batches_into_unit_range_images(bench, pipe):
    images, labels = torch.rand(5, 3, 16, 16), torch.arange(5)
    out = bench.sample_below_real_top(pipe, images, labels, batch_size=2, seed=3)
    assert out.shape == (5, 3, 16, 16) and 0 <= float(out.min()) and float(out.max()) <= 1
    generator = torch.Generator().manual_seed(3)
    expected = [pipe.vqvae.decode_code(bench.codes_below_real_top(pipe, chunk, chunk_labels, generator))
                for chunk, chunk_labels in zip(images.split(2), labels.split(2))]  # fmt: skip
    assert torch.allclose(out, ((torch.cat(expected) + 1) / 2).clamp(0, 1), atol=1e-6)


def test_a_device_that_is_not_there_is_refused_before_any_work(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "nonexistent-device"])
    assert "argument --device" in (err := capsys.readouterr().err) and "use one of: cpu" in err
