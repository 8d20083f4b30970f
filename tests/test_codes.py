"""scripts/extract_codes.py and hf_vqvae.data.codes: code datasets for the priors."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import extract_codes  # noqa: E402

from hf_vqvae import VQVAE2Config, VQVAE2Model  # noqa: E402
from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits  # noqa: E402
from hf_vqvae.data.codes import check_prior_matches, code_batches, load_codes  # noqa: E402


@pytest.fixture(scope="module")
def saved_vqvae2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vqvae2")
    config = VQVAE2Config(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                          num_residual_blocks=1, level_downsamples=[1, 1], num_embeddings=16, embedding_dim=4)  # fmt: skip
    VQVAE2Model(config).save_pretrained(folder)
    return folder


def test_codes_of_every_level_and_the_labels_are_written(saved_vqvae2, tmp_path):
    args = extract_codes.parse_args(["--model", str(saved_vqvae2), "--output_dir", str(tmp_path / "codes"),
                                     "--max_samples", "40", "--batch_size", "16"])  # fmt: skip
    extract_codes.main(args)
    dataset, info = load_codes(tmp_path / "codes")
    assert info.code_shapes == [[4, 4], [8, 8]] and info.num_embeddings == 16 and info.num_classes == 10
    assert info.splits == {"train": 40, "test": 40} and dataset["train"].num_rows == 40
    assert set(dataset["train"].column_names) == {"codes_0", "codes_1", "label"}
    assert "codes_info.json" in {p.name for p in (tmp_path / "codes").iterdir()}
    assert "configs:" in (tmp_path / "codes" / "README.md").read_text()
    # The stored codes are the model's codes of the same images, in order.
    model = VQVAE2Model.from_pretrained(saved_vqvae2).eval()
    splits = load_image_splits(DataArguments(max_train_samples=40, max_eval_samples=40))
    images = next(batches_for_rank(splits.train, "image", ImageTransform(16, 1), batch_size=40, seed=0, epoch=0,
                                   shuffle=False, drop_last=False, columns=("label",)))  # fmt: skip
    with torch.no_grad():
        expected = model.encode(images["pixel_values"]).codes
    batch = next(code_batches(dataset["train"], 1, batch_size=40, seed=0, epoch=0, shuffle=False, with_labels=True))
    assert torch.equal(batch["codes"], expected[1]) and torch.equal(batch["condition_codes"], expected[0])
    assert torch.equal(batch["class_labels"], images["label"])
    assert info.bits_per_dim(1.0, level=1) == pytest.approx(64 / (256 * 0.6931471805599453))


def test_batches_shard_and_resume(saved_vqvae2, tmp_path):
    extract_codes.main(extract_codes.parse_args(["--model", str(saved_vqvae2), "--output_dir", str(tmp_path / "c"),
                                                 "--max_samples", "24", "--splits", "train"]))  # fmt: skip
    dataset, _ = load_codes(tmp_path / "c")
    full = [b["codes"] for b in code_batches(dataset["train"], 0, batch_size=4, seed=1, epoch=0)]
    resumed = [b["codes"] for b in code_batches(dataset["train"], 0, batch_size=4, seed=1, epoch=0, start_batch=2)]
    assert len(full) == 6 and all(torch.equal(a, b) for a, b in zip(full[2:], resumed))
    halves = [torch.cat([b["codes"] for b in code_batches(dataset["train"], 0, batch_size=4, seed=1, epoch=0, rank=r,
                                                          world_size=2)]) for r in (0, 1)]  # fmt: skip
    assert sorted(map(tuple, torch.cat(halves).flatten(1).tolist())) == sorted(map(tuple, torch.cat(full).flatten(1).tolist()))


def test_mismatches_are_refused(saved_vqvae2, tmp_path):
    extract_codes.main(extract_codes.parse_args(["--model", str(saved_vqvae2), "--output_dir", str(tmp_path / "c"),
                                                 "--max_samples", "8", "--splits", "test"]))  # fmt: skip
    _, info = load_codes(tmp_path / "c")
    with pytest.raises(ValueError, match="models K = 32 codes but the codes come from K = 16"):
        check_prior_matches(info, level=0, num_embeddings=32, num_classes=10, condition_num_embeddings=0)
    with pytest.raises(ValueError, match="--level 2 is out of range"):
        check_prior_matches(info, level=2, num_embeddings=16, num_classes=10, condition_num_embeddings=0)
    with pytest.raises(ValueError, match="must be conditioned on level 0"):
        check_prior_matches(info, level=1, num_embeddings=16, num_classes=10, condition_num_embeddings=0)
    with pytest.raises(ValueError, match="not a codes dataset"):
        load_codes(tmp_path)
    with pytest.raises(ValueError, match="codes come from a vqvae or vqvae2 model"):
        from hf_vqvae import VAEConfig, VAEModel

        VAEModel(VAEConfig(hidden_size=8, latent_dim=2)).save_pretrained(tmp_path / "vae")
        extract_codes.main(extract_codes.parse_args(["--model", str(tmp_path / "vae"), "--output_dir", str(tmp_path / "x")]))
