"""Configuration of the VAE of Kingma & Welling 2013, "Auto-Encoding Variational Bayes" (arXiv:1312.6114).

This folder is self-contained on purpose: a saved model folder is loaded with `trust_remote_code=True` by people
without hf_vqvae installed, and transformers copies only the modules this folder imports with a single dot. So the
small helpers below (`_check_int`, `_is_number`, `_image_hw`, `_check_image_size`, `_PresetMixin`) are deliberate
duplicates of those in `models/vqvae/configuration_vqvae.py`; keep the two in step (tests/test_duplicated_helpers.py
checks them). This file imports no torch.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from transformers import PreTrainedConfig

ARCHITECTURES = ("mlp", "conv")
HIDDEN_ACTIVATIONS = ("tanh", "relu")
DECODER_DISTRIBUTIONS = ("bernoulli", "gaussian")


# Duplicated from models/vqvae/configuration_vqvae.py: this folder must import nothing outside itself (see above).
# The largest image side (pixels) a config accepts: far above every preset (1024) and every training resolution, small
# enough that a typo (image_size=2**22) fails here, naming the field, instead of in an allocation of terabytes.
MAX_IMAGE_SIDE = 8192


# Duplicated from models/vqvae/configuration_vqvae.py (self-contained folder, see the module docstring).
def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    too_big = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")


# Duplicated from models/vqvae/configuration_vqvae.py (self-contained folder, see the module docstring).
def _image_hw(image_size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    return int(image_size[0]), int(image_size[1])


# Duplicated from models/vqvae/configuration_vqvae.py (self-contained folder, see the module docstring).
def _check_image_size(value: Any) -> int | list[int]:
    """`image_size` as stored: an integer, or [height, width] as a list; each side in [1, MAX_IMAGE_SIDE]."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"image_size must be an integer or [height, width], got {value!r}")
        _check_int("image_size height", value[0], 1, MAX_IMAGE_SIDE)
        _check_int("image_size width", value[1], 1, MAX_IMAGE_SIDE)
        return list(value)
    _check_int("image_size (an integer or [height, width])", value, 1, MAX_IMAGE_SIDE)
    return value


def _check_choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(options)}")


# Duplicated from models/vqvae/configuration_vqvae.py (self-contained folder, see the module docstring).
def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


