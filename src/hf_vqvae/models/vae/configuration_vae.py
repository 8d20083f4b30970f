"""Configuration of the VAE of Kingma & Welling 2013, "Auto-Encoding Variational Bayes" (arXiv:1312.6114).

This folder is self-contained on purpose: a saved model folder is loaded with `trust_remote_code=True` by people
without hf_vqvae installed, and transformers copies only the modules this folder imports with a single dot: the
helpers come from `config_helpers.py`, a generated copy of `models/shared/config_helpers.py`. This file imports no torch.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from .config_helpers import ConfigMixin, check_choice, check_image_size, check_int, image_hw, is_number

ARCHITECTURES = ("mlp", "conv")
HIDDEN_ACTIVATIONS = ("tanh", "relu")
DECODER_DISTRIBUTIONS = ("bernoulli", "gaussian")


class VAEConfig(ConfigMixin, PreTrainedConfig):
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
        self.image_size = check_image_size(self.image_size)
        if isinstance(self.conv_channels, tuple):
            self.conv_channels = list(self.conv_channels)
        self._validate_networks()
        self._validate_distributions()
        super().__post_init__(**kwargs)

    def _validate_networks(self) -> None:
        check_choice("architecture", self.architecture, ARCHITECTURES)
        check_choice("hidden_activation", self.hidden_activation, HIDDEN_ACTIVATIONS)
        check_int("num_channels", self.num_channels, 1)
        check_int("hidden_size", self.hidden_size, 1)
        check_int("latent_dim", self.latent_dim, 1)
        check_int("num_latent_samples", self.num_latent_samples, 1)
        if not isinstance(self.conv_channels, list) or not self.conv_channels:
            raise ValueError(f"conv_channels must be a non-empty list of channel counts, got {self.conv_channels!r}")
        for channels in self.conv_channels:
            check_int("every entry of conv_channels", channels, 1)
        if self.architecture == "conv":
            height, width = image_hw(self.image_size)
            factor = 2 ** len(self.conv_channels)
            if height % factor or width % factor:
                raise ValueError(
                    f"image_size {self.image_size} is not divisible by {factor} = 2**len(conv_channels) "
                    f"(one stride-2 convolution per entry of {self.conv_channels}); use fewer conv_channels, "
                    f"an image size that is a multiple of {factor}, or architecture='mlp'"
                )

    def _validate_distributions(self) -> None:
        check_choice("decoder_distribution", self.decoder_distribution, DECODER_DISTRIBUTIONS)
        if not isinstance(self.learn_decoder_variance, bool):
            raise ValueError(f"learn_decoder_variance must be True or False, got {self.learn_decoder_variance!r}")
        if not is_number(self.decoder_log_variance):
            raise ValueError(
                f"decoder_log_variance must be a finite number (log σ² of the fixed Gaussian decoder), "
                f"got {self.decoder_log_variance!r}"
            )
        std = self.initializer_range
        if std is not None and not (is_number(std) and std > 0):
            raise ValueError(
                f"initializer_range must be a number > 0 (the paper: 0.01) or None for PyTorch's default "
                f"initialisation, got {self.initializer_range!r}"
            )

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of `image_size`."""
        return image_hw(self.image_size)


__all__ = ["VAEConfig"]
