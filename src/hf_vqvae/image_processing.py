"""Images (PIL, NumPy, torch) <-> the normalised tensors the models read; saved as preprocessor_config.json.

This file travels with every saved processor (hf_vqvae registers `VQImageProcessor` for `AutoImageProcessor`, so
`save_pretrained` copies it and writes an `auto_map`), and `AutoImageProcessor.from_pretrained(folder,
trust_remote_code=True)` runs it where hf_vqvae is not installed: it must import only NumPy, PIL, torch and
transformers, and nothing of the package (tests/test_remote_code.py loads it with the package unimportable).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class VQImageProcessor(BaseImageProcessor):
    r"""
    Resizes (covering the target, keeping the aspect ratio), centre-crops, converts to RGB or grayscale and scales
    images to the model's value range; `postprocess` maps model outputs back to PIL images.

    Args:
        size (`int` or `[height, width]`, defaults to 256): output resolution.
        num_channels (`int`, defaults to 3): 3 converts every image to RGB, 1 to grayscale ("L").
        value_range (`[low, high]`, defaults to `[-1.0, 1.0]`): range of the model's pixels: [-1, 1] for the VQ
            models, [0, 1] for the VAE (its Bernoulli/Gaussian decoders model intensities in [0, 1]).
        resample (`str`, defaults to `"bicubic"`): PIL filter for resizing: nearest, bilinear, bicubic or lanczos.
        do_resize (`bool`, defaults to True): resize and centre-crop to `size`; when False, images must already
            have that size.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_vqvae import VQImageProcessor
    >>> processor = VQImageProcessor(size=32, num_channels=3)
    >>> processor(Image.new("RGB", (64, 48))).pixel_values.shape
    torch.Size([1, 3, 32, 32])
    ```
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int | list[int] = 256,
        num_channels: int = 3,
        value_range: list[float] | tuple[float, float] = (-1.0, 1.0),
        resample: str = "bicubic",
        do_resize: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if height < 1 or width < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels!r}")
        low, high = (float(value) for value in value_range)
        if not low < high:
            raise ValueError(f"value_range must be [low, high] with low < high, got {value_range!r}")
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
        self.size = [height, width]
        self.num_channels = num_channels
        self.value_range = [low, high]
        self.resample = resample
        self.do_resize = do_resize

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "VQImageProcessor":
        """The processor matching a model config: its image size, channels and value range."""
        value_range = (0.0, 1.0) if getattr(config, "model_type", None) == "vae" else (-1.0, 1.0)
        return cls(size=config.image_size, num_channels=config.num_channels, value_range=value_range, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # images -> tensors
    # ------------------------------------------------------------------------------------------------------------

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """An image or a list of images -> `BatchFeature(pixel_values=(batch, num_channels, H, W) float32)`."""
        if kwargs:
            raise ValueError(f"unexpected arguments {sorted(kwargs)}; set size/num_channels when creating the processor")
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("no images given")
        arrays = [self._to_model_array(self._to_pil(image, index)) for index, image in enumerate(images)]
        pixel_values = np.stack(arrays)  # (batch, C, H, W)
        if return_tensors == "pt":
            pixel_values = torch.from_numpy(pixel_values)
        elif return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        return BatchFeature(data={"pixel_values": pixel_values})

    def _to_pil(self, image, index: int) -> Image.Image:
        if isinstance(image, Image.Image):
            pil = image
        elif isinstance(image, torch.Tensor):  # torch convention: (C, H, W) or (H, W)
            array = image.detach().cpu().numpy()
            pil = _array_to_pil(array.transpose(1, 2, 0) if array.ndim == 3 else array, index)
        elif isinstance(image, np.ndarray):  # NumPy/PIL convention: (H, W, C) or (H, W)
            pil = _array_to_pil(image, index)
        else:
            raise ValueError(
                f"image {index} is a {type(image).__name__}; pass PIL images, NumPy arrays (H, W[, C]) or torch tensors (C, H, W)"
            )
        return to_model_mode(pil, "RGB" if self.num_channels == 3 else "L")

    def _to_model_array(self, pil: Image.Image) -> np.ndarray:
        height, width = self.size
        if self.do_resize:
            pil = resize_and_center_crop(pil, height, width, _RESAMPLE[self.resample])
        elif pil.size != (width, height):
            raise ValueError(f"image is {pil.size[1]}x{pil.size[0]} but do_resize=False needs {height}x{width}")
        array = np.asarray(pil, dtype=np.float32) / 255.0  # (H, W[, C]) in [0, 1]
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        low, high = self.value_range
        return (array * (high - low) + low).astype(np.float32)

    # ------------------------------------------------------------------------------------------------------------
    # tensors -> images
    # ------------------------------------------------------------------------------------------------------------

    def postprocess(self, pixel_values: torch.Tensor, output_type: str = "pil"):
        """Model pixels `(batch, C, H, W)` in `value_range` -> PIL images, or "np" (B, H, W, C) / "pt" in [0, 1]."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            raise ValueError("postprocess expects a (batch, channels, height, width) tensor")
        low, high = self.value_range
        unit = ((pixel_values.detach().float().cpu() - low) / (high - low)).clamp(0.0, 1.0)
        if output_type == "pt":
            return unit
        array = unit.permute(0, 2, 3, 1).numpy()
        if output_type == "np":
            return array
        if output_type != "pil":
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        images = (array * 255.0).round().astype(np.uint8)
        return [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in images]


def _array_to_pil(array: np.ndarray, index: int) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"image {index} has shape {array.shape}; expected arrays (H, W[, C]) or tensors (C, H, W), C in 1, 3, 4")
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"image {index} contains NaN or Inf values")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(f"float image {index} must hold values in [0, 1], got [{array.min():.3g}, {array.max():.3g}]")
        array = (array * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)


def to_model_mode(image: Image.Image, mode: str) -> Image.Image:
    """Any PIL image -> 8-bit "RGB" or "L", the same way in training, the processor and the demo.

    Transparent pixels are composited onto black (an empty drawing canvas is black, as MNIST's background), rather
    than dropping alpha (which keeps whatever colour the hidden pixels hold). 16-bit and 32-bit integer images are
    scaled to 8 bits instead of clipped (PIL's own conversion turns every value above 255 white).
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).round().astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image if image.mode == mode else image.convert(mode)


def resize_and_center_crop(pil: Image.Image, height: int, width: int, resample) -> Image.Image:
    """Scale so that the image covers height x width (aspect kept), then crop the centre."""
    in_width, in_height = pil.size
    if (in_height, in_width) == (height, width):
        return pil
    scale = max(height / in_height, width / in_width)
    resized = (max(width, round(in_width * scale)), max(height, round(in_height * scale)))
    pil = pil.resize(resized, resample=resample)
    left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    return pil.crop((left, top, left + width, top + height))


__all__ = ["VQImageProcessor", "resize_and_center_crop", "to_model_mode"]
