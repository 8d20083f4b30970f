"""What is trained on what: images for the autoencoders, code datasets for the priors.

A task gives the training loop its batches, its forward pass, its held-out metrics and the files a finished run
writes beside the weights; the loop itself (optimisation, checkpoints, logging) is the same for every model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import BatchStats, DataArguments, ImageTransform, batches_for_rank, default_num_workers, load_image_splits
from ..data.codes import INFO_FILE, check_prior_matches, code_batches, load_codes
from ..evaluation import binarize, evaluate_vae, evaluate_vq, to_jsonable
from ..registry import family_for
from .artifacts import reconstruction_grid, sample_grid
from .builders import build_processor
from .logs import get_logger

logger = get_logger(__name__)


def num_workers_for(args, world_size: int, dataset, decodes: bool = True) -> int:
    """--dataloader_num_workers, or when unset `default_num_workers` for this dataset (its size per process when
    known) and number of processes; 0 for data that is read but not decoded (`decodes=False`: code datasets, whose
    batches are slices of integer arrays, cheaper to read than to send from another process)."""
    requested = getattr(args, "dataloader_num_workers", None)
    if requested is not None:
        return requested
    if not decodes:
        return 0
    examples = len(dataset) // max(world_size, 1) if hasattr(dataset, "__len__") else None
    return default_num_workers(world_size, examples)


def pins_memory(device) -> bool:
    """Batches go to page-locked memory only for a CUDA device (a faster, asynchronous copy there)."""
    return device is not None and torch.device(device).type == "cuda"


class _Workers:
    """The number of decoding workers of a task, resolved once and logged once."""

    workers: int | None = None
    decodes = True  # images are decoded; codes are only read

    def num_workers(self, world_size: int, dataset) -> int:
        if self.workers is None:
            self.workers = num_workers_for(self.args, world_size, dataset, self.decodes)
            logger.info("data: %d DataLoader worker process(es) per training process%s", self.workers,
                        "" if getattr(self.args, "dataloader_num_workers", None) is not None
                        else " (the default for this machine and dataset; set --dataloader_num_workers)")  # fmt: skip
        return self.workers


class ImageTask(_Workers):
    """VAE / VQ-VAE / VQ-VAE-2 on an image dataset (Hub id, local folder, imagefolder, sklearn digits)."""

    def __init__(self, model, data_args: DataArguments, args, seed: int):
        self.args, self.data_args = args, data_args
        self.processor = build_processor(model.config)
        self.splits = load_image_splits(data_args, seed=seed)
        self.transform = ImageTransform(model.config.image_size, model.config.num_channels,
                                        self.processor.value_range, data_args.center_crop, data_args.random_flip)  # fmt: skip
        self.source = self.splits.source

    @property
    def train_dataset(self):
        return self.splits.train

    def batches(self, epoch: int, start_batch: int, rank: int, world_size: int, stats: BatchStats, with_ids: bool,
                start_position: int | None = None, device=None):  # fmt: skip
        """The training batches of `epoch` for process `rank`, from raw position `start_position` when known (else
        after `start_batch` batches, decoded and dropped); each carries "data_position" for the checkpoint."""
        return batches_for_rank(
            self.splits.train, self.splits.image_column, self.transform,
            batch_size=self.args.train_batch_size, seed=self.args.seed, epoch=epoch, rank=rank,
            world_size=world_size, start_batch=start_batch, start_position=start_position,
            shuffle_buffer_size=self.data_args.shuffle_buffer_size, stats=stats, with_ids=with_ids,
            with_position=True, num_workers=self.num_workers(world_size, self.splits.train),
            pin_memory=pins_memory(device), pixels_as_uint8=True,
        )  # fmt: skip

    def model_input(self, batch: dict, device) -> torch.Tensor:
        """A training batch's images as the model takes them: its uint8 pixels copied to `device` (a quarter of the
        bytes of float32), then scaled there; channels-last with --channels_last."""
        pixels = batch["pixels"].to(device, non_blocking=True)
        return self.transform.to_model_input(pixels, channels_last=bool(getattr(self.args, "channels_last", False)))

    def forward(self, model, config, batch: dict, device):
        pixel_values = self.model_input(batch, device)
        if family_for(config).kind == "vae":
            pixel_values = binarize(pixel_values, self.args.binarize)  # dynamic: the global RNG, restored on resume
            return model(pixel_values, num_latent_samples=self.args.num_latent_samples)
        return model(pixel_values)

    def eval_batches(self, batch_size: int):
        return batches_for_rank(self.splits.eval, self.splits.image_column, self.transform, batch_size=batch_size,
                                seed=self.args.seed, epoch=0, shuffle=False, drop_last=False)  # fmt: skip

    def evaluate(self, model) -> dict:
        moved = ({"pixel_values": b["pixel_values"].to(model.device)} for b in self.eval_batches(self.args.eval_batch_size))
        if family_for(model).kind == "vae":
            generator = torch.Generator(device=model.device).manual_seed(self.args.seed)
            return to_jsonable(evaluate_vae(model, moved, binarize=self.args.binarize, generator=generator))
        return to_jsonable(evaluate_vq(model, moved))

    def grid(self, model):
        first = next(iter(self.eval_batches(8)))["pixel_values"].to(model.device)
        return reconstruction_grid(model, self.processor, first)

    def write_artifacts(self, model, output_dir: Path) -> None:
        self.processor.save_pretrained(output_dir)
        self.grid(model).save(output_dir / "reconstructions.png")
        if family_for(model).kind == "vae":
            sample_grid(model, self.processor, seed=self.args.seed).save(output_dir / "samples.png")


class PriorTask(_Workers):
    """A PixelCNN or transformer prior on one level of a codes dataset (scripts/extract_codes.py)."""

    decodes = False

    def __init__(self, model, codes_dataset: str, level: int, args):
        self.args, self.level, self.folder = args, level, Path(codes_dataset)
        self.dataset, self.info = load_codes(codes_dataset)
        config = model.config
        check_prior_matches(self.info, level, config.num_embeddings, config.num_classes,
                            getattr(config, "condition_num_embeddings", 0))  # fmt: skip
        self.with_labels = config.num_classes > 0
        if self.with_labels and not self.info.num_classes:
            raise ValueError(f"the prior is class-conditional but {codes_dataset} has no labels; set --num_classes 0")
        self.eval_split = "test" if "test" in self.dataset else "train"
        self.source = str(codes_dataset)
        self._record_codes_source(config)

    def _record_codes_source(self, config) -> None:
        """Write into the prior's config which VQ model made its codes (name and codebook fingerprint, from
        codes_info.json), replacing any a base prior carried; VQVAE2Pipeline refuses a decoder it does not match."""
        config.codes_source = {"model": self.info.model, "codebook_sha256": self.info.codebook_sha256}
        if self.info.codebook_sha256 is None:
            logger.warning("%s records no codebook fingerprint (it predates that field), so pipelines cannot check "
                           "that this prior meets the VQ model its codes came from; re-extract the codes with "
                           "scripts/extract_codes.py to record it", self.folder)  # fmt: skip

    @property
    def train_dataset(self):
        return self.dataset["train"]

    def batches(self, epoch: int, start_batch: int, rank: int, world_size: int, stats: BatchStats, with_ids: bool,
                start_position: int | None = None, device=None):  # fmt: skip
        return code_batches(self.dataset["train"], self.level, batch_size=self.args.train_batch_size,
                            seed=self.args.seed, epoch=epoch, rank=rank, world_size=world_size,
                            start_batch=start_batch, start_position=start_position, with_labels=self.with_labels,
                            with_position=True, num_workers=self.num_workers(world_size, self.dataset["train"]),
                            pin_memory=pins_memory(device))  # fmt: skip

    def forward(self, model, config, batch: dict, device):
        inputs = {key: value.to(device, non_blocking=True) for key, value in batch.items() if key != "data_position"}
        return model(**inputs)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """Cross-entropy of the held-out codes: nats per code and bits per image dimension."""
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in code_batches(self.dataset[self.eval_split], self.level, batch_size=self.args.eval_batch_size,
                                  seed=0, epoch=0, shuffle=False, drop_last=False, with_labels=self.with_labels):  # fmt: skip
            inputs = {key: value.to(model.device) for key, value in batch.items()}
            logits = model(**inputs).logits.float()
            total += float(F.cross_entropy(logits, inputs["codes"], reduction="sum"))
            count += inputs["codes"].numel()
        model.train(was_training)
        nats = total / max(count, 1)
        return {"nll_nats_per_code": nats, "nll_bits_per_code": nats / math.log(2), "eval_codes": count,
                "bits_per_dim": self.info.bits_per_dim(nats, level=self.level), "level": self.level}  # fmt: skip

    def grid(self, model):
        return None  # priors log no reconstruction grid

    def write_artifacts(self, model, output_dir: Path) -> None:
        # The codes' provenance travels with the prior, so a pipeline can check it against its decoder.
        info = json.loads((self.folder / INFO_FILE).read_text())
        (Path(output_dir) / INFO_FILE).write_text(json.dumps({**info, "level": self.level}, indent=2))


def make_task(model, model_args, data_args: DataArguments, args):
    if family_for(model).is_prior:
        if model_args.codes_dataset is None:
            raise ValueError("a prior trains on codes: pass --codes_dataset DIR (made by scripts/extract_codes.py)")
        return PriorTask(model, model_args.codes_dataset, model_args.level, args)
    return ImageTask(model, data_args, args, args.seed)
