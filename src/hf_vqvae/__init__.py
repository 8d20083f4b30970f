"""hf_vqvae: VAE, VQ-VAE and VQ-VAE-2 (and priors over their codes) as Hugging Face models.

Importing the package registers every config, model and image processor with the transformers Auto classes, so
`AutoModel.from_pretrained("org/vqvae2-imagenet")` returns a `VQVAE2Model`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .image_processing import VQImageProcessor
from .models.pixelcnn_prior import PixelCNNPriorConfig, PixelCNNPriorModel
from .models.transformer_prior import TransformerPriorConfig, TransformerPriorModel
from .models.vae import VAEConfig, VAEModel
from .models.vqvae import (
    PAPER_CODEBOOK,
    QuantizerOutput,
    VectorQuantizer,
    VQVAE2Config,
    VQVAE2Model,
    VQVAEConfig,
    VQVAEModel,
)
from .registry import FAMILIES, ModelFamily, family_for

__version__ = "0.1.0"


def _register() -> None:
    for family in FAMILIES:
        config_class, model_class = family.config_class, family.model_class
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        if family.reads_images:
            AutoImageProcessor.register(config_class, image_processor_classes={"pil": VQImageProcessor}, exist_ok=True)
        # save_pretrained then writes the model folder's code and an auto_map, so the saved folder also loads
        # with trust_remote_code=True where hf_vqvae is not installed.
        config_class.register_for_auto_class("AutoConfig")
        model_class.register_for_auto_class("AutoModel")
    # The same for the image processor: preprocessor_config.json gets an auto_map and image_processing.py travels.
    VQImageProcessor.register_for_auto_class("AutoImageProcessor")


def list_presets() -> dict[str, list[str]]:
    """Every named architecture, by config class name: `{"VQVAE2Config": ["ffhq1024-paper", ...], ...}`."""
    return {family.config_class.__name__: family.config_class.list_presets() for family in FAMILIES}


_register()

from .pipelines import VQVAE2Pipeline  # noqa: E402  (after registration: the pipeline loads models by class)

__all__ = [
    "PAPER_CODEBOOK",
    "PixelCNNPriorConfig",
    "PixelCNNPriorModel",
    "QuantizerOutput",
    "TransformerPriorConfig",
    "TransformerPriorModel",
    "VAEConfig",
    "VAEModel",
    "VQImageProcessor",
    "VQVAE2Config",
    "VQVAE2Model",
    "VQVAEConfig",
    "VQVAEModel",
    "VQVAE2Pipeline",
    "VectorQuantizer",
    "FAMILIES",
    "ModelFamily",
    "family_for",
    "list_presets",
]
