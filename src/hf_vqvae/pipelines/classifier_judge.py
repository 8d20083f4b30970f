"""Any transformers image classifier as the judge of classifier-based rejection sampling (VQ-VAE-2 §3.3).

`rejection_sample` needs a callable that maps images in [0, 1] `(B, C, H, W)` to logits `(B, num_classes)`.
`ClassifierJudge` turns an `AutoModelForImageClassification` (a Hub model, or the small one
`scripts/train_classifier.py` trains) into one. It reads the resize and normalisation settings from the model's
`preprocessor_config.json` and applies them with torch ops, so no PIL round trip (nor torchvision) is needed:

    >>> judge = ClassifierJudge.from_pretrained("outputs/mnist-classifier")
    >>> result = rejection_sample(pipe, judge, class_label=judge.label_id("7"), num_samples=64, threshold=0.9)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModelForImageClassification, PreTrainedModel
from transformers.image_processing_utils import ImageProcessingMixin


def _size_from_processor(size) -> tuple[int, int] | int | None:
    """A processor's `size`: {"height", "width"} -> (h, w); {"shortest_edge"} -> int; an int -> (n, n)."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    if "height" in size and "width" in size:
        return (int(size["height"]), int(size["width"]))
    if "shortest_edge" in size:
        return int(size["shortest_edge"])
    raise ValueError(f"unsupported image processor size {size!r}: expected height/width or shortest_edge")


class ClassifierJudge:
    """Images in [0, 1] -> the classifier's logits, resized, channel-matched and normalised as its processor says.

    Args:
        model: an image classification model whose forward takes `pixel_values` and returns `.logits`.
        image_size: `(height, width)` to resize to, an int (the shorter side, aspect kept), or None (no resize).
        image_mean, image_std: per-channel normalisation applied after the resize (None: no normalisation).
        num_channels: channels the model reads; grayscale images are repeated to 3, RGB averaged to 1.
    """

    def __init__(self, model: PreTrainedModel, image_size: tuple[int, int] | int | None = None,
                 image_mean: list[float] | None = None, image_std: list[float] | None = None,
                 num_channels: int | None = None):  # fmt: skip
        self.model = model.eval()
        self.image_size = image_size
        self.image_mean, self.image_std = image_mean, image_std
        self.num_channels = num_channels or getattr(model.config, "num_channels", None)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> ClassifierJudge:
        """Load a classifier folder or Hub id (safetensors only) and its `preprocessor_config.json` settings."""
        model = AutoModelForImageClassification.from_pretrained(name_or_path, use_safetensors=True, **kwargs)
        try:
            settings, _ = ImageProcessingMixin.get_image_processor_dict(name_or_path, **kwargs)
        except OSError:
            settings = {}
        normalize = settings.get("do_normalize", "image_mean" in settings)
        return cls(model, image_size=_size_from_processor(settings.get("size")) if settings.get("do_resize", True) else None,
                   image_mean=settings.get("image_mean") if normalize else None,
                   image_std=settings.get("image_std") if normalize else None)  # fmt: skip

    def label_id(self, label: int | str) -> int:
        """The class index of a label name from the model's `id2label` (an int is checked and returned)."""
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        if isinstance(label, int):
            if label not in id2label:
                raise ValueError(f"class {label} is out of range: the classifier has classes 0..{len(id2label) - 1}")
            return label
        matches = [index for index, name in id2label.items() if name == label]
        if not matches:
            raise ValueError(f"label {label!r} is not one of the classifier's labels {sorted(id2label.values())}")
        return matches[0]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"images must be (batch, channels, height, width) in [0, 1], got shape {tuple(images.shape)}")
        images = images.float()
        if self.num_channels == 3 and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        elif self.num_channels == 1 and images.shape[1] == 3:
            images = images.mean(dim=1, keepdim=True)
        if self.image_size is not None:
            images = F.interpolate(images, size=self._target_size(images.shape[-2:]), mode="bilinear",
                                   align_corners=False, antialias=True)  # fmt: skip
        if self.image_mean is not None:
            mean = torch.tensor(self.image_mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
            std = torch.tensor(self.image_std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
            images = (images - mean) / std
        return images

    def _target_size(self, current: torch.Size) -> tuple[int, int]:
        if isinstance(self.image_size, tuple):
            return self.image_size
        height, width = int(current[0]), int(current[1])
        scale = self.image_size / min(height, width)
        return (round(height * scale), round(width * scale))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(pixel_values=self.preprocess(images).to(device)).logits


__all__ = ["ClassifierJudge"]
