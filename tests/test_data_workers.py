"""The data pipeline with DataLoader workers (issue 14, point 1): the same batches for any number of workers, per-rank
shards, resume from a recorded position without decoding the examples before it, for images and for code datasets."""

import io
import json
import random
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image
from safetensors.torch import load_file

from hf_vqvae.data import BatchStats, DataArguments, ImageTransform, batches_for_rank, load_image_splits
from hf_vqvae.data.codes import CodesInfo, code_batches, load_codes, write_card, write_shard
from hf_vqvae.data.pipeline import _epoch_order, default_num_workers, example_id
from hf_vqvae.training.checkpointing import TrainingState, checkpoint_root, list_checkpoints, read_training_state

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import train as train_script  # noqa: E402

BROKEN = (2, 3, 11, 30)  # undecodable examples (truncated PNGs), some before the resume points below
# 10x14 noise images cropped to 8x8 at random (after a resize to 8x11) and flipped at random: augmentations show.
AUGMENTED = ImageTransform(8, 1, (0.0, 1.0), center_crop=False, random_flip=True)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder: Path, count: int, broken=BROKEN, split: str = "train", seed: int = 0) -> Path:
    """A Hub-layout parquet folder of `count` distinct 10x14 noise images with labels; `broken` are truncated."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "label": []}
    for index in range(count):
        data = _png(rng.integers(0, 256, (10, 14), dtype=np.uint8))
        rows["image"].append({"bytes": data[: len(data) // 2] if index in broken else data, "path": None})
        rows["label"].append(index % 10)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    folder = write_images(tmp_path_factory.mktemp("images"), 45)
    return {streaming: load_image_splits(DataArguments(dataset_name=str(folder), streaming=streaming,
                                                       eval_split="train"), seed=0).train
            for streaming in (False, True)}  # fmt: skip


def reference_batches(dataset, transform, *, batch_size, seed, epoch, rank=0, world_size=1, shuffle_buffer_size=1000):
    """The pipeline as it was before workers (issue 14): decode one example after the other in this process, the
    augmentation RNG keyed by (seed, epoch, rank, position); keep the last partial batch."""
    ordered = _epoch_order(dataset, seed, epoch, True, shuffle_buffer_size)
    shard = split_dataset_by_node(ordered, rank=rank, world_size=world_size) if world_size > 1 else ordered
    batches, pixels, ids, labels = [], [], [], []
    for position, example in enumerate(shard):
        array = transform(example["image"], random.Random(hash((seed, epoch, rank, position))))
        if array is None:
            continue
        pixels.append(array), ids.append(example_id(example["image"])), labels.append(example["label"])
        if len(pixels) == batch_size:
            batches.append((torch.from_numpy(np.stack(pixels)), ids, torch.tensor(labels), position + 1))
            pixels, ids, labels = [], [], []
    if pixels:
        batches.append((torch.from_numpy(np.stack(pixels)), ids, torch.tensor(labels), position + 1))
    return batches


def run_pipeline(dataset, transform=AUGMENTED, **kwargs):
    kwargs = {**dict(batch_size=5, seed=3, epoch=1, shuffle_buffer_size=16, drop_last=False, with_ids=True,
                     columns=("label",), with_position=True), **kwargs}  # fmt: skip
    return [(b["pixel_values"], b["example_ids"], b["label"], b["data_position"])
            for b in batches_for_rank(dataset, "image", transform, **kwargs)]  # fmt: skip


def assert_same(got, expected):
    assert len(got) == len(expected)
    for (pixels, ids, labels, position), (pixels2, ids2, labels2, position2) in zip(got, expected):
        assert torch.equal(pixels, pixels2) and ids == ids2 and torch.equal(labels, labels2) and position == position2


# ------------------------------------------------------------------------------------------------ (a) identical batches
@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streamed"])
def test_batches_are_the_same_for_0_1_2_workers_with_broken_images_and_random_augmentations(image_data, streaming):
    data = image_data[streaming]
    expected = reference_batches(data, AUGMENTED, batch_size=5, seed=3, epoch=1, shuffle_buffer_size=16)
    assert len(expected) == 9 and len(expected[-1][1]) == 1  # 41 decodable images: 8 full batches and 1 image
    for num_workers, chunk_size in ((0, None), (1, None), (2, None), (2, 3)):  # chunks of 3 straddle the batches
        stats = BatchStats()
        got = run_pipeline(data, num_workers=num_workers, chunk_size=chunk_size, stats=stats)
        assert_same(got, expected)
        assert (stats.images, stats.decoded, stats.skipped) == (41, 41, 4), (num_workers, chunk_size)
    assert not torch.equal(expected[0][0], run_pipeline(data, seed=4)[0][0]), "another seed, other augmentations"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_uint8_batches_scaled_where_the_model_runs_equal_the_float_batches(image_data, num_workers):
    """Training takes uint8 batches ("pixels", (B, H, W, C)) and scales them on its device: the same values, bit for
    bit, as the float batches; channels-last on request."""
    transform = ImageTransform(8, 1, (-1.0, 1.0), center_crop=False, random_flip=True)
    floats = run_pipeline(image_data[False], transform, num_workers=num_workers)
    batches = list(batches_for_rank(image_data[False], "image", transform, batch_size=5, seed=3, epoch=1,
                                    shuffle_buffer_size=16, drop_last=False, num_workers=num_workers,
                                    pixels_as_uint8=True, with_position=True))  # fmt: skip
    assert len(batches) == len(floats) == 9 and "pixel_values" not in batches[0]
    for batch, (pixel_values, _, _, position) in zip(batches, floats):
        pixels = batch["pixels"]
        assert pixels.dtype == torch.uint8 and pixels.shape == (len(pixel_values), 8, 8, 1)
        assert batch["data_position"] == position
        scaled = transform.to_model_input(pixels)
        assert scaled.dtype == torch.float32 and scaled.is_contiguous() and torch.equal(scaled, pixel_values)
        channels_last = transform.to_model_input(pixels, channels_last=True)
        assert channels_last.is_contiguous(memory_format=torch.channels_last) and torch.equal(channels_last, pixel_values)
    assert batches[0]["pixels"].float().std() > 30, "resized noise: the values are not all one level"


def test_uint8_batches_need_a_two_stage_transform(image_data):
    with pytest.raises(ValueError, match="pixels_as_uint8=True needs a transform with the stages of ImageTransform"):
        next(batches_for_rank(image_data[False], "image", lambda raw, rng: None, batch_size=5, seed=0, epoch=0,
                              pixels_as_uint8=True))  # fmt: skip


# ------------------------------------------------------------------------------------------------ (b) rank shards
@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streamed"])
def test_two_ranks_with_two_workers_each_read_disjoint_shards_whose_union_is_the_data(image_data, streaming):
    data = image_data[streaming]
    everything = {example_id(example["image"]) for index, example in enumerate(data.select_columns(["image"]))
                  if index not in BROKEN}  # fmt: skip
    seen = []
    for rank in (0, 1):
        got = run_pipeline(data, rank=rank, world_size=2, num_workers=2)
        assert_same(got, reference_batches(data, AUGMENTED, batch_size=5, seed=3, epoch=1, rank=rank, world_size=2,
                                           shuffle_buffer_size=16))  # fmt: skip
        seen.append([ident for _, ids, _, _ in got for ident in ids])
    assert not set(seen[0]) & set(seen[1]), "the ranks saw disjoint examples"
    assert set(seen[0]) | set(seen[1]) == everything and len(seen[0]) + len(seen[1]) == 41


# ------------------------------------------------------------------------------------------------ (c) resume
class CountingTransform(ImageTransform):
    """Appends the id of every image it is asked to decode to a file: counts calls made in worker processes too."""

    def __init__(self, log: Path):
        super().__init__(8, 1, (0.0, 1.0), center_crop=False, random_flip=True)
        self.log = log

    def pixels(self, raw, rng):  # the decoding stage (`to_float` scales the assembled batch)
        with open(self.log, "a") as handle:
            handle.write(example_id(raw) + "\n")
        return super().pixels(raw, rng)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streamed"])
def test_resume_from_a_recorded_position_gives_the_rest_of_the_epoch_and_decodes_nothing_before_it(
    image_data, streaming, tmp_path
):
    data = image_data[streaming]
    straight = run_pipeline(data)
    order = [example_id(e["image"]) for e in _epoch_order(data, 3, 1, True, 16)]  # the epoch's raw order
    # Batches consumed before the "interruption": the first, and the first one after which undecodable images lie
    # behind the position (so that it is not simply batches x batch size).
    points = [1, next(done for done in range(2, len(straight)) if straight[done - 1][3] > 5 * done)]
    for num_workers in (0, 2):
        for done in points:
            log = tmp_path / f"calls-{num_workers}-{done}.txt"
            position = straight[done - 1][3]
            resumed = run_pipeline(data, transform=CountingTransform(log), start_position=position,
                                   num_workers=num_workers)  # fmt: skip
            assert_same(resumed, straight[done:])
            calls = log.read_text().split()
            assert sorted(calls) == sorted(order[position:]), "exactly the examples from the position on were decoded"
    # Without a position (a checkpoint that predates it) the skipped batches are decoded, then dropped: still exact.
    log = tmp_path / "calls-by-batch.txt"
    assert_same(run_pipeline(data, transform=CountingTransform(log), start_batch=4), straight[4:])
    assert len(log.read_text().split()) == len(order)


def test_training_state_keeps_every_process_position_and_reads_old_checkpoints(tmp_path):
    state = TrainingState(global_step=7, epoch=1, batches_in_epoch=3, position=17)
    written = state.to_json([17, 16])
    assert written == {"global_step": 7, "epoch": 1, "batches_in_epoch": 3, "positions": [17, 16]}
    (tmp_path / "training_state.json").write_text(json.dumps(written))
    assert read_training_state(tmp_path, process_index=1, num_processes=2).position == 16
    assert read_training_state(tmp_path, process_index=0, num_processes=3).position is None  # another world size
    (tmp_path / "training_state.json").write_text(json.dumps({"global_step": 7, "epoch": 1, "batches_in_epoch": 3}))
    old = read_training_state(tmp_path)
    assert (old.global_step, old.batches_in_epoch, old.position) == (7, 3, None)  # resumes by decoding 3 batches


def test_default_number_of_workers():
    assert default_num_workers(1, examples=100_000, cores=2) == 0  # 2 cores: the training step needs them
    assert default_num_workers(1, examples=1_000, cores=16) == 0  # a tiny dataset: worker start-up would dominate
    assert default_num_workers(1, examples=None, cores=16) == 8
    assert default_num_workers(4, examples=100_000, cores=16) == 3
    assert default_num_workers(8, examples=100_000, cores=16) == 0


# ------------------------------------------------------------------------------------------------ (d) end to end
TINY_VQ = ["--model", "vqvae", "--preset", "mnist", "--resolution", "8", "--num_downsamples", "1",
           "--hidden_channels", "16", "--residual_channels", "8", "--num_embeddings", "32", "--embedding_dim", "4",
           "--train_batch_size", "8", "--report_to", "none", "--logging_steps", "2", "--lr_warmup_steps", "2",
           "--center_crop", "false", "--random_flip", "--max_train_steps", "9", "--dataloader_num_workers", "2"]  # fmt: skip


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streamed"])
def test_resume_with_two_workers_gives_bit_identical_weights(tmp_path, streaming):
    data = write_images(tmp_path / "data", 45)
    write_images(data, 8, broken=(), split="test", seed=1)
    common = [*TINY_VQ, "--dataset_name", str(data), *(["--streaming"] if streaming else [])]

    def run(output, *extra):
        return train_script.main(train_script.parse_args([*common, "--output_dir", str(output), *extra]))

    run(tmp_path / "straight")  # 41 images: 5 batches of 8 in epoch 0, then 4 of epoch 1
    run(tmp_path / "half", "--checkpointing_steps", "3")
    half = tmp_path / "half"
    for later in list_checkpoints(checkpoint_root(half))[1:]:  # as if stopped right after step 3
        later.rename(later.parent / f".tmp-{later.name}")
    (half / "model.safetensors").unlink()
    state = json.loads((checkpoint_root(half) / "checkpoint-3" / "training_state.json").read_text())
    assert state["positions"][0] > 3 * 8, "the position counts the undecodable images before it"
    run(half, "--resume_from_checkpoint", "latest")
    expected, got = load_file(tmp_path / "straight" / "model.safetensors"), load_file(half / "model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# ------------------------------------------------------------------------------------------------ (e) code datasets
@pytest.fixture(scope="module")
def codes_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codes")
    info = CodesInfo(model="random", model_type="vqvae2", num_embeddings=16, code_shapes=[[2, 2], [4, 4]],
                     image_size=[16, 16], num_channels=1, num_classes=10, splits={"train": 43, "test": 8})  # fmt: skip
    rng = np.random.default_rng(0)
    for split, count in info.splits.items():
        rows = {"codes_0": rng.integers(0, 16, (count, 2, 2)).astype(np.int16),
                "codes_1": rng.integers(0, 16, (count, 4, 4)).astype(np.int16),
                "label": rng.integers(0, 10, count).tolist()}  # fmt: skip
        write_shard(folder, split, 0, 1, rows, info)
    write_card(folder, info, "random codes")
    return folder


def _code_batches(dataset, **kwargs):
    kwargs = dict(batch_size=4, seed=2, epoch=1, with_labels=True, with_position=True, **kwargs)
    return [(b["codes"], b["condition_codes"], b["class_labels"], b["data_position"])
            for b in code_batches(dataset, 1, **kwargs)]  # fmt: skip


def test_code_batches_are_the_same_for_any_number_of_workers_and_resume_by_position(codes_folder):
    train = load_codes(codes_folder)[0]["train"]

    def same(got, expected):
        assert len(got) == len(expected)
        assert all(all(torch.equal(a, b) for a, b in zip(x[:3], y[:3])) and x[3] == y[3] for x, y in zip(got, expected))

    for world_size in (1, 2):
        shards = []
        for rank in range(world_size):
            straight = _code_batches(train, rank=rank, world_size=world_size)
            for num_workers in (1, 2):
                same(_code_batches(train, rank=rank, world_size=world_size, num_workers=num_workers), straight)
                same(_code_batches(train, rank=rank, world_size=world_size, num_workers=num_workers,
                                   start_position=straight[2][3]), straight[3:])  # fmt: skip
            same(_code_batches(train, rank=rank, world_size=world_size, start_batch=3), straight[3:])
            shards.append({tuple(row) for codes, *_ in straight for row in codes.flatten(1).tolist()})
        if world_size == 2:
            assert not shards[0] & shards[1]
    assert len(straight) == 5 and straight[-1][3] == 20  # rank 1 of 2: rows 0..19 of its 21 in batches of 4


def test_prior_resume_with_two_workers_gives_bit_identical_weights(codes_folder, tmp_path):
    common = ["--model", "pixelcnn-prior", "--preset", "mnist", "--level", "1", "--num_embeddings", "16",
              "--condition_num_embeddings", "16", "--hidden_channels", "8", "--num_layers", "2",
              "--codes_dataset", str(codes_folder), "--train_batch_size", "8", "--max_train_steps", "7",
              "--report_to", "none", "--lr_warmup_steps", "2", "--dataloader_num_workers", "2"]  # fmt: skip

    def run(output, *extra):
        return train_script.main(train_script.parse_args([*common, "--output_dir", str(output), *extra]))

    run(tmp_path / "straight")  # 43 rows: 5 batches of 8 per epoch, so step 7 is in epoch 1
    run(tmp_path / "half", "--checkpointing_steps", "3")
    half = tmp_path / "half"
    for later in list_checkpoints(checkpoint_root(half))[1:]:
        later.rename(later.parent / f".tmp-{later.name}")
    (half / "model.safetensors").unlink()
    run(half, "--resume_from_checkpoint", "latest")
    expected, got = load_file(tmp_path / "straight" / "model.safetensors"), load_file(half / "model.safetensors")
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# ------------------------------------------------------------------------------------------------ the benchmark
def test_data_throughput_benchmark_quick_run_writes_the_table_and_json(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("data_throughput", ROOT / "benchmarks" / "data_throughput.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "data.json"
    results = benchmark.main(benchmark.parse_args(["--quick", "--workers", "0", "2", "--threads", "1", "--before_row",
                                                   "--json", str(out)]))  # fmt: skip
    written = json.loads(out.read_text())
    assert set(written["data_img_s"]) == {"0", "2", "0 before"}
    assert all(value > 0 for value in written["data_img_s"].values())
    assert written["speedup_2_workers"] == pytest.approx(written["data_img_s"]["2"] / written["data_img_s"]["0"])
    assert isinstance(written["targets"]["speedup_2_workers >= 1.8"], bool)  # measured, not asserted (timing)
    assert written["pipeline"]["2"]["batch_shape"] == [16, 64, 64, 3] and written["photos"]["files"] == 48  # uint8
    assert written["pipeline"]["0 before"]["batch_shape"] == [16, 3, 64, 64]  # float32, as the pipeline made before
    assert written["train_vqvae2_imagenet256_img_s"] is None and results["config"] == written["config"]
    assert "x 0 workers" in capsys.readouterr().out


def test_pixels_then_to_float_is_bit_identical_to_the_former_one_stage_transform():
    # Workers send uint8 pixels and the batch is scaled at once; every value must come out as the former
    # `np.asarray(image, float32) * ((high - low) / 255) + low` made it, bit for bit.
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for low, high in ((-1.0, 1.0), (0.0, 1.0), (-0.5, 0.5), (0.1, 0.9)):
        former = np.asarray(Image.fromarray(values), dtype=np.float32) * ((high - low) / 255.0) + low
        transform = ImageTransform(16, 1, (low, high))
        raw = {"bytes": _png(values), "path": None}
        assert np.array_equal(transform(raw, random.Random(0))[0].view(np.uint32), former.view(np.uint32))
        rgb = np.stack([values, values[::-1], values.T], axis=-1)
        batch = transform.to_float(np.stack([rgb, rgb[::-1]]))
        assert batch.shape == (2, 3, 16, 16) and batch.flags.c_contiguous
        assert np.array_equal(batch[1, 2].view(np.uint32), former.T[::-1].view(np.uint32))
