from .configuration_transformer_prior import TransformerPriorConfig
from .modeling_transformer_prior import CodeOnlyLogitsProcessor, TransformerPriorModel, TransformerPriorOutput

__all__ = ["CodeOnlyLogitsProcessor", "TransformerPriorConfig", "TransformerPriorModel", "TransformerPriorOutput"]
