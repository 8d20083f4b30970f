import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqvae import VQImageProcessor


def test_resize_crop_and_scale_to_minus_one_one():
    processor = VQImageProcessor(size=8, num_channels=3)
    image = Image.new("RGB", (16, 32), color=(255, 0, 128))  # width 16, height 32
    pixels = processor(image).pixel_values
    assert pixels.shape == (1, 3, 8, 8) and pixels.dtype == torch.float32
    assert torch.allclose(pixels[0, :, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)


def test_centre_crop_keeps_the_middle():
    array = np.zeros((4, 8), dtype=np.uint8)
    array[:, 2:6] = 255  # a white band in the middle 4 columns
    pixels = VQImageProcessor(size=4, num_channels=1, value_range=(0, 1), resample="nearest")(array).pixel_values
    assert torch.equal(pixels, torch.ones(1, 1, 4, 4))


def test_grayscale_and_rgb_conversion_and_non_square_size():
    rgb = Image.new("RGB", (20, 28), color=(10, 200, 30))
    gray = VQImageProcessor(size=[28, 20], num_channels=1, value_range=(0, 1))(rgb).pixel_values
    assert gray.shape == (1, 1, 28, 20)
    assert torch.allclose(gray, torch.full_like(gray, Image.new("RGB", (1, 1), (10, 200, 30)).convert("L").getpixel((0, 0)) / 255))
    color = VQImageProcessor(size=4)(Image.new("L", (4, 4), 255)).pixel_values
    assert color.shape == (1, 3, 4, 4) and torch.equal(color, torch.ones_like(color))


def test_arrays_tensors_and_batches():
    processor = VQImageProcessor(size=4, num_channels=3, value_range=(0, 1))
    hwc = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1).float() / 255
    batch = processor([hwc, chw]).pixel_values
    assert batch.shape == (2, 3, 4, 4)
    assert torch.allclose(batch[0], batch[1], atol=1e-6)


def test_postprocess_round_trip(tmp_path):
    processor = VQImageProcessor(size=4, num_channels=3)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8))
    pixels = processor(image).pixel_values
    (back,) = processor.postprocess(pixels)
    assert np.array_equal(np.asarray(back), np.asarray(image))
    assert processor.postprocess(pixels, output_type="np").shape == (1, 4, 4, 3)
    processor.save_pretrained(tmp_path)
    loaded = VQImageProcessor.from_pretrained(tmp_path)
    assert (loaded.size, loaded.num_channels, loaded.value_range) == ([4, 4], 3, [-1.0, 1.0])


def test_bad_images_are_refused():
    processor = VQImageProcessor(size=4)
    with pytest.raises(ValueError, match="image 0 is a str"):
        processor("cat.png")
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\]"):
        processor(np.full((4, 4, 3), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        processor(np.full((4, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="num_channels must be 1"):
        VQImageProcessor(num_channels=2)
