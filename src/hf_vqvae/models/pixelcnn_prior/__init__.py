from .configuration_pixelcnn_prior import PixelCNNPriorConfig
from .modeling_pixelcnn_prior import PixelCNNPriorModel, PixelCNNPriorOutput, PixelCNNPriorPreTrainedModel

__all__ = ["PixelCNNPriorConfig", "PixelCNNPriorModel", "PixelCNNPriorOutput", "PixelCNNPriorPreTrainedModel"]
