"""Priors trained through scripts/train.py on extracted codes; the sampling pipeline over them."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import extract_codes  # noqa: E402
import sample as sample_script  # noqa: E402
import train as train_script  # noqa: E402
import train_classifier  # noqa: E402

from hf_vqvae import (  # noqa: E402
    PixelCNNPriorConfig,
    PixelCNNPriorModel,
    VQVAE2Config,
    VQVAE2Model,
    VQVAE2Pipeline,
)
from hf_vqvae.pipelines import rejection_sample  # noqa: E402

TINY_PIXELCNN = ["--hidden_channels", "8", "--num_layers", "2", "--condition_hidden_channels", "8",
                 "--condition_num_residual_blocks", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny two-level VQ-VAE-2, its codes of 64 digits, and a PixelCNN prior per level trained on them."""
    root = tmp_path_factory.mktemp("pipeline")
    config = VQVAE2Config(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                          num_residual_blocks=1, level_downsamples=[1, 1], num_embeddings=16, embedding_dim=4)  # fmt: skip
    torch.manual_seed(0)
    VQVAE2Model(config).save_pretrained(root / "vqvae2")
    extract_codes.main(extract_codes.parse_args(["--model", str(root / "vqvae2"), "--output_dir", str(root / "codes"),
                                                 "--max_samples", "64"]))  # fmt: skip
    metrics = {}
    for level in (0, 1):
        args = ["--model", "pixelcnn-prior", "--preset", "mnist", "--codes_dataset", str(root / "codes"),
                "--level", str(level), "--train_batch_size", "16", "--max_train_steps", "3", "--report_to", "none",
                "--output_dir", str(root / f"prior{level}"), *TINY_PIXELCNN]  # fmt: skip
        metrics[level] = train_script.main(train_script.parse_args(args))
    return root, metrics


def _pipeline(root):
    return VQVAE2Pipeline(vqvae=VQVAE2Model.from_pretrained(root / "vqvae2"),
                          prior_level_0=PixelCNNPriorModel.from_pretrained(root / "prior0"),
                          prior_level_1=PixelCNNPriorModel.from_pretrained(root / "prior1"))  # fmt: skip


def test_priors_train_on_extracted_codes_and_report_nats_and_bits(trained):
    root, metrics = trained
    for level in (0, 1):
        assert metrics[level]["train_steps"] == 3 and metrics[level]["level"] == level
        assert 0 < metrics[level]["nll_nats_per_code"] < 10 and metrics[level]["bits_per_dim"] > 0
        assert (root / f"prior{level}" / "codes_info.json").is_file()
    prior = PixelCNNPriorModel.from_pretrained(root / "prior1")
    assert prior.config.code_shape == [8, 8] and prior.config.condition_num_embeddings == 16
    assert prior.config.num_classes == 10 and prior.config.num_embeddings == 16


def test_pipeline_samples_and_round_trips(trained, tmp_path):
    root, _ = trained
    pipe = _pipeline(root)
    first = pipe(3, class_labels=[1, 2, 3], generator=torch.Generator().manual_seed(0), output_type="np").images
    assert first.shape == (3, 16, 16, 1) and first.min() >= 0 and first.max() <= 1
    again = pipe(3, class_labels=[1, 2, 3], generator=torch.Generator().manual_seed(0), output_type="np").images
    assert np.array_equal(first, again)
    pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "model_index.json").is_file()
    loaded = VQVAE2Pipeline.from_pretrained(tmp_path / "pipe")
    third = loaded(3, class_labels=[1, 2, 3], generator=torch.Generator().manual_seed(0), output_type="np").images
    assert np.array_equal(first, third)
    pil = loaded(2, class_labels=4, generator=torch.Generator().manual_seed(1)).images
    assert len(pil) == 2 and isinstance(pil[0], Image.Image) and pil[0].size == (16, 16)


