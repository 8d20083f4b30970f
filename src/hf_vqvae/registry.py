"""The model families of hf_vqvae, in one table that every other part reads.

A family is a config class, a model class and what the rest of the library needs to know about it: its name on the
command line (`scripts/train.py --model`), its default preset, what it trains on (images or codes), how it is
evaluated, which card template describes it and which papers it cites. Registration with the Auto classes
(`hf_vqvae/__init__.py`), the training script's `--model` choices and builders (`training/`), the model cards
(`cards/`), `scripts/evaluate.py`, `scripts/extract_codes.py` and the demo all look a family up here; adding a
family means adding one `ModelFamily` to `FAMILIES` (and its classes and card template).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PreTrainedConfig, PreTrainedModel

from .models.pixelcnn_prior import PixelCNNPriorConfig, PixelCNNPriorModel
from .models.transformer_prior import TransformerPriorConfig, TransformerPriorModel
from .models.vae import VAEConfig, VAEModel
from .models.vqvae import VQVAE2Config, VQVAE2Model, VQVAEConfig, VQVAEModel

# What a family trains on and how it is judged: the training task and evaluation follow from it.
KINDS = ("vq", "vae", "prior")


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    Args:
        cli_name: the value of `scripts/train.py --model` ("pixelcnn-prior").
        display_name: how cards and messages name it ("PixelCNN prior").
        config_class, model_class: the transformers classes; `config_class.model_type` is the family's key.
        default_preset: the preset `--model` trains when no `--preset` is given.
        kind: "vq" (images -> discrete codes), "vae" (images -> a continuous latent) or "prior" (trained on the
            codes of a VQ model).
        card_template: the Jinja template under `cards/templates/` that renders its model card.
        citations: keys of `cards.BIBTEX`, the papers its card cites.
        description: one line for `--help`.
        architecture_summary: a config -> one phrase for its model card ("gated PixelCNN, 12 layers x 64 channels").
    """

    cli_name: str
    display_name: str
    config_class: type[PreTrainedConfig]
    model_class: type[PreTrainedModel]
    default_preset: str
    kind: str
    card_template: str
    citations: tuple[str, ...]
    description: str
    architecture_summary: Callable[[PreTrainedConfig], str]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"family {self.cli_name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.default_preset not in self.config_class.list_presets():
            raise ValueError(f"family {self.cli_name!r}: no preset {self.default_preset!r} in {self.config_class.__name__}")

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def is_prior(self) -> bool:
        return self.kind == "prior"

    @property
    def is_vq(self) -> bool:
        return self.kind == "vq"

    @property
    def reads_images(self) -> bool:
        """Whether the model reads images (and so has an image processor); a prior reads codes."""
        return self.kind in ("vq", "vae")

    @property
    def value_range(self) -> tuple[float, float]:
        """The pixel range the model reads and writes: [0, 1] for the VAE (its Bernoulli decoder), else [-1, 1]."""
        return (0.0, 1.0) if self.kind == "vae" else (-1.0, 1.0)

    @property
    def pipeline_tag(self) -> str:
        """The Hub's task for the model page: autoencoders map images to images, the rest generate them."""
        return "image-to-image" if self.is_vq else "unconditional-image-generation"


def _vq_summary(config) -> str:
    return (f"{config.num_levels}-level VQ-VAE with {config.architecture} blocks, K = {config.num_embeddings}, "
            f"D = {config.embedding_dim}")  # fmt: skip


def _vae_summary(config) -> str:
    return f"{config.architecture} VAE, {config.latent_dim}-d latent, {config.decoder_distribution} decoder"


def _pixelcnn_summary(config) -> str:
    return f"gated PixelCNN, {config.num_layers} layers x {config.hidden_channels} channels"


def _transformer_summary(config) -> str:
    return f"GPT-2 causal transformer, {config.n_layer} layers"


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("vae", "VAE", VAEConfig, VAEModel, "mnist-paper", "vae", "vae.md.jinja", ("vae",),
                "variational autoencoder (Kingma & Welling 2013)", _vae_summary),
    ModelFamily("vqvae", "VQ-VAE", VQVAEConfig, VQVAEModel, "mnist", "vq", "vqvae.md.jinja", ("vqvae",),
                "VQ-VAE, one level of codes (van den Oord et al. 2017)", _vq_summary),
    ModelFamily("vqvae2", "VQ-VAE-2", VQVAE2Config, VQVAE2Model, "imagenet256-paper", "vq", "vqvae.md.jinja",
                ("vqvae2", "vqvae"), "hierarchical VQ-VAE-2 (Razavi et al. 2019)", _vq_summary),
    ModelFamily("pixelcnn-prior", "PixelCNN prior", PixelCNNPriorConfig, PixelCNNPriorModel, "mnist", "prior",
                "prior.md.jinja", ("pixelcnn", "vqvae2", "vqvae"), "gated PixelCNN prior over one level of codes",
                _pixelcnn_summary),
    ModelFamily("transformer-prior", "transformer prior", TransformerPriorConfig, TransformerPriorModel, "mnist",
                "prior", "prior.md.jinja", ("gpt2", "vqvae"), "GPT-2 transformer prior over one level of codes",
                _transformer_summary),
)  # fmt: skip


def cli_names() -> tuple[str, ...]:
    """The `--model` choices of scripts/train.py, in the registry's order."""
    return tuple(family.cli_name for family in FAMILIES)


def family_for(name: str | PreTrainedConfig | PreTrainedModel) -> ModelFamily:
    """The family of a `--model` name ("pixelcnn-prior"), a model_type ("pixelcnn_prior"), a config or a model."""
    config = getattr(name, "config", name)
    key = config.model_type if isinstance(config, PreTrainedConfig) else name
    for family in FAMILIES:
        if key in (family.cli_name, family.model_type):
            return family
    known = ", ".join(f"{family.cli_name} ({family.model_type})" for family in FAMILIES)
    raise ValueError(f"unknown model family {key!r}; hf_vqvae knows: {known}")


def families_of_kind(kind: str) -> tuple[ModelFamily, ...]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return tuple(family for family in FAMILIES if family.kind == kind)


__all__ = ["FAMILIES", "KINDS", "ModelFamily", "cli_names", "families_of_kind", "family_for"]
