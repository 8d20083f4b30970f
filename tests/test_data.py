import io
import random

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqvae.data import BatchStats, DataArguments, ImageTransform, batches_for_rank, load_image_splits


def _png(value: int, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet_dataset(folder, count: int, broken: tuple[int, ...] = (), split: str = "train"):
    """A local folder laid out like a Hub dataset repo: data/<split>-00000-of-00001.parquet; image i has value i."""
    rows = {"image": [], "label": []}
    for index in range(count):
        data = _png(index % 256)
        if index in broken:
            data = data[: len(data) // 2]  # a truncated PNG
        rows["image"].append({"bytes": data, "path": None})
        rows["label"].append(index % 10)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def _values(batches):
    return [int(round(float(v))) for batch in batches for v in batch["pixel_values"][:, 0, 0, 0] * 255]


TRANSFORM = ImageTransform(8, 1, value_range=(0.0, 1.0))


def test_offline_default_dataset_is_sklearn_digits():
    splits = load_image_splits(DataArguments(), seed=0)
    assert splits.image_column == "image" and splits.train.num_rows + splits.eval.num_rows == 1797
    batch = next(batches_for_rank(splits.train, "image", ImageTransform(16, 1), batch_size=4, seed=0, epoch=0))
    assert batch["pixel_values"].shape == (4, 1, 16, 16)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1


@pytest.mark.parametrize("streaming", [False, True])
def test_local_hub_layout_folder_and_held_out_split(tmp_path, streaming):
    write_parquet_dataset(tmp_path / "ds", 40)
    splits = load_image_splits(DataArguments(dataset_name=str(tmp_path / "ds"), streaming=streaming,
                                             max_eval_samples=8), seed=0)  # fmt: skip
    assert splits.image_column == "image"
    train = _values(batches_for_rank(splits.train, "image", TRANSFORM, batch_size=4, seed=0, epoch=0, shuffle=False,
                                     drop_last=False))  # fmt: skip
    held_out = _values(batches_for_rank(splits.eval, "image", TRANSFORM, batch_size=4, seed=0, epoch=0,
                                        shuffle=False, drop_last=False))  # fmt: skip
    assert len(held_out) == (8 if streaming else 4)
    assert sorted(train + held_out) == list(range(40)), "train and held-out examples partition the split"


def test_ranks_read_disjoint_shards_whose_union_is_the_epoch(tmp_path):
    write_parquet_dataset(tmp_path / "ds", 48)
    for streaming in (False, True):
        args = DataArguments(dataset_name=str(tmp_path / "ds"), streaming=streaming, eval_split="train")
        data = load_image_splits(args, seed=0).train
        seen = [_values(batches_for_rank(data, "image", TRANSFORM, batch_size=2, seed=3, epoch=1, rank=rank,
                                         world_size=3, drop_last=False)) for rank in range(3)]  # fmt: skip
        assert not set(seen[0]) & set(seen[1]) and not set(seen[1]) & set(seen[2])
        everything = _values(batches_for_rank(data, "image", TRANSFORM, batch_size=1, seed=3, epoch=1, shuffle=False))
        assert sorted(sum(seen, [])) == sorted(everything)


def test_order_depends_on_seed_and_epoch_and_resume_skips_exactly(tmp_path):
    write_parquet_dataset(tmp_path / "ds", 32)
    data = load_image_splits(DataArguments(dataset_name=str(tmp_path / "ds"), streaming=True, eval_split="train"), 0).train
    kwargs = dict(batch_size=4, seed=1)
    epoch0 = _values(batches_for_rank(data, "image", TRANSFORM, epoch=0, **kwargs))
    assert epoch0 == _values(batches_for_rank(data, "image", TRANSFORM, epoch=0, **kwargs))
    assert epoch0 != _values(batches_for_rank(data, "image", TRANSFORM, epoch=1, **kwargs))
    resumed = _values(batches_for_rank(data, "image", TRANSFORM, epoch=0, start_batch=3, **kwargs))
    assert resumed == epoch0[12:]


def test_undecodable_images_are_skipped_and_counted(tmp_path):
    write_parquet_dataset(tmp_path / "ds", 12, broken=(3, 7))
    data = load_image_splits(DataArguments(dataset_name=str(tmp_path / "ds"), streaming=True, eval_split="train"), 0).train
    stats = BatchStats()
    values = _values(batches_for_rank(data, "image", TRANSFORM, batch_size=5, seed=0, epoch=0, shuffle=False,
                                      drop_last=False, stats=stats))  # fmt: skip
    assert stats.skipped == 2 and len(stats.skipped_examples) == 2
    assert sorted(values) == [v for v in range(12) if v not in (3, 7)]


def test_crop_flip_and_channels():
    image = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (8, 1)))  # 8 high, 16 wide gradient
    raw = {"bytes": _png(0), "path": None}
    centre = ImageTransform(8, 1, (0.0, 1.0))(image, rng=__import__("random").Random(0))
    assert centre.shape == (1, 8, 8) and np.isclose(centre[0, 0, 0], 64 / 255)  # columns 4..11 kept
    flipped = ImageTransform(8, 3, (0.0, 1.0), random_flip=True)
    outputs = {tuple(flipped(image, __import__("random").Random(seed))[0, 0, :2]) for seed in range(8)}
    assert len(outputs) == 2, "both flipped and unflipped crops occur"
    assert ImageTransform(4, 3)(raw, __import__("random").Random(0)).shape == (3, 4, 4)


