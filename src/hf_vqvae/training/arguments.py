"""Command-line arguments of scripts/train.py, as dataclasses for `HfArgumentParser`.

Names follow diffusers' example training scripts where one exists there (output_dir, max_train_steps,
train_batch_size, learning_rate, gradient_accumulation_steps, mixed_precision, report_to, checkpointing_steps,
resume_from_checkpoint, seed ...). Any field of the model's config can also be set: `--num_embeddings 256`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import PreTrainedConfig

from ..registry import FAMILIES, cli_names


@dataclass
class ModelArguments:
    """Which model to train, from a preset or from a saved model."""

    model: str = field(default="vqvae", metadata={
        "help": "Model family: " + "; ".join(f"{f.cli_name} ({f.description})" for f in FAMILIES) + ".",
        "choices": list(cli_names())})
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Named architecture from the papers (hf_vqvae.list_presets()); default: "
            + ", ".join(f"{f.default_preset} ({f.cli_name})" for f in FAMILIES) + ". Not allowed with --init_from."
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "Fine-tune: a saved model folder or Hub id; its config gives the architecture."},
    )
    codes_dataset: str | None = field(
        default=None, metadata={"help": "Priors: a codes dataset folder made by scripts/extract_codes.py."}
    )
    level: int = field(default=0, metadata={"help": "Priors: the level of the codes to model (0 = top)."})
    paper_codebook: bool = field(
        default=False,
        metadata={"help": "VQ models: the papers' codebook (random init, no dead-code restarts) instead of the defaults "
                  "(k-means init, restarts after 20 unused steps), which keep the codes alive on natural images."},
    )
    reset_dead_codes: bool = field(
        default=False,
        metadata={"help": "With --init_from: re-seed codes unused on the first batches of the new data before training."},
    )


@dataclass
class TrainArguments:
    """How to train: optimisation, schedule, precision, checkpoints and logging."""

    output_dir: str | None = field(default=None, metadata={"help": "Where to write the run; default outputs/<model>-<preset>."})
    max_train_steps: int | None = field(default=None, metadata={"help": "Optimizer steps; overrides --num_train_epochs."})
    num_train_epochs: int = field(default=1, metadata={"help": "Passes over the training data (without --max_train_steps)."})
    train_batch_size: int = field(default=64, metadata={"help": "Images per process per micro-batch."})
    eval_batch_size: int = field(default=128, metadata={"help": "Images per batch when evaluating."})
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={"help": "DataLoader worker processes per training process that decode and augment the training "
                  "images (or read the codes); 0 decodes in the training process. The batches are the same for "
                  "any number. Unset: the cores per process minus one (at most 8), but 0 with 2 or fewer cores per "
                  "process (the workers would take the training step's cores) or fewer than 4096 examples per "
                  "process (workers restart every epoch, ~1-2 s, more than decoding so few takes); priors: 0 "
                  "(codes are read, not decoded)."},
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate of AdamW (VQ-VAE paper: 2e-4)."})
    lr_warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps before the schedule."})
    lr_scheduler: str = field(
        default="cosine", metadata={"help": "After the warm-up: cosine (decay to 0 at the last step) or constant."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    mixed_precision: str | None = field(
        default=None,
        metadata={"help": "no, bf16 or fp16 (the quantizer stays in float32); unset: what `accelerate launch "
                  "--mixed_precision` or the accelerate config file says (else no)."},
    )
    num_latent_samples: int | None = field(default=None, metadata={"help": "VAE: samples L per image in the ELBO."})
    binarize: str = field(
        default="none",
        metadata={"help": "VAE with a Bernoulli decoder: none, dynamic (x ~ Bernoulli(pixel) every step) or threshold."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the model init, data order and augmentations."})
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate tracker: tensorboard, wandb, all or none."})
    logging_steps: int = field(default=25, metadata={"help": "Log the loss and codebook health every N steps."})
    codebook_usage_warning: float = field(
        default=0.1,
        metadata={"help": "Warn (once per level) when a level uses fewer than this fraction of its codes over a logging window."},
    )
    image_logging_steps: int = field(default=0, metadata={"help": "Write images/step-N.png (held-out inputs over reconstructions) every N steps; 0: only the final grid."})
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Save a resumable checkpoint every N steps."})
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder to resume from."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete the checkpoints of an earlier run in --output_dir and start afresh (without it such a "
                  "folder is refused unless --resume_from_checkpoint is given)."},
    )
    skip_nonfinite: bool = field(default=False, metadata={"help": "Skip steps with a NaN/Inf loss instead of stopping."})
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the training forward and backward with torch.compile (inductor; on a CPU it needs a "
                  "C++ compiler). The first step compiles (tens of seconds on a CPU); evaluation and the saved model "
                  "use the plain module. Also honoured: accelerate launch --dynamo_backend."},
    )
    channels_last: bool = field(
        default=False,
        metadata={"help": "Convolutional models: weights and image batches in channels-last memory layout (faster "
                  "convolutions on CPUs); no effect on layers without 4-D weights. Saved weights are standard."},
    )
    push_to_hub: bool = field(
        default=False,
        metadata={"help": "After training, publish the run as scripts/push_to_hub.py does: the repo folder (safetensors, "
                  "config, processor, model code, card), validated in a fresh process without the package, uploaded."},
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "With --push_to_hub: the repo, namespace/name (required)."}
    )
    hub_private_repo: bool = field(default=False, metadata={"help": "With --push_to_hub: create the repo private."})
    hub_token: str | None = field(default=None, metadata={"help": "With --push_to_hub: a Hub token (default: the logged-in one)."})
    debug_rank_outputs: bool = field(
        default=False,
        metadata={"help": "Each process writes the ids of the images it saw and its final weights (for tests)."},
    )

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id namespace/name (the repo to create or update)")
        if not self.push_to_hub and (self.hub_model_id or self.hub_private_repo):
            raise ValueError("--hub_model_id and --hub_private_repo apply with --push_to_hub; add it or drop them")
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise ValueError(f"--mixed_precision must be no, bf16 or fp16 (or unset), got {self.mixed_precision!r}")
        for name in ("train_batch_size", "eval_batch_size", "gradient_accumulation_steps", "num_train_epochs", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.dataloader_num_workers is not None and self.dataloader_num_workers < 0:
            raise ValueError(f"--dataloader_num_workers must be >= 0 (or unset), got {self.dataloader_num_workers}")
        for name in ("max_train_steps", "checkpointing_steps", "checkpoints_total_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1 (or unset), got {value}")
        if self.lr_scheduler not in ("cosine", "constant"):
            raise ValueError(f"--lr_scheduler must be cosine or constant, got {self.lr_scheduler!r}")
        if self.binarize not in ("none", "dynamic", "threshold"):
            raise ValueError(f"--binarize must be none, dynamic or threshold, got {self.binarize!r}")
        if not 0.0 <= self.codebook_usage_warning <= 1.0:
            raise ValueError(f"--codebook_usage_warning is a fraction of the codes in [0, 1], got {self.codebook_usage_warning}")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")


def parse_config_overrides(remaining: list[str], config_class) -> dict:
    """`["--num_embeddings", "256", "--ema_decay", "null"]` -> {"num_embeddings": 256, "ema_decay": None}.

    Values are read as JSON when they parse (numbers, true/false, null, lists), else as strings. Only fields of
    `config_class` are accepted, so a typo is an error, not a silently ignored option.
    """
    # Fields every PreTrainedConfig has (dtype, id2label ...) are not architecture: not offered as overrides.
    known = set(config_class.__dataclass_fields__) - set(PreTrainedConfig.__dataclass_fields__)
    overrides, index = {}, 0
    while index < len(remaining):
        token = remaining[index]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}; options look like --name value")
        name, equals, value = token[2:].partition("=")
        if not equals:
            if index + 1 >= len(remaining):
                raise ValueError(f"--{name} needs a value")
            value, index = remaining[index + 1], index + 1
        if name not in known:
            raise ValueError(
                f"unknown option --{name}: not a training option nor a field of {config_class.__name__} "
                f"(its fields: {', '.join(sorted(known))})"
            )
        overrides[name] = _parse_value(value)
        index += 1
    return overrides


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text

