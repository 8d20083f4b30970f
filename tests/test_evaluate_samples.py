"""scripts/evaluate_samples.py: sample-quality metrics of an image folder or a pipeline's samples against a reference
dataset, checked against the metrics computed here directly, on a few hundred CIFAR-10 images and tiny models."""

import io
import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import evaluate_samples  # noqa: E402
import train_classifier  # noqa: E402

from hf_vqvae import PixelCNNPriorConfig, PixelCNNPriorModel, VQVAE2Config, VQVAE2Model, VQVAE2Pipeline  # noqa: E402
from hf_vqvae.evaluation import FeatureNetwork, compare  # noqa: E402

# conftest's `shared_dir` is function-scoped; the module-scoped fixtures below read the same folder.
CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10_jpeg"
PER_CLASS = {"test": 10, "train": 10, "samples": 6}  # CIFAR-10 test images per class taken for each role


def _decode(raw_bytes: bytes) -> np.ndarray:
    """A JPEG as uint8 (H, W, 3), decoded by PIL alone (independently of the data pipeline)."""
    return np.asarray(Image.open(io.BytesIO(raw_bytes)).convert("RGB"))


def _to_unit(arrays) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A tiny reference dataset in Hub layout (test and train parquet splits of CIFAR-10 test images, 10 per class
    each) and 6 further images per class, as (uint8 pixels, label) pairs, for the samples."""
    source = CIFAR10 / "data" / "test-00000-of-00001.parquet"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    table = pq.read_table(source)
    labels = np.asarray(table.column("label"))
    rows, start = {}, 0
    for role, count in PER_CLASS.items():
        rows[role] = [int(i) for c in range(10) for i in np.flatnonzero(labels == c)[start : start + count]]
        start += count
    root = tmp_path_factory.mktemp("cifar") / "reference"
    (root / "data").mkdir(parents=True)
    for split in ("test", "train"):
        pq.write_table(table.take(rows[split]), root / "data" / f"{split}-00000-of-00001.parquet")
    names = datasets.Features.from_arrow_schema(table.schema)["label"].names
    samples = [(_decode(table.column("img")[i]["bytes"].as_py()), int(labels[i])) for i in rows["samples"]]
    reference = _to_unit([_decode(table.column("img")[i]["bytes"].as_py()) for i in rows["test"]])
    return {"root": root, "names": names, "samples": samples, "reference": reference}


@pytest.fixture(scope="module")
def judge(cifar, tmp_path_factory):
    """A tiny untrained ResNet with CIFAR-10's labels, saved like a Hub classifier (with its image processor)."""
    folder = tmp_path_factory.mktemp("judge") / "tiny-judge"
    torch.manual_seed(0)
    train_classifier.build_classifier(3, cifar["names"], (8, 16)).save_pretrained(folder)
    train_classifier.image_processor(32, 3).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """An untrained RGB 32x32 two-level VQ-VAE-2 (top 4x4, bottom 8x8) with class-conditional priors."""
    folder = tmp_path_factory.mktemp("pipeline") / "pipe"
    torch.manual_seed(0)
    vqvae = VQVAE2Model(VQVAE2Config(num_channels=3, image_size=32, hidden_channels=16, residual_channels=8,
                                     num_residual_blocks=1, level_downsamples=[1, 2], num_embeddings=16,
                                     embedding_dim=4))  # fmt: skip
    top_shape, bottom_shape = vqvae.config.latent_shapes()
    assert (top_shape, bottom_shape) == ((4, 4), (8, 8))
    top = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=16, hidden_channels=8, num_layers=2, num_classes=10,
                                                 code_shape=list(top_shape)))  # fmt: skip
    bottom = PixelCNNPriorModel(PixelCNNPriorConfig(
        num_embeddings=16, hidden_channels=8, num_layers=2, num_classes=10, code_shape=list(bottom_shape),
        condition_num_embeddings=16, condition_hidden_channels=8, condition_num_residual_blocks=1))  # fmt: skip
    VQVAE2Pipeline(vqvae=vqvae, prior_level_0=top, prior_level_1=bottom).save_pretrained(folder)
    return folder


def _write_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _argv(samples, judge, cifar, *extra) -> list[str]:
    return [str(samples), "--features", str(judge), "--reference", str(cifar["root"]), *map(str, extra)]


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def test_real_images_in_class_folders_get_the_metrics_of_compare(cifar, judge, tmp_path, capsys):
    folder = tmp_path / "samples"
    for index, (pixels, label) in enumerate(cifar["samples"]):
        name = cifar["names"][label] if label % 2 == 0 else str(label)  # class folders by label name or by index
        _write_png(pixels, folder / name / f"{index}.png")

    report = evaluate_samples.main(_argv(folder, judge, cifar))

    network = FeatureNetwork(judge)
    samples = _to_unit([pixels for pixels, _ in cifar["samples"]])
    expected = compare(network.features(cifar["reference"]), network.features(samples), seed=0)
    written = json.loads((folder / "sample_quality.json").read_text())  # the default JSON path
    assert written == report
    assert written["metrics"]["fd"] > 0
    for key in ("fd", "kid_mean", "kid_std", "precision", "recall"):  # equal up to float32 rounding of the pixels
        assert written["metrics"][key] == pytest.approx(expected[key], rel=1e-4, abs=1e-8), key
    assert written["num_samples"] == 60 and written["num_reference"] == 100
    assert written["labelled"] and written["class_counts"] == {str(c): 6 for c in range(10)}
    assert written["image_size"] == [32, 32] and written["num_channels"] == 3 and written["cas"] is None
    assert written["metric_labels"]["FD"] == "FD (tiny-judge features)"
    table = capsys.readouterr().out
    assert "FD (tiny-judge features)" in table and f"{expected['fd']:.4f}" in table