def test_empty_dataset_and_missing_image_column_are_clear_errors(tmp_path):
    write_parquet_dataset(tmp_path / "empty", 0)
    for streaming in (False, True):
        with pytest.raises(ValueError, match="split of .* is empty"):
            load_image_splits(DataArguments(dataset_name=str(tmp_path / "empty"), eval_split="train",
                                            streaming=streaming), seed=0)  # fmt: skip
    (tmp_path / "text" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": ["a", "b"]}).to_parquet(str(tmp_path / "text" / "data" / "train-0.parquet"))
    with pytest.raises(ValueError, match="has no image column \\(columns: text\\); pass --image_column"):
        load_image_splits(DataArguments(dataset_name=str(tmp_path / "text")), seed=0)
    with pytest.raises(ValueError, match="has no column 'img'"):
        load_image_splits(DataArguments(dataset_name=str(tmp_path / "text"), image_column="img"), seed=0)


def test_real_mnist_folder_streams(shared_dir):
    splits = load_image_splits(DataArguments(dataset_name=str(shared_dir / "datasets" / "mnist"), streaming=True), 0)
    batch = next(batches_for_rank(splits.train, splits.image_column, ImageTransform(28, 1), batch_size=8, seed=0,
                                  epoch=0, shuffle_buffer_size=64))  # fmt: skip
    assert batch["pixel_values"].shape == (8, 1, 28, 28) and torch.isfinite(batch["pixel_values"]).all()


def test_sample_limits_draw_a_seeded_random_subset_of_a_label_sorted_split(tmp_path):
    """CIFAR-10's files are sorted by label: the first 512 test images are all airplanes. A limit must draw from
    the whole split (every class), the same rows for the same seed, kept in file order."""
    write_parquet_dataset(tmp_path / "ds", 200, split="train")
    write_parquet_dataset(tmp_path / "ds", 100, split="test")

    def limited(seed):
        splits = load_image_splits(DataArguments(dataset_name=str(tmp_path / "ds"), max_train_samples=50,
                                                 max_eval_samples=20), seed=seed)  # fmt: skip
        read = lambda split: _values(batches_for_rank(split, "image", TRANSFORM, batch_size=5, seed=0, epoch=0,  # noqa: E731
                                                      shuffle=False, drop_last=False))  # fmt: skip
        return read(splits.train), read(splits.eval)

    train, held_out = limited(seed=0)
    assert len(train) == 50 and len(held_out) == 20
    assert len(set(train)) == 50 and set(held_out) <= set(range(100))
    assert train == sorted(train) and held_out == sorted(held_out), "the subset keeps the file order"
    assert max(train) >= 150 and max(held_out) >= 60, "drawn from the whole split, not its first rows"
    assert train != list(range(50)) and held_out != list(range(20))
    assert limited(seed=0) == (train, held_out), "the same rows for the same seed"
    assert limited(seed=1) != (train, held_out)
    # Read as a split sorted by label (class = value // 10): the first 20 rows would hold 2 of the 10 classes.
    assert len({value // 10 for value in held_out}) >= 7


def _photo_jpeg(width: int, height: int) -> bytes:
    """A smooth photo-like JPEG (gradients and a disc), quality 90."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 3) ** 2) * 80
    rgb = np.stack([x / width * 255, y / height * 255, 128 + disc - disc.mean()], axis=-1).clip(0, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_large_jpegs_decode_at_a_reduced_scale_that_still_covers_the_crop():
    from hf_vqvae.data.pipeline import decode_image

    data = {"bytes": _photo_jpeg(1600, 1200), "path": None}
    assert decode_image(data).size == (1600, 1200)
    # 256x256 needs 342x256 of a 4:3 photo: libjpeg's 1/4 scale (400x300) covers it, 1/8 (200x150) would not.
    assert decode_image(data, cover=(256, 256), mode="RGB").size == (400, 300)
    assert decode_image(data, cover=(1024, 1024), mode="RGB").size == (1600, 1200), "never below the cover size"
    assert decode_image({"bytes": _png(7, (64, 64)), "path": None}, cover=(8, 8)).size == (64, 64), "JPEG only"
    # The training transform's pixels stay close to those of a full decode (the crop and RNG draws are the same).
    transform = ImageTransform(256, 3, value_range=(0.0, 1.0), center_crop=False, random_flip=True)
    reduced = transform(data, random.Random(3))
    full_image = Image.open(io.BytesIO(data["bytes"])).convert("RGB")
    full = transform(full_image, random.Random(3))  # a PIL image is never re-decoded
    assert reduced.shape == full.shape == (3, 256, 256)
    assert np.abs(reduced - full).mean() < 2 / 255


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_resizing_to_cover_matches_pillows_bicubic_filter_down_and_up(mode):
    from sklearn.datasets import load_sample_image

    from hf_vqvae.data.pipeline import resize_to_cover

    photo = Image.fromarray(load_sample_image("china.jpg")).convert(mode)  # 640 wide, 427 high
    cases = [(photo, (256, 256), (256, 384)), (photo, (100, 300), (200, 300)),
             (photo.resize((40, 27)), (64, 64), (64, 95))]  # (image, target (H, W), the covering size (H, W))
    for image, (height, width), (out_height, out_width) in cases:
        array = np.array(image).reshape(image.height, image.width, -1)
        ours = resize_to_cover(array, height, width)
        pillow = np.asarray(image.resize((out_width, out_height), Image.Resampling.BICUBIC)).reshape(ours.shape)
        assert ours.shape == (out_height, out_width, len(mode)) and ours.dtype == np.uint8
        difference = np.abs(ours.astype(int) - pillow)
        assert difference.max() <= 2 and (difference == 0).mean() > 0.98, (difference.max(), (difference == 0).mean())
    array = np.array(photo).reshape(427, 640, -1)
    assert resize_to_cover(array, 427, 300) is array, "an image that already just covers the target is kept"