def test_inpainting_keeps_the_codes_outside_the_mask(trained):
    root, _ = trained
    pipe = _pipeline(root)
    pixels = torch.rand(2, 1, 16, 16) * 2 - 1
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 8:] = True  # complete the lower half of each image
    before = pipe.vqvae.encode(pixels).codes
    after = pipe.inpaint_codes(pixels, mask, class_labels=[0, 1], generator=torch.Generator().manual_seed(0))
    for level, (old, new) in enumerate(zip(before, after)):
        rows = old.shape[1] // 2
        assert torch.equal(old[:, :rows], new[:, :rows]), f"level {level}: the known upper half is kept"
    assert any(not torch.equal(old[:, old.shape[1] // 2 :], new[:, new.shape[1] // 2 :]) for old, new in zip(before, after))
    images = pipe.inpaint(pixels, mask, class_labels=[0, 1], generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.equal(images.images, pipe._output(pipe.vqvae.decode_code(after), "pt", True).images)
    with pytest.raises(ValueError, match="mask must have shape"):
        pipe.inpaint(pixels, mask[:, :8], class_labels=[0, 1])
    assert torch.equal(pipe.reconstruct(pixels, output_type="pt").images,
                       pipe._output(pipe.vqvae.decode_code(before), "pt", True).images)


def test_mismatched_priors_are_refused(trained):
    root, _ = trained
    vqvae = VQVAE2Model.from_pretrained(root / "vqvae2")
    top = PixelCNNPriorModel.from_pretrained(root / "prior0")
    bottom = PixelCNNPriorModel.from_pretrained(root / "prior1")
    with pytest.raises(ValueError, match="2 level\\(s\\) but 1 prior"):
        VQVAE2Pipeline(vqvae=vqvae, prior_level_0=top)
    wrong_k = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=32, hidden_channels=8, num_layers=1, code_shape=[4, 4]))
    with pytest.raises(ValueError, match="models K = 32 codes but the decoder's codebook has K = 16"):
        VQVAE2Pipeline(vqvae=vqvae, prior_level_0=wrong_k, prior_level_1=bottom)
    wrong_shape = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=16, hidden_channels=8, num_layers=1,
                                                         code_shape=[7, 7], num_classes=10))  # fmt: skip
    with pytest.raises(ValueError, match="trained on \\[7, 7\\] code maps but the decoder's level 0 is \\[4, 4\\]"):
        VQVAE2Pipeline(vqvae=vqvae, prior_level_0=wrong_shape, prior_level_1=bottom)
    unconditioned = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=16, hidden_channels=8, num_layers=1,
                                                           code_shape=[8, 8], num_classes=10))  # fmt: skip
    with pytest.raises(ValueError, match="must be conditioned on the 16 codes of level 0"):
        VQVAE2Pipeline(vqvae=vqvae, prior_level_0=top, prior_level_1=unconditioned)
    pipe = VQVAE2Pipeline(vqvae=vqvae, prior_level_0=top, prior_level_1=bottom)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 10\)"):
        pipe(2, class_labels=[0, 10])
    with pytest.raises(ValueError, match="pass class_labels"):
        pipe(2)


def test_rejection_sampling_keeps_the_confident_samples(trained):
    root, _ = trained
    pipe = _pipeline(root)

    def classifier(images):  # a stand-in: confident for bright images
        brightness = images.mean(dim=(1, 2, 3))
        return torch.stack([-brightness * 10, brightness * 10], dim=1)

    result = rejection_sample(pipe, classifier, class_label=1, num_samples=6, keep_fraction=0.5, batch_size=4,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert result["images"].shape[0] == 3 and result["acceptance_rate"] == 0.5
    kept = result["probabilities"][result["kept"]]
    assert kept.min() >= result["probabilities"][~result["kept"]].max()
    with pytest.raises(ValueError, match="exactly one of threshold"):
        rejection_sample(pipe, classifier, class_label=1, num_samples=2)


def test_sample_script_writes_a_grid(trained, tmp_path):
    root, _ = trained
    args = sample_script.parse_args(["--vqvae", str(root / "vqvae2"), "--priors", str(root / "prior0"),
                                     str(root / "prior1"), "--num_images", "4", "--class_labels", "3",
                                     "--output", str(tmp_path / "grid.png"), "--save_pipeline", str(tmp_path / "p")])  # fmt: skip
    sample_script.main(args)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)
    assert (tmp_path / "p" / "model_index.json").is_file()


def test_sample_script_rejection_sampling_with_a_trained_classifier(trained, tmp_path, capsys):
    root, _ = trained
    classifier = tmp_path / "classifier"
    train_classifier.main(train_classifier.parse_args(["--image_size", "16", "--max_train_steps", "5",
                                                       "--output_dir", str(classifier)]))  # fmt: skip
    common = ["--vqvae", str(root / "vqvae2"), "--priors", str(root / "prior0"), str(root / "prior1"),
              "--num_images", "4", "--output", str(tmp_path / "kept.png")]  # fmt: skip
    sample_script.main(sample_script.parse_args([*common, "--class_labels", "3", "--classifier", str(classifier),
                                                 "--keep_fraction", "0.5"]))  # fmt: skip
    assert "kept 2 of 4 (acceptance rate 0.500)" in capsys.readouterr().out
    assert Image.open(tmp_path / "kept.png").size == (2 * 16 + 3 * 2, 16 + 2 * 2)  # two images in one row
    for extra, message in ((["--class_labels", "3", "4", "--classifier", "c", "--threshold", "0.5"], "exactly one --class_labels"),
                           (["--class_labels", "3", "--classifier", "c"], "exactly one of --threshold or --keep_fraction"),
                           (["--threshold", "0.5"], "need --classifier")):  # fmt: skip
        with pytest.raises(SystemExit):
            sample_script.parse_args([*common, *extra])
        assert message in capsys.readouterr().err