# Duplicated from models/vqvae/configuration_vqvae.py (self-contained folder, see the module docstring).
class _PresetMixin:
    """`from_preset(name, **overrides)` and `list_presets()` over a class-level `PRESETS` table."""

    PRESETS = {}  # name -> keyword arguments; filled by each config class

    @classmethod
    def list_presets(cls) -> list[str]:
        """Names accepted by `from_preset`."""
        return sorted(cls.PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """The named architecture from the papers (an architecture, not weights); keywords override any field."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known presets: {', '.join(cls.list_presets())}")
        return cls(**{**copy.deepcopy(cls.PRESETS[name]), **overrides})


class VAEConfig(_PresetMixin, PreTrainedConfig):
    r"""
    Configuration of a [`VAEModel`]: a Gaussian encoder q(z|x), a standard normal prior p(z) and a Bernoulli or
    Gaussian decoder p(x|z), trained by the SGVB estimator of the ELBO (Kingma & Welling 2013, eq. 10).

    Args:
        architecture (`str`, defaults to `"mlp"`): `"mlp"`, the paper's networks (one hidden layer in the encoder and
            one in the decoder, appendix C), or `"conv"`: 4x4 stride-2 convolutions then a linear layer to the
            latent mean and log-variance, mirrored by transposed convolutions in the decoder.
        num_channels (`int`, defaults to 1): image channels (1 grayscale, 3 RGB).
        image_size (`int` or `[height, width]`, defaults to 28): the image resolution, each side 1 to
            `MAX_IMAGE_SIDE` = 8192; the model takes only this size (its linear layers read whole images). Frey faces
            are `[28, 20]`.
        hidden_size (`int`, defaults to 500): hidden units of the MLP encoder and decoder (the paper: 500 for MNIST,
            200 for Frey faces). Unused by `"conv"`.
        hidden_activation (`str`, defaults to `"tanh"`): `"tanh"` (the paper) or `"relu"`.
        conv_channels (`list[int]`, defaults to `[32, 64]`): output channels of each stride-2 convolution of the
            `"conv"` encoder (the decoder uses them in reverse). `image_size` must be divisible by
            `2**len(conv_channels)`. Unused by `"mlp"`.
        latent_dim (`int`, defaults to 20): dimension J of the latent z.
        decoder_distribution (`str`, defaults to `"bernoulli"`): p(x|z): `"bernoulli"` (appendix C.1; pixels are
            probabilities or binary values in [0, 1]) or `"gaussian"` (appendix C.2, with its mean squashed into
            (0, 1) by a sigmoid, as the paper does for Frey faces).
        learn_decoder_variance (`bool`, defaults to True): for `"gaussian"`, the decoder outputs a per-pixel
            log-variance (paper eq. 12); when False every pixel has the fixed `decoder_log_variance`.
        decoder_log_variance (`float`, defaults to 0.0): the fixed log σ² of the Gaussian decoder when
            `learn_decoder_variance` is False.
        num_latent_samples (`int`, defaults to 1): samples L of z per data point in the ELBO estimate (eq. 10; the
            paper uses L = 1 with minibatches of 100).
        initializer_range (`float`, *optional*, defaults to 0.01): standard deviation of the normal initial weights
            (biases start at zero); the paper samples parameters from N(0, 0.01). None uses PyTorch's default
            initialisation of each layer instead.

    Example:

    ```python
    >>> from hf_vqvae import VAEConfig, VAEModel
    >>> config = VAEConfig.from_preset("frey-paper", latent_dim=2)
    >>> config.image_size, config.decoder_distribution
    ([28, 20], 'gaussian')
    >>> model = VAEModel(config)
    >>> VAEConfig.list_presets()
    ['frey-paper', 'mnist-conv', 'mnist-paper']
    ```
    """

    model_type = "vae"

    architecture: str = "mlp"
    num_channels: int = 1
    image_size: int | list[int] = 28
    hidden_size: int = 500
    hidden_activation: str = "tanh"
    conv_channels: list[int] = (32, 64)
    latent_dim: int = 20
    decoder_distribution: str = "bernoulli"
    learn_decoder_variance: bool = True
    decoder_log_variance: float = 0.0
    num_latent_samples: int = 1
    initializer_range: float | None = 0.01

    PRESETS = {
        # §5 / appendix C.1: MNIST 28x28, one 500-unit tanh hidden layer each side, Bernoulli decoder, N(0, 0.01) init.
        "mnist-paper": dict(
            architecture="mlp", num_channels=1, image_size=28, hidden_size=500, hidden_activation="tanh",
            latent_dim=20, decoder_distribution="bernoulli", num_latent_samples=1, initializer_range=0.01,
        ),
        # §5 / appendix C.2: Frey faces 28x20, 200 tanh hidden units, Gaussian decoder with a learned per-pixel
        # variance (eq. 12) and its mean squashed into (0, 1) by a sigmoid.
        "frey-paper": dict(
            architecture="mlp", num_channels=1, image_size=[28, 20], hidden_size=200, hidden_activation="tanh",
            latent_dim=10, decoder_distribution="gaussian", learn_decoder_variance=True, num_latent_samples=1,
            initializer_range=0.01,
        ),
        # Not in the paper: a small convolutional VAE for MNIST (28x28 -> 7x7x64 -> z), ReLU, PyTorch default init.
        "mnist-conv": dict(
            architecture="conv", num_channels=1, image_size=28, hidden_activation="relu", conv_channels=[32, 64],
            latent_dim=20, decoder_distribution="bernoulli", num_latent_samples=1, initializer_range=None,
        ),
    }  # fmt: skip

    def __post_init__(self, **kwargs):
        self.image_size = _check_image_size(self.image_size)
        if isinstance(self.conv_channels, tuple):
            self.conv_channels = list(self.conv_channels)
        self._validate_networks()
        self._validate_distributions()
        super().__post_init__(**kwargs)

    def _validate_networks(self) -> None:
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("hidden_activation", self.hidden_activation, HIDDEN_ACTIVATIONS)
        _check_int("num_channels", self.num_channels, 1)
        _check_int("hidden_size", self.hidden_size, 1)
        _check_int("latent_dim", self.latent_dim, 1)
        _check_int("num_latent_samples", self.num_latent_samples, 1)
        if not isinstance(self.conv_channels, list) or not self.conv_channels:
            raise ValueError(f"conv_channels must be a non-empty list of channel counts, got {self.conv_channels!r}")
        for channels in self.conv_channels:
            _check_int("every entry of conv_channels", channels, 1)
        if self.architecture == "conv":
            height, width = _image_hw(self.image_size)
            factor = 2 ** len(self.conv_channels)
            if height % factor or width % factor:
                raise ValueError(
                    f"image_size {self.image_size} is not divisible by {factor} = 2**len(conv_channels) "
                    f"(one stride-2 convolution per entry of {self.conv_channels}); use fewer conv_channels, "
                    f"an image size that is a multiple of {factor}, or architecture='mlp'"
                )

    def _validate_distributions(self) -> None:
        _check_choice("decoder_distribution", self.decoder_distribution, DECODER_DISTRIBUTIONS)
        if not isinstance(self.learn_decoder_variance, bool):
            raise ValueError(f"learn_decoder_variance must be True or False, got {self.learn_decoder_variance!r}")
        if not _is_number(self.decoder_log_variance):
            raise ValueError(
                f"decoder_log_variance must be a finite number (log σ² of the fixed Gaussian decoder), "
                f"got {self.decoder_log_variance!r}"
            )
        std = self.initializer_range
        if std is not None and not (_is_number(std) and std > 0):
            raise ValueError(
                f"initializer_range must be a number > 0 (the paper: 0.01) or None for PyTorch's default "
                f"initialisation, got {self.initializer_range!r}"
            )

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of `image_size`."""
        return _image_hw(self.image_size)

    # Duplicated from models/vqvae/configuration_vqvae.py (self-contained folder, see the module docstring).
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **dict(kwargs))
        found = config_dict.get("model_type")
        if found is not None and found != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a config of model_type {found!r}, not {cls.model_type!r}; "
                f"load it with AutoModel.from_pretrained (after `import hf_vqvae`) or the matching class"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)


__all__ = ["VAEConfig"]
