"""Configurations of the VQ-VAE (van den Oord et al. 2017) and the hierarchical VQ-VAE-2 (Razavi et al. 2019).

Both families live in this one folder: a VQ-VAE is a one-level VQ-VAE-2, so they share their blocks and
quantizer; the helpers every model folder needs come from `config_helpers.py`, a generated copy of
`models/shared/config_helpers.py` (a folder saved for `trust_remote_code=True` carries only its own files). This file
imports no torch.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from .config_helpers import MAX_IMAGE_SIDE, ConfigMixin, check_image_size, check_int, image_hw, is_number

MAX_DOWNSAMPLES = MAX_IMAGE_SIDE.bit_length() - 1  # log2(MAX_IMAGE_SIDE) = 13: more stride-2 stages fit no image


# The papers' codebook: a codebook initialised at random that keeps every code, used or not. On natural images it
# collapses (benchmarks/quality_cifar10.py: 4% of the codes in use after 500 CIFAR-10 steps). The defaults below
# instead restart codes unused for 20 steps (100% in use, normalised MSE 0.11 instead of 0.18 in the same run) and
# initialise the codebook by k-means on the first batch, so that the codes are in use from the first step rather
# than after the first restart. `from_preset(name, **PAPER_CODEBOOK)` or
# `scripts/train.py --paper_codebook` trains the papers' way.
PAPER_CODEBOOK = dict(kmeans_init=False, dead_code_threshold=None, rotation_trick=False, use_cosine_sim=False,
                      codebook_dim=None)  # fmt: skip

# "paper": 4x4 stride-2 convs, a 3x3 conv and residual blocks (the papers; rosinality's layout).
# "compact": 3x3 stride-2 convs only (the Keras VQ-VAE example): local codes, no residual blocks.
ARCHITECTURES = ("paper", "compact")


class _VQConfigBase(ConfigMixin, PreTrainedConfig):
    """Fields and validation shared by [`VQVAEConfig`] and [`VQVAE2Config`]; see their docstrings."""

    num_channels: int = 3
    image_size: int | list[int] = 32
    architecture: str = "paper"
    hidden_channels: int = 128
    residual_channels: int = 64
    num_residual_blocks: int = 2
    num_embeddings: int = 512
    embedding_dim: int = 64
    beta: float = 0.25
    ema_decay: float | None = 0.99
    ema_epsilon: float = 1e-5
    ema_bias_correction: bool = False
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: int | None = 20
    rotation_trick: bool = False
    use_cosine_sim: bool = False
    codebook_dim: int | None = None

    def __post_init__(self, **kwargs):
        self.image_size = check_image_size(self.image_size)
        self._validate_networks()
        self._validate_codebook()
        super().__post_init__(**kwargs)

    def _validate_networks(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        check_int("num_channels", self.num_channels, 1)
        check_int("hidden_channels", self.hidden_channels, 2)
        check_int("residual_channels", self.residual_channels, 1)
        check_int("num_residual_blocks", self.num_residual_blocks, 0)
        height, width = image_hw(self.image_size)
        factor = 2 ** self.total_downsamples
        if height % factor or width % factor:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the total downsampling factor {factor}; "
                f"use a multiple of {factor} or fewer downsampling stages"
            )

    def _validate_codebook(self) -> None:
        check_int("num_embeddings", self.num_embeddings, 1)
        check_int("embedding_dim", self.embedding_dim, 1)
        check_int("kmeans_iters", self.kmeans_iters, 1)
        if not (is_number(self.beta) and self.beta >= 0):
            raise ValueError(
                f"beta (commitment weight) must be a finite number >= 0, got {self.beta!r}; the paper uses 0.25"
            )
        if self.ema_decay is not None and not (is_number(self.ema_decay) and 0.0 < self.ema_decay < 1.0):
            raise ValueError(
                f"ema_decay must lie strictly between 0 and 1 (a number), or be None for the codebook loss; "
                f"got {self.ema_decay!r}"
            )
        if not (is_number(self.ema_epsilon) and self.ema_epsilon > 0):
            raise ValueError(f"ema_epsilon must be a finite number > 0, got {self.ema_epsilon!r}; the default is 1e-5")
        if self.dead_code_threshold is not None:
            check_int("dead_code_threshold", self.dead_code_threshold, 1)
        if self.codebook_dim is not None:
            check_int("codebook_dim", self.codebook_dim, 1)
        for name in ("kmeans_init", "ema_bias_correction", "rotation_trick", "use_cosine_sim"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def level_downsamples(self) -> list[int]:  # overridden by the subclasses
        raise NotImplementedError

    @property
    def num_levels(self) -> int:
        return len(self.level_downsamples)

    @property
    def total_downsamples(self) -> int:
        """Stride-2 stages between the image and the bottom (finest) latent, plus those up to the top."""
        return sum(self.level_downsamples)

    def latent_shapes(self, image_size: int | list[int] | None = None) -> list[tuple[int, int]]:
        """(H_l, W_l) of every level's code map, top level first, for `image_size` (default: the config's)."""
        height, width = image_hw(self.image_size if image_size is None else image_size)
        shapes, factor = [], 1
        for downsamples in reversed(self.level_downsamples):
            factor *= 2**downsamples
            shapes.append((height // factor, width // factor))
        return shapes[::-1]


class VQVAEConfig(_VQConfigBase):
    r"""
    Configuration of a [`VQVAEModel`]: one level of discrete latents (van den Oord et al. 2017).

    Args:
        num_channels (`int`, defaults to 3): image channels (1 grayscale, 3 RGB).
        image_size (`int` or `[height, width]`, defaults to 32): the training resolution (each side 1 to
            `MAX_IMAGE_SIDE` = 8192, divisible by `2**num_downsamples`); the image processor resizes to it. The model
            itself is fully convolutional and takes any size divisible by `2**num_downsamples`.
        architecture (`str`, defaults to `"paper"`): `"paper"` (4x4 stride-2 convs, a 3x3 conv and residual blocks,
            §4.1) or `"compact"` (3x3 stride-2 convs only, as in the Keras VQ-VAE example: each code sees only its
            patch, so its codes are easier for a prior to predict; `residual_*` are then unused).
        hidden_channels (`int`, defaults to 128): channels of the encoder and decoder (the paper: 256).
        residual_channels (`int`, defaults to 64): channels inside each residual block.
        num_residual_blocks (`int`, defaults to 2): residual blocks in the encoder and in the decoder.
        num_downsamples (`int`, defaults to 2): 4x4 stride-2 convolutions in the encoder (transposed in the decoder),
            0 to `MAX_DOWNSAMPLES` = 13.
        num_embeddings (`int`, defaults to 512): codebook size K.
        embedding_dim (`int`, defaults to 64): code vector size D.
        beta (`float`, defaults to 0.25): commitment weight (paper eq. 3); a finite number >= 0.
        ema_decay (`float`, *optional*, defaults to 0.99): EMA codebook updates (appendix A.1), a number strictly
            between 0 and 1; None trains the codebook with the codebook loss ‖sg[z_e] - e‖² instead.
        ema_epsilon (`float`, defaults to 1e-5): Laplace smoothing of the EMA cluster sizes; a finite number > 0.
        ema_bias_correction (`bool`, defaults to False): zero-debias the EMA statistics.
        kmeans_init (`bool`, defaults to True): k-means initialisation of the codebook on the first training batch
            (the papers: False, a random codebook).
        kmeans_iters (`int`, defaults to 10): Lloyd iterations of that k-means.
        dead_code_threshold (`int`, *optional*, defaults to 20): restart a code unused for this many training steps
            from a random encoder output of the batch; None never restarts (the papers). The measured cure for
            codebook collapse on natural images (README, "Natural images: codebooks and quality on CIFAR-10").
        rotation_trick (`bool`, defaults to False): gradients reach the encoder through a rotation and rescaling of
            z_e onto its code instead of straight through (Fifty et al. 2024).
        use_cosine_sim (`bool`, defaults to False): l2-normalised codes and encoder outputs, nearest code by cosine
            similarity (ViT-VQGAN, Yu et al. 2021).
        codebook_dim (`int`, *optional*): look codes up in a space of this size, projected down from and back up to
            `embedding_dim` (ViT-VQGAN's factorised codes); None: no projection.

    `PAPER_CODEBOOK` (`kmeans_init=False, dead_code_threshold=None`, the rest off) gives the papers' codebook:
    `VQVAEConfig.from_preset("cifar10", **PAPER_CODEBOOK)`, or `scripts/train.py --paper_codebook`.

    Example:

    ```python
    >>> from hf_vqvae import VQVAEConfig, VQVAEModel
    >>> config = VQVAEConfig.from_preset("mnist", num_embeddings=256)
    >>> model = VQVAEModel(config)
    >>> config.latent_shapes()
    [(7, 7)]
    ```
    """

    model_type = "vqvae"

    num_downsamples: int = 2

    PRESETS = {
        # §4.1: 2 strided 4x4 convs, 2 residual blocks, 256 hidden units; the main text trains the codebook by loss.
        "cifar10-paper": dict(
            num_channels=3, image_size=32, hidden_channels=256, residual_channels=256, num_residual_blocks=2,
            num_downsamples=2, num_embeddings=512, embedding_dim=64, ema_decay=None,
        ),
        # §4.2: ImageNet 128x128x3 -> 32x32 latent, K = 512.
        "imagenet128-paper": dict(
            num_channels=3, image_size=128, hidden_channels=256, residual_channels=256, num_residual_blocks=2,
            num_downsamples=2, num_embeddings=512, embedding_dim=64, ema_decay=None,
        ),
        # DeepMind Sonnet's vqvae_example.ipynb: 32x32 -> 8x8 latent, 128 hidden channels, 2 residual blocks of 32,
        # K = 512, D = 64, EMA decay 0.99 (its reference figures: benchmarks/quality_cifar10.py).
        "cifar10": dict(
            num_channels=3, image_size=32, hidden_channels=128, residual_channels=32, num_residual_blocks=2,
            num_downsamples=2, num_embeddings=512, embedding_dim=64, ema_decay=0.99,
        ),
        # Small MNIST model, the Keras VQ-VAE example's architecture (49,937 parameters): 28x28 -> 7x7 latent,
        # K = 128, D = 16, 3x3 stride-2 convs only, so each code describes its own 4x4 patch. Its codes are far
        # easier for a prior to predict than those of `mnist-residual`, and it reconstructs as well.
        "mnist": dict(
            num_channels=1, image_size=28, architecture="compact", hidden_channels=64, num_downsamples=2,
            num_embeddings=128, embedding_dim=16, ema_decay=0.99,
        ),
        # The paper's blocks at MNIST scale (4x4 stride-2 convs, a 3x3 conv, 2 residual blocks; 198k parameters).
        "mnist-residual": dict(
            num_channels=1, image_size=28, hidden_channels=64, residual_channels=32, num_residual_blocks=2,
            num_downsamples=2, num_embeddings=128, embedding_dim=16, ema_decay=0.99,
        ),
    }  # fmt: skip

    def __post_init__(self, **kwargs):
        check_int("num_downsamples", self.num_downsamples, 0, MAX_DOWNSAMPLES)
        super().__post_init__(**kwargs)

    @property
    def level_downsamples(self) -> list[int]:
        return [self.num_downsamples]


class VQVAE2Config(_VQConfigBase):
    r"""
    Configuration of a [`VQVAE2Model`]: a hierarchy of discrete latents (Razavi et al. 2019, Fig. 2a).

    Args:
        num_channels (`int`, defaults to 3): image channels (1 grayscale, 3 RGB).
        image_size (`int` or `[height, width]`, defaults to 256): the training resolution (each side 1 to
            `MAX_IMAGE_SIDE` = 8192, divisible by `2**sum(level_downsamples)`); the model takes any size divisible by
            `2**sum(level_downsamples)`.
        level_downsamples (`list[int]`, defaults to `[1, 2]`): stride-2 stages of each level's encoder (0 to 13),
            top level first. The bottom encoder reads the image; every other level reads the output of the level
            below. The default gives a 64x64 bottom and 32x32 top latent for 256x256 images.
        architecture (`str`, defaults to `"paper"`): `"paper"` (4x4 stride-2 convs, 3x3 convs and residual blocks) or
            `"compact"` (3x3 stride-2 convs only: local codes; `residual_*` unused); see [`VQVAEConfig`].
        hidden_channels (`int`, defaults to 128): channels of the encoders and decoders.
        residual_channels (`int`, defaults to 64): channels inside each residual block (rosinality's code: 32).
        num_residual_blocks (`int`, defaults to 2): residual blocks in every encoder and decoder.
        num_embeddings (`int`, defaults to 512): codebook size K of every level.
        embedding_dim (`int`, defaults to 64): code vector size D of every level.
        beta, ema_decay, ema_epsilon, ema_bias_correction, kmeans_init, kmeans_iters, dead_code_threshold,
        rotation_trick, use_cosine_sim, codebook_dim:
            as in [`VQVAEConfig`], applied to every level's quantizer.

    Example:

    ```python
    >>> from hf_vqvae import VQVAE2Config, VQVAE2Model
    >>> config = VQVAE2Config.from_preset("imagenet256-paper")
    >>> config.latent_shapes()
    [(32, 32), (64, 64)]
    >>> model = VQVAE2Model(config)
    ```
    """

    model_type = "vqvae2"

    image_size: int | list[int] = 256
    level_downsamples: list[int] = (1, 2)

    PRESETS = {
        # §3 / appendix: ImageNet 256 -> top 32x32, bottom 64x64, K = 512, D = 64; 128 hidden, 64 residual.
        "imagenet256-paper": dict(
            num_channels=3, image_size=256, level_downsamples=[1, 2], hidden_channels=128, residual_channels=64,
            num_residual_blocks=2, num_embeddings=512, embedding_dim=64, ema_decay=0.99,
        ),
        # CIFAR-10, the blocks of `VQVAEConfig`'s `cifar10` (Sonnet's size): bottom 8x8 (stride 4, as the single-level
        # model), top 4x4 (stride 2 above it, as rosinality's): 80 codes, 720 bits per image against 576 for the
        # single-level model, at the same cost per step; a 16x16 bottom would take 4x the bits and 2.1x the time.
        "cifar10": dict(
            num_channels=3, image_size=32, level_downsamples=[1, 2], hidden_channels=128, residual_channels=32,
            num_residual_blocks=2, num_embeddings=512, embedding_dim=64, ema_decay=0.99,
        ),
        # FFHQ 1024: three levels, 32x32 / 64x64 / 128x128.
        "ffhq1024-paper": dict(
            num_channels=3, image_size=1024, level_downsamples=[1, 1, 3], hidden_channels=128, residual_channels=64,
            num_residual_blocks=2, num_embeddings=512, embedding_dim=64, ema_decay=0.99,
        ),
        # rosinality/vq-vae-2-pytorch's default VQVAE() (its FFHQ-256 checkpoint vqvae_560.pt): bottom stride 4,
        # top stride 2, channel 128, 2 residual blocks of 32 channels, D = 64, K = 512, EMA decay 0.99.
        "rosinality-ffhq256": dict(
            num_channels=3, image_size=256, level_downsamples=[1, 2], hidden_channels=128, residual_channels=32,
            num_residual_blocks=2, num_embeddings=512, embedding_dim=64, ema_decay=0.99, ema_epsilon=1e-5,
        ),
    }  # fmt: skip

    def __post_init__(self, **kwargs):
        levels = self.level_downsamples
        if not isinstance(levels, (list, tuple)) or not levels:
            raise ValueError(f"level_downsamples must be a non-empty list (top level first), got {levels!r}")
        self.level_downsamples = list(levels)
        for downsamples in self.level_downsamples:
            check_int("every entry of level_downsamples", downsamples, 0, MAX_DOWNSAMPLES)
        super().__post_init__(**kwargs)


__all__ = ["PAPER_CODEBOOK", "VQVAEConfig", "VQVAE2Config"]