def test_cifar10_prior_presets_make_a_class_conditional_two_level_pipeline_whose_bottom_prior_reads_the_top_codes():
    """The presets of issue 15 (narrowed to 16 channels, so the test is fast) fit the `cifar10` VQ-VAE-2's levels; the
    pipeline samples per class; the bottom prior's logits change with the top codes and with the class."""
    torch.manual_seed(0)
    vqvae = VQVAE2Model(VQVAE2Config.from_preset("cifar10", hidden_channels=16, residual_channels=8)).eval()
    narrow = dict(hidden_channels=16, num_layers=2)
    top = PixelCNNPriorModel(PixelCNNPriorConfig.from_preset("vqvae2-cifar10-top", **narrow, num_attention_layers=1,
                                                             num_heads=2)).eval()  # fmt: skip
    bottom = PixelCNNPriorModel(PixelCNNPriorConfig.from_preset("vqvae2-cifar10-bottom", **narrow,
                                                                condition_hidden_channels=16)).eval()  # fmt: skip
    assert [top.config.code_shape, bottom.config.code_shape] == [list(shape) for shape in vqvae.config.latent_shapes()]
    assert top.config.num_classes == bottom.config.num_classes == 10 and top.config.num_attention_layers == 1
    assert bottom.config.condition_num_embeddings == vqvae.config.num_embeddings == 512
    pipe = VQVAE2Pipeline(vqvae=vqvae, prior_level_0=top, prior_level_1=bottom)
    images = {label: pipe(2, class_labels=label, generator=torch.Generator().manual_seed(0), output_type="np").images
              for label in (0, 9)}  # fmt: skip
    assert images[0].shape == (2, 32, 32, 3) and not np.array_equal(images[0], images[9]), "the class steers the samples"
    generator = torch.Generator().manual_seed(1)
    codes, labels = torch.randint(0, 512, (2, 8, 8), generator=generator), torch.tensor([1, 2])
    top_codes = torch.randint(0, 512, (2, 4, 4), generator=generator)
    changed = top_codes.clone()
    changed[:, 0, 0] = (changed[:, 0, 0] + 1) % 512  # one top code changed
    with torch.no_grad():
        logits = bottom(codes, class_labels=labels, condition_codes=top_codes).logits
        moved = (bottom(codes, class_labels=labels, condition_codes=changed).logits - logits).abs().amax(dim=1)  # (B, 8, 8)
        other_class = bottom(codes, class_labels=torch.tensor([3, 4]), condition_codes=top_codes).logits
    assert logits.shape == (2, 512, 8, 8) and moved.max() > 1e-4, "the bottom prior reads the top codes"
    assert moved[:, :2, :2].min() > 1e-4, "the bottom positions under the changed top code all move"
    assert not torch.allclose(logits, other_class), "and the class"


def test_a_transformer_prior_pipeline_inpaints_like_a_pixelcnn_one():
    """Both priors share one `sample()` signature, so the pipeline inpaints with either."""
    from hf_vqvae import TransformerPriorConfig, TransformerPriorModel, VQVAEConfig, VQVAEModel

    torch.manual_seed(0)
    vqvae = VQVAEModel(VQVAEConfig(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                                   num_residual_blocks=1, num_downsamples=2, num_embeddings=16, embedding_dim=4))  # fmt: skip
    prior = TransformerPriorModel(TransformerPriorConfig.from_preset(
        "mnist", num_embeddings=16, code_shape=[4, 4], num_classes=0, n_layer=1, n_embd=16, n_head=2))  # fmt: skip
    pipe = VQVAE2Pipeline(vqvae=vqvae, prior_level_0=prior)
    pixels = torch.rand(2, 1, 16, 16) * 2 - 1
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 8:] = True
    before = pipe.vqvae.encode(pixels).codes[0]
    after = pipe.inpaint_codes(pixels, mask, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(before[:, :2], after[:, :2]) and not torch.equal(before[:, 2:], after[:, 2:])
