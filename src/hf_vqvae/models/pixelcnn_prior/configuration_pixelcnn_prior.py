"""Configuration of the gated PixelCNN prior over VQ-VAE codes.

The prior is the Gated PixelCNN of van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders" (arXiv:1606.05328), as used over the discrete latents of VQ-VAE (van den Oord et al. 2017, §4) and as
the top (with self-attention) and bottom (conditioned on the top codes) priors of VQ-VAE-2 (Razavi et al. 2019,
§3.3 and Table 3 of its appendix).

This folder is self-contained on purpose: a saved model folder is loaded with `trust_remote_code=True` by people
without hf_vqvae installed, and transformers copies only the modules this folder imports with a single dot: the
helpers come from `config_helpers.py`, a generated copy of `models/shared/config_helpers.py`. This file imports no torch.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from .config_helpers import MAX_IMAGE_SIDE, ConfigMixin, check_int

# The largest code map side `code_shape` accepts: a code map is never larger than its image.
MAX_CODE_SIDE = MAX_IMAGE_SIDE


def _check_odd_kernel(name: str, value: Any) -> None:
    check_int(name, value, 3)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd (a centred kernel, e.g. 3, 5 or 7), got {value!r}")


class PixelCNNPriorConfig(ConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a [`PixelCNNPriorModel`]: an autoregressive prior p(c) = ∏ p(c_ij | c_<ij) over a map of
    discrete codes in raster (row-major) order.

    The network is a gated PixelCNN with a vertical and a horizontal stack (no blind spot): a code embedding, one
    gated layer with mask 'A' (strictly causal), `num_layers` gated residual layers with mask 'B', optional causal
    self-attention blocks between them, and an output head (ReLU, 1x1 conv, ReLU, 1x1 conv) giving
    `num_embeddings` logits per position. It is fully convolutional: the same weights run on any code map size.

    Args:
        num_embeddings (`int`, defaults to 512): codebook size K of the VQ-VAE level this prior models.
        hidden_channels (`int`, defaults to 128): channels C of both stacks (the gates use 2C pre-activations).
        num_layers (`int`, defaults to 12): gated residual layers (mask 'B') after the first (mask 'A') layer.
        kernel_size (`int`, defaults to 3): odd size n of the n x n receptive field of each mask-'B' layer: the
            vertical stack uses a (n // 2 + 1) x n kernel, the horizontal stack a 1 x (n // 2 + 1) kernel.
        first_kernel_size (`int`, defaults to 7): the same for the mask-'A' layer (the paper's first layer is 7x7).
        num_classes (`int`, defaults to 0): classes of the class-conditional prior (a learned class embedding added
            into every gate, Gated PixelCNN eq. 4); 0 makes the prior unconditional on classes.
        condition_num_embeddings (`int`, defaults to 0): codebook size of the upper VQ-VAE-2 level whose codes
            condition this prior spatially (the bottom prior of VQ-VAE-2; Gated PixelCNN eq. 5); 0 for none.
        condition_hidden_channels (`int`, defaults to 128): channels of the conditioning stack.
        condition_num_residual_blocks (`int`, defaults to 2): residual blocks of the conditioning stack (VQ-VAE-2's
            bottom prior uses a deep stack of 20).
        condition_upsample_factor (`int`, defaults to 2): the condition code map is upsampled by this factor to the
            size of the modelled code map (2 for VQ-VAE-2: 32x32 top -> 64x64 bottom; 1 for the same size).
        num_attention_layers (`int`, defaults to 0): causal multi-head self-attention blocks on the horizontal
            stack (VQ-VAE-2 top prior: 4). They are spread evenly between the mask-'B' layers, see
            `attention_positions`; at most `num_layers - 1`.
        num_heads (`int`, defaults to 8): attention heads; must divide `hidden_channels` when attention is used.
        dropout (`float`, defaults to 0.0): residual dropout of the gated layers and attention blocks (VQ-VAE-2:
            0.1).
        code_shape (`[height, width]`, *optional*): the code map size this prior was trained on (each side 1 to
            `MAX_CODE_SIDE` = 8192); the default size of `sample` and a check for pipelines. The model itself accepts
            any size.
        codes_source (`dict`, *optional*): which VQ model made the codes this prior was trained on, written by
            `scripts/train.py` from the codes dataset's `codes_info.json`: `{"model": name, "codebook_sha256":
            {dtype: digest}}`. `VQVAE2Pipeline` refuses a VQ model whose codebooks do not match it.

    Example:

    ```python
    >>> from hf_vqvae.models.pixelcnn_prior import PixelCNNPriorConfig, PixelCNNPriorModel
    >>> config = PixelCNNPriorConfig.from_preset("mnist")
    >>> config.num_embeddings, config.code_shape, config.num_classes
    (128, [7, 7], 10)
    >>> PixelCNNPriorConfig.list_presets()
    ['mnist', 'vqvae2-cifar10-bottom', 'vqvae2-cifar10-top', 'vqvae2-imagenet256-bottom', 'vqvae2-imagenet256-top']
    >>> model = PixelCNNPriorModel(config)
    ```
    """

    model_type = "pixelcnn_prior"

    num_embeddings: int = 512
    hidden_channels: int = 128
    num_layers: int = 12
    kernel_size: int = 3
    first_kernel_size: int = 7
    num_classes: int = 0
    condition_num_embeddings: int = 0
    condition_hidden_channels: int = 128
    condition_num_residual_blocks: int = 2
    condition_upsample_factor: int = 2
    num_attention_layers: int = 0
    num_heads: int = 8
    dropout: float = 0.0
    code_shape: list[int] | None = None
    codes_source: dict | None = None

    PRESETS = {
        # VQ-VAE-2 Table 3 (appendix), top prior over the 32x32 ImageNet-256 codes: 20 layers, 512 hidden units,
        # 4 attention layers of 8 heads, conv filter size 5, dropout 0.1, class-conditional on the 1000 classes.
        "vqvae2-imagenet256-top": dict(
            num_embeddings=512, hidden_channels=512, num_layers=20, kernel_size=5, first_kernel_size=7,
            num_classes=1000, condition_num_embeddings=0, num_attention_layers=4, num_heads=8, dropout=0.1,
            code_shape=[32, 32],
        ),
        # VQ-VAE-2 Table 3, bottom prior over the 64x64 codes: 20 layers, 512 hidden units, no attention, conv filter
        # size 5, dropout 0.1, conditioned on the 32x32 top codes through a deep stack of 20 residual blocks (its
        # width is not given in the paper; 512 like the prior), class-conditional.
        "vqvae2-imagenet256-bottom": dict(
            num_embeddings=512, hidden_channels=512, num_layers=20, kernel_size=5, first_kernel_size=7,
            num_classes=1000, condition_num_embeddings=512, condition_hidden_channels=512,
            condition_num_residual_blocks=20, condition_upsample_factor=2, num_attention_layers=0, dropout=0.1,
            code_shape=[64, 64],
        ),
        # The two priors of the VQ-VAE-2 `cifar10` preset (top 4x4, bottom 8x8, K = 512), the ImageNet pair's design
        # at CIFAR-10 scale: the top one with causal self-attention, the bottom one conditioned on the top codes
        # through a residual conditioning stack, both class-conditional on the 10 classes, dropout 0.1 (README
        # "Generating CIFAR-10 images" has their training commands and sample quality).
        "vqvae2-cifar10-top": dict(
            num_embeddings=512, hidden_channels=128, num_layers=8, kernel_size=3, first_kernel_size=5,
            num_classes=10, condition_num_embeddings=0, num_attention_layers=2, num_heads=4, dropout=0.1,
            code_shape=[4, 4],
        ),
        "vqvae2-cifar10-bottom": dict(
            num_embeddings=512, hidden_channels=128, num_layers=12, kernel_size=3, first_kernel_size=7,
            num_classes=10, condition_num_embeddings=512, condition_hidden_channels=128,
            condition_num_residual_blocks=4, condition_upsample_factor=2, num_attention_layers=0, dropout=0.1,
            code_shape=[8, 8],
        ),
        # A small class-conditional prior for the `mnist` VQ-VAE preset (7x7 codes, K = 128), Keras-example scale;
        # 12 layers with dropout 0.1, trained with weight decay 0.3, model the MNIST test codes best at about 30 CPU
        # minutes (README "Training speed and quality").
        "mnist": dict(
            num_embeddings=128, hidden_channels=64, num_layers=12, kernel_size=3, first_kernel_size=7,
            num_classes=10, condition_num_embeddings=0, num_attention_layers=0, dropout=0.1, code_shape=[7, 7],
        ),
    }  # fmt: skip

    def __post_init__(self, **kwargs):
        if isinstance(self.code_shape, tuple):
            self.code_shape = list(self.code_shape)
        self._validate()
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        if self.codes_source is not None and not isinstance(self.codes_source, dict):
            raise ValueError(f"codes_source must be a dict (written by prior training) or None, got {self.codes_source!r}")
        check_int("num_embeddings", self.num_embeddings, 1)
        check_int("hidden_channels", self.hidden_channels, 1)
        check_int("num_layers", self.num_layers, 0)
        _check_odd_kernel("kernel_size", self.kernel_size)
        _check_odd_kernel("first_kernel_size", self.first_kernel_size)
        check_int("num_classes (0 for an unconditional prior)", self.num_classes, 0)
        check_int("condition_num_embeddings (0 for no spatial condition)", self.condition_num_embeddings, 0)
        check_int("condition_hidden_channels", self.condition_hidden_channels, 1)
        check_int("condition_num_residual_blocks", self.condition_num_residual_blocks, 0)
        check_int("condition_upsample_factor", self.condition_upsample_factor, 1)
        check_int("num_attention_layers", self.num_attention_layers, 0)
        check_int("num_heads", self.num_heads, 1)
        if self.num_attention_layers > 0:
            if self.num_attention_layers > self.num_layers - 1:
                raise ValueError(
                    f"num_attention_layers={self.num_attention_layers} is too many for num_layers={self.num_layers}: "
                    f"attention blocks sit between mask-'B' layers, so use at most num_layers - 1 = "
                    f"{max(self.num_layers - 1, 0)} (or more num_layers)"
                )
            if self.hidden_channels % self.num_heads:
                raise ValueError(
                    f"hidden_channels={self.hidden_channels} is not divisible by num_heads={self.num_heads}; "
                    f"choose a number of heads that divides the hidden channels"
                )
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}; VQ-VAE-2 uses 0.1")
        if self.code_shape is not None:
            shape = self.code_shape
            if not isinstance(shape, list) or len(shape) != 2:
                raise ValueError(f"code_shape must be [height, width] or None, got {shape!r}")
            check_int("code_shape height", shape[0], 1, MAX_CODE_SIDE)
            check_int("code_shape width", shape[1], 1, MAX_CODE_SIDE)
            factor = self.condition_upsample_factor
            if self.condition_num_embeddings > 0 and (shape[0] % factor or shape[1] % factor):
                raise ValueError(
                    f"code_shape {shape} is not divisible by condition_upsample_factor {factor}: the condition codes "
                    f"are upsampled by {factor} to the code map size; use a multiple of {factor}"
                )

    @classmethod
    def condition_fields(cls, upper_shape, shape) -> dict:
        """The fields that condition a prior over `shape` codes on the upper level's `upper_shape` codes."""
        return {"condition_upsample_factor": int(shape[0]) // int(upper_shape[0])}

    @property
    def attention_positions(self) -> list[int]:
        """After which mask-'B' layers (1-based) a self-attention block runs: evenly spread, never after the last.

        With `num_layers` L and `num_attention_layers` A, block a (0-based) follows layer (a + 1) * L // (A + 1):
        L = 20, A = 4 gives [4, 8, 12, 16], so every attention block is followed by four gated layers.
        """
        layers, count = self.num_layers, self.num_attention_layers
        return [(block + 1) * layers // (count + 1) for block in range(count)]


__all__ = ["PixelCNNPriorConfig"]