def test_pipeline_samples_are_saved_per_class_rejudged_and_scored_by_cas(cifar, judge, pipeline, tmp_path):
    saved, output = tmp_path / "saved", tmp_path / "eval" / "pipeline.json"
    report = evaluate_samples.main(_argv(pipeline, judge, cifar, "--samples_per_class", 2, "--save_samples", saved,
                                         "--cas_steps", 2, "--cas_hidden_sizes", 8, 16, "--batch_size", 8,
                                         "--output_json", output))  # fmt: skip

    assert sorted(path.name for path in saved.iterdir()) == sorted(str(c) for c in range(10))
    for class_folder in saved.iterdir():
        files = sorted(class_folder.glob("*.png"))
        assert len(files) == 2
        with Image.open(files[0]) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    written = json.loads(output.read_text())
    assert written == report and written["source"] == "pipeline" and written["saved_samples"] == str(saved)
    assert written["num_samples"] == 20 and written["class_counts"] == {str(c): 2 for c in range(10)}
    cas = written["cas"]
    assert cas["steps"] == 2 and cas["train_images"] == 20 and cas["real_train_images"] == 20
    assert cas["test_images"] == 100
    for row in ("samples", "real"):
        assert 0.0 <= cas[row] <= 1.0 and round(cas[row] * 100) == pytest.approx(cas[row] * 100)  # k/100 correct

    rejudged = evaluate_samples.main(_argv(saved, judge, cifar))  # the PNGs, judged again (8-bit rounding only)
    assert rejudged["num_samples"] == 20 and rejudged["class_counts"] == written["class_counts"]
    assert rejudged["metrics"]["fd"] == pytest.approx(written["metrics"]["fd"], rel=1e-2)


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def _parse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as raised:
        evaluate_samples.parse_args(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


def test_a_missing_empty_or_single_image_samples_folder_is_an_argument_error(tmp_path, capsys):
    common = ["--features", "judge", "--reference", "ref"]
    assert f"SAMPLES {tmp_path / 'nope'} does not exist" in _parse_error([str(tmp_path / "nope"), *common], capsys)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    assert "holds no image files" in _parse_error([str(tmp_path / "empty"), *common], capsys)
    _write_png(np.zeros((32, 32, 3), np.uint8), tmp_path / "one" / "a.png")
    assert "at least 2" in _parse_error([str(tmp_path / "one"), *common], capsys)


@pytest.mark.parametrize("option, value, message", [
    ("--samples_per_class", "0", "--samples_per_class must be >= 1, got 0"),
    ("--num_samples", "-1", "--num_samples must be >= 1, got -1"),
    ("--batch_size", "0", "--batch_size must be >= 1"),
    ("--max_reference", "0", "--max_reference must be >= 1"),
    ("--cas_steps", "-2", "--cas_steps must be >= 0"),
    ("--temperature", "0", "--temperature must be > 0"),
])  # fmt: skip
def test_bad_numbers_are_argument_errors(tmp_path, capsys, option, value, message):
    for index in range(2):
        _write_png(np.zeros((32, 32, 3), np.uint8), tmp_path / "flat" / f"{index}.png")
    argv = [str(tmp_path / "flat"), "--features", "judge", "--reference", "ref", option, value]
    assert message in _parse_error(argv, capsys)


def test_cas_on_unlabelled_images_and_save_samples_of_an_image_folder_are_argument_errors(tmp_path, capsys):
    for index in range(3):
        _write_png(np.zeros((32, 32, 3), np.uint8), tmp_path / "flat" / f"{index}.png")
    common = [str(tmp_path / "flat"), "--features", "judge", "--reference", "ref"]
    assert "--cas_steps needs labelled samples" in _parse_error([*common, "--cas_steps", "5"], capsys)
    assert "--save_samples writes generated samples" in _parse_error([*common, "--save_samples", "x"], capsys)
    _write_png(np.zeros((32, 32, 3), np.uint8), tmp_path / "flat" / "cat" / "3.png")
    assert "mixes loose images and class subfolders" in _parse_error(common, capsys)


def test_an_unknown_class_folder_is_refused_with_the_known_labels(cifar, judge, tmp_path):
    for name in ("airplane", "spaceship"):
        _write_png(cifar["samples"][0][0], tmp_path / "samples" / name / "0.png")
    with pytest.raises(ValueError, match="'spaceship'.*its labels: airplane, automobile, bird, cat, deer, dog"):
        evaluate_samples.main(_argv(tmp_path / "samples", judge, cifar))


def test_an_image_of_the_wrong_size_is_refused_by_name(cifar, judge, tmp_path):
    for index in range(3):
        _write_png(cifar["samples"][index][0], tmp_path / "flat" / f"{index}.png")
    _write_png(np.zeros((28, 30, 3), np.uint8), tmp_path / "flat" / "small.png")
    with pytest.raises(ValueError, match=r"small\.png is 30x28 but the reference images are 32x32"):
        evaluate_samples.main(_argv(tmp_path / "flat", judge, cifar))
