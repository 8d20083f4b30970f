"""Hostile images and careless data options (issue 13, points 3 and 9): skipped or refused, never a crash or garbage.

- A decompression bomb (a tiny PNG declaring 20000x20000 pixels) is skipped and counted like any undecodable
  image, judged from its header before anything is decoded.
- 16-bit PNGs are scaled to 8 bits, not clipped to white; transparent pixels become black in training exactly as in
  the image processor (and the demo, which uses the same function).
- A column that holds no images, or a split that does not exist, is an error before any work is done.
"""

import importlib.util
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_vqvae import VQImageProcessor, VQVAEConfig, VQVAEModel
from hf_vqvae.data import BatchStats, DataArguments, ImageTransform, batches_for_rank, load_image_splits
from hf_vqvae.data.pipeline import decode_image

ROOT = Path(__file__).resolve().parents[2]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 1-bit 20000x20000 PNG: about 50 KB on disk, 400 M pixels (1.2 GB as RGB) once decoded."""
    return png_bytes(Image.new("1", (20000, 20000)))


def test_decompression_bomb_is_undecodable_not_a_crash(bomb):
    assert len(bomb) < 100_000
    assert decode_image({"bytes": bomb, "path": None}) is None  # PIL itself would raise DecompressionBombError
    # Under PIL's error threshold but over ours: refused from the header, before decoding.
    large = png_bytes(Image.new("1", (9000, 9000)))
    assert decode_image({"bytes": large, "path": None}) is None
    assert decode_image({"bytes": large, "path": None}, max_pixels=9000 * 9000).size == (9000, 9000)


def test_bomb_among_good_images_is_skipped_and_counted(bomb):
    good = [{"bytes": png_bytes(Image.new("L", (8, 8), value)), "path": None} for value in (0, 128, 255)]
    dataset = [{"image": raw} for raw in (good[0], {"bytes": bomb, "path": None}, good[1], good[2])]
    stats = BatchStats()
    batches = list(batches_for_rank(dataset, "image", ImageTransform(8, 1), batch_size=3, seed=0, epoch=0,
                                    shuffle=False, stats=stats))  # fmt: skip
    assert len(batches) == 1 and stats.skipped == 1 and stats.decoded == 3
    assert batches[0]["pixel_values"][:, 0, 0, 0].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1.0, 1.0], abs=1e-6)


def test_16_bit_png_is_scaled_not_clipped_to_white():
    ramp = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000 of 65535
    raw = {"bytes": png_bytes(Image.fromarray(ramp)), "path": None}
    assert decode_image(raw).mode.startswith("I")  # PIL opens it as a 16-bit (or 32-bit integer) image
    pixels = ImageTransform(8, 1, (0.0, 1.0))(raw, random.Random(0))[0]
    expected = np.round(ramp / 65535.0 * 255.0) / 255.0
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    assert (pixels < 1.0).mean() > 0.95  # PIL's own convert("L") makes all but the first pixel white


def test_transparent_pixels_are_black_in_training_and_in_the_processor():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # hidden red everywhere
    rgba[:4, :, 3] = 255  # the top half opaque red, the bottom half fully transparent
    rgba[4:6, :, 3] = 128  # half transparent rows: half the red
    image = Image.fromarray(rgba, "RGBA")
    trained = ImageTransform(8, 3, (0.0, 1.0))({"bytes": png_bytes(image), "path": None}, random.Random(0))
    processed = VQImageProcessor(size=8, num_channels=3, value_range=[0.0, 1.0])(image)["pixel_values"][0].numpy()
    np.testing.assert_allclose(trained, processed, atol=1e-6)
    red = trained[0]
    assert red[:4].min() == 1.0 and red[6:].max() == 0.0  # alpha dropped would leave these rows red
    assert red[4:6] == pytest.approx(128 / 255, abs=1 / 255)
    assert trained[1:].max() == 0.0


def test_an_image_column_that_holds_text_is_refused_up_front(tmp_path):
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w") as metadata:
        for index in range(4):
            Image.new("L", (8, 8), index).save(folder / f"{index}.png")
            metadata.write(json.dumps({"file_name": f"{index}.png", "caption": f"picture {index}"}) + "\n")
    with pytest.raises(ValueError, match=r"--image_column 'caption' of .* holds Value\('string'\), not images or "
                                         r"image file paths; its image columns: image"):  # fmt: skip
        load_image_splits(DataArguments(train_data_dir=str(tmp_path / "images"), image_column="caption"))
    assert load_image_splits(DataArguments(train_data_dir=str(tmp_path / "images"))).image_column == "image"


@pytest.mark.parametrize("option, message", [
    (dict(eval_split="nope"), "--eval_split 'nope' is not one"),
    (dict(train_split="validation"), "--train_split 'validation' is not one"),
    (dict(image_column="pixels"), "has no column 'pixels'"),
])  # fmt: skip
def test_options_naming_what_the_default_dataset_lacks_are_errors(option, message):
    with pytest.raises(ValueError, match=message):
        load_image_splits(DataArguments(**option))


def test_evaluate_script_refuses_an_unknown_split(tmp_path):
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    model = VQVAEModel(VQVAEConfig(image_size=8, num_downsamples=1, hidden_channels=8, residual_channels=4,
                                   num_residual_blocks=1, num_embeddings=16, embedding_dim=4, num_channels=1))  # fmt: skip
    model.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match=r"sklearn-digits has the splits train and test \(held out\); --eval_split "
                                         r"'nope' is not one"):  # fmt: skip
        evaluate.main(evaluate.parse_args([str(tmp_path / "model"), "--eval_split", "nope"]))
    assert not (tmp_path / "model" / "eval_results.json").exists()
