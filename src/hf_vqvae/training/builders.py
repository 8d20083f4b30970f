"""Building the model, the image processor, the optimizer and the schedule from the arguments."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, get_scheduler

from ..data.codes import INFO_FILE, CodesInfo
from ..image_processing import VQImageProcessor
from ..models.vqvae import PAPER_CODEBOOK
from ..registry import cli_names, families_of_kind, family_for
from .arguments import ModelArguments
from .logs import get_logger

logger = get_logger(__name__)


def config_class_for(cli_name: str):
    """The config class of a `--model` name; a clear error for an unknown one."""
    if cli_name not in cli_names():
        raise ValueError(f"--model must be one of {', '.join(cli_names())}, got {cli_name!r}")
    return family_for(cli_name).config_class


def default_preset(args: ModelArguments) -> str:
    return args.preset or family_for(args.model).default_preset


def run_output_dir(model_args: ModelArguments, train_args) -> Path:
    """`--output_dir`, by default outputs/<model>-<preset>."""
    return Path(train_args.output_dir or f"outputs/{model_args.model}-{default_preset(model_args)}")


def build_model(args: ModelArguments, overrides: dict, resolution: int | None):
    """A new model from `--preset` (+ overrides), or a saved one from `--init_from` (fine-tuning)."""
    family = family_for(config_class_for(args.model).model_type)
    if args.paper_codebook:
        overrides = _with_paper_codebook(args, overrides)
    if args.init_from is not None:
        return _load_for_fine_tuning(args, overrides, resolution)
    if args.reset_dead_codes:
        raise ValueError("--reset_dead_codes re-seeds the codes of a saved model: use it with --init_from")
    values = dict(overrides)
    if family.is_prior:
        values = {**prior_fields_from_codes(args), **values}  # what the codes dataset says, unless overridden
    elif resolution is not None:
        values["image_size"] = resolution
    return family.model_class(family.config_class.from_preset(default_preset(args), **values))


def prior_fields_from_codes(args: ModelArguments) -> dict:
    """A prior's codebook size, code shape, classes and conditioning, read from its codes dataset."""
    if args.codes_dataset is None:
        raise ValueError("a prior trains on codes: pass --codes_dataset DIR (made by scripts/extract_codes.py)")
    path = Path(args.codes_dataset) / INFO_FILE
    if not path.is_file():
        raise ValueError(f"{args.codes_dataset} is not a codes dataset (no {INFO_FILE}); run scripts/extract_codes.py")
    info = CodesInfo(**json.loads(path.read_text()))
    if not 0 <= args.level < info.num_levels:
        raise ValueError(f"--level {args.level} is out of range: the codes have {info.num_levels} level(s), top = 0")
    fields = {"num_embeddings": info.num_embeddings, "code_shape": info.code_shapes[args.level],
              "num_classes": info.num_classes, "condition_num_embeddings": info.num_embeddings if args.level else 0}  # fmt: skip
    if args.level:
        fields.update(family_for(args.model).config_class.condition_fields(info.code_shapes[args.level - 1],
                                                                           info.code_shapes[args.level]))
    return fields


# Fields of a VQ model's config that set how its codebook trains, not what the model computes: a fine-tune may
# change them (`--dead_code_threshold 50`); every other field is architecture and comes from the saved config.
FINE_TUNING_CODEBOOK_FIELDS = ("dead_code_threshold", "rotation_trick", "beta")


def _load_for_fine_tuning(args: ModelArguments, overrides: dict, resolution: int | None):
    if args.preset is not None:
        raise ValueError(
            f"--preset {args.preset} conflicts with --init_from {args.init_from}: the saved model's config gives the "
            f"architecture; drop --preset"
        )
    family = family_for(args.model)
    architecture = [key for key in overrides if key not in FINE_TUNING_CODEBOOK_FIELDS]
    if architecture or (overrides and not family.is_vq):
        raise ValueError(
            f"config overrides ({', '.join('--' + k for k in architecture or overrides)}) cannot change a saved model's "
            f"architecture; train from a preset instead, or drop them (a VQ model's fine-tune may set "
            f"{', '.join('--' + k for k in FINE_TUNING_CODEBOOK_FIELDS)})"
        )
    config = AutoConfig.from_pretrained(args.init_from)
    if config.model_type != family.model_type:
        raise ValueError(f"{args.init_from} is a {config.model_type!r} model, not --model {args.model}")
    if family.is_vq:
        config = _fine_tuning_codebook(config, overrides)
    model = AutoModel.from_pretrained(args.init_from, config=config)
    if resolution is not None and family.kind == "vae" and resolution != model.config.image_size:
        raise ValueError(f"a VAE reads images of its config's size {model.config.image_size} only; drop --resolution")
    if resolution is not None:
        model.config.image_size = resolution  # the VQ models are fully convolutional
    return model


def _with_paper_codebook(args: ModelArguments, overrides: dict) -> dict:
    """`--paper_codebook`: the papers' codebook options under the user's explicit overrides."""
    if not family_for(args.model).is_vq:
        vq_names = ", ".join(f.cli_name for f in families_of_kind("vq"))
        raise ValueError(f"--paper_codebook applies to the VQ models ({vq_names}), not --model {args.model}")
    paper = PAPER_CODEBOOK
    if args.init_from is not None:  # a saved model keeps its lookup; only how its codebook trains changes
        paper = {key: value for key, value in PAPER_CODEBOOK.items() if key in FINE_TUNING_CODEBOOK_FIELDS}
    return {**paper, **overrides}


def _fine_tuning_codebook(config, overrides: dict):
    """The saved config with the fine-tune's codebook options (validated). A saved model without dead-code restarts
    (the paper's codebook, or an older model) fine-tunes with the library's default restarts, so that codes the new
    data never picks come back; `--dead_code_threshold null` keeps them off."""
    changes = dict(overrides)
    if config.dead_code_threshold is None and "dead_code_threshold" not in overrides:
        changes["dead_code_threshold"] = type(config)().dead_code_threshold
        logger.info("fine-tuning with dead-code restarts after %s unused steps (the default; the saved model had "
                    "none); pass --dead_code_threshold null to keep them off", changes["dead_code_threshold"])  # fmt: skip
    return type(config).from_dict({**config.to_dict(), **changes}) if changes else config


def build_processor(config) -> VQImageProcessor:
    return VQImageProcessor.from_model_config(config)


def build_optimizer(model, args) -> torch.optim.Optimizer:
    # The EMA codebooks are not trained by the optimizer (requires_grad=False).
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
    )


def build_scheduler(optimizer, args, total_steps: int, num_processes: int):
    # A prepared scheduler steps once per process per optimizer step (accelerate), so scale like diffusers does.
    name = {"cosine": "cosine", "constant": "constant_with_warmup"}[args.lr_scheduler]  # both warm up first
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=min(args.lr_warmup_steps, total_steps) * num_processes,
        num_training_steps=total_steps * num_processes,
    )
