from .configuration_vae import VAEConfig
from .modeling_vae import VAEDecoderOutput, VAEEncoderOutput, VAEModel, VAEModelOutput, VAEPreTrainedModel

__all__ = ["VAEConfig", "VAEDecoderOutput", "VAEEncoderOutput", "VAEModel", "VAEModelOutput", "VAEPreTrainedModel"]
