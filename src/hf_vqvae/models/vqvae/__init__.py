from .configuration_vqvae import PAPER_CODEBOOK, VQVAE2Config, VQVAEConfig
from .modeling_vqvae import VQEncoderOutput, VQModelOutput, VQPreTrainedModel, VQVAE2Model, VQVAEModel
from .quantizer import QuantizerOutput, VectorQuantizer

__all__ = [
    "PAPER_CODEBOOK",
    "QuantizerOutput",
    "VQEncoderOutput",
    "VQModelOutput",
    "VQPreTrainedModel",
    "VQVAE2Config",
    "VQVAE2Model",
    "VQVAEConfig",
    "VQVAEModel",
    "VectorQuantizer",
]
