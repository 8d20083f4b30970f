"""scripts/train_classifier.py and ClassifierJudge: the judge of classifier-based rejection sampling."""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_classifier  # noqa: E402

from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits  # noqa: E402
from hf_vqvae.pipelines import ClassifierJudge  # noqa: E402


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    """A classifier trained on scikit-learn's 8x8 digits, shown at 16x16."""
    folder = tmp_path_factory.mktemp("classifier") / "digits"
    args = train_classifier.parse_args(["--image_size", "16", "--max_train_steps", "150", "--batch_size", "64",
                                        "--learning_rate", "3e-3", "--output_dir", str(folder)])  # fmt: skip
    return folder, train_classifier.main(args)


def _held_out_digits(limit=256):
    splits = load_image_splits(DataArguments(max_eval_samples=limit), seed=0)
    transform = ImageTransform(16, 1, (0.0, 1.0))
    batch = next(iter(batches_for_rank(splits.eval, splits.image_column, transform, batch_size=limit, seed=0, epoch=0,
                                       shuffle=False, drop_last=False, columns=("label",))))  # fmt: skip
    return batch["pixel_values"], batch["label"]


def test_trained_classifier_learns_digits_and_saves_like_a_hub_model(digits_classifier):
    folder, metrics = digits_classifier
    assert metrics["test_accuracy"] >= 0.85, metrics
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= {p.name for p in folder.iterdir()}
    model = AutoModelForImageClassification.from_pretrained(folder)
    assert isinstance(model, ResNetForImageClassification) and model.config.num_labels == 10
    assert model.config.id2label[3] == "3"


def test_judge_reproduces_the_scripts_accuracy_from_images_in_unit_range(digits_classifier):
    """The judge maps [0, 1] images through the saved processor settings: same predictions as the script's path."""
    folder, metrics = digits_classifier
    judge = ClassifierJudge.from_pretrained(folder)
    images, labels = _held_out_digits()
    direct = judge.model(pixel_values=images * 2 - 1).logits  # the training transform's [-1, 1] range
    torch.testing.assert_close(judge(images), direct)
    assert (judge(images).argmax(-1) == labels).float().mean() >= 0.85


def test_judge_resizes_and_matches_channels():
    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 8],
                                                      depths=[1, 1], num_labels=4, layer_type="basic"))  # fmt: skip
    judge = ClassifierJudge(model, image_size=(32, 32), image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2])
    gray = torch.rand(2, 1, 16, 16)
    expected = F.interpolate(gray.repeat(1, 3, 1, 1), size=(32, 32), mode="bilinear", antialias=True)
    expected = (expected - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2
    torch.testing.assert_close(judge.preprocess(gray), expected)
    shortest = ClassifierJudge(model, image_size=24)
    assert shortest.preprocess(torch.rand(1, 3, 16, 32)).shape == (1, 3, 24, 48)
    assert judge(gray).shape == (2, 4)


def test_judge_label_errors_name_the_labels(digits_classifier):
    judge = ClassifierJudge.from_pretrained(digits_classifier[0])
    assert judge.label_id("7") == 7 and judge.label_id(2) == 2
    with pytest.raises(ValueError, match="out of range.*0..9"):
        judge.label_id(10)
    with pytest.raises(ValueError, match="'cat' is not one of the classifier's labels"):
        judge.label_id("cat")
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        judge(torch.rand(16, 16))


def test_train_classifier_refuses_a_dataset_without_labels(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for index in range(4):
        Image.new("L", (8, 8), color=index * 40).save(folder / f"{index}.png")
    args = train_classifier.parse_args(["--train_data_dir", str(folder), "--max_train_steps", "1",
                                        "--output_dir", str(tmp_path / "out")])  # fmt: skip
    with pytest.raises(ValueError, match="no label column 'label'"):
        train_classifier.main(args)
