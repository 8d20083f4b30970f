"""Configuration of an autoregressive transformer prior over VQ-VAE / VQ-VAE-2 codes.

The VQ-VAE papers (van den Oord et al. 2017; Razavi et al. 2019) fit PixelCNN / PixelSNAIL priors to the code
maps; this is the transformer alternative (a GPT-2 over the codes in raster order, as in Esser et al.'s "Taming
Transformers"), built on transformers' `GPT2LMHeadModel`.

Token layout (one vocabulary, `vocab_size = num_embeddings + num_classes + condition_num_embeddings + 2`):

    [0, K)                     the K = num_embeddings code tokens of the modelled level
    [K, K + C)                 the C = num_classes class tokens (none when num_classes = 0)
    [K + C, K + C + Kc)        the Kc = condition_num_embeddings tokens of the upper level's codes (none when 0)
    K + C + Kc                 BOS (also GPT-2's eos_token_id: it is never generated, so no sample stops early)
    K + C + Kc + 1             PAD: GPT-2's pad_token_id, never in a sequence (batches are never padded; a pad id
                               distinct from BOS keeps transformers from mistaking the BOS for padding)

Sequence of one example:

    [class token]  [upper-level codes, raster order]  [BOS]  [codes, raster order: H*W tokens]
     if C > 0       if conditioned (h*w tokens)

The logits over the codes come from the token before each code (teacher forcing); only the K code logits are
used, so the class, condition and BOS tokens are inputs only. Conditioning a lower VQ-VAE-2 level on the upper
level's codes is plain prefix conditioning: the upper map is part of the context the transformer attends to.

This folder is self-contained on purpose: a saved model folder is loaded with `trust_remote_code=True` by people
without hf_vqvae installed, and transformers copies only the modules this folder imports with a single dot: the
helpers come from `config_helpers.py`, a generated copy of `models/shared/config_helpers.py`. This file imports no
torch.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PreTrainedConfig

from .config_helpers import ConfigMixin, check_int, is_number

# The most code (and, separately, condition) positions a prior accepts: a 1024x1024 code map. Every position is a
# token of each sequence and a row of GPT-2's position table, so a typo (code_shape=[4096, 4096]) fails here, naming
# the field, instead of in an allocation of gigabytes.
MAX_POSITIONS = 2**20

# Activations of GPT-2's MLP that this config accepts (all are keys of transformers.activations.ACT2FN).
ACTIVATIONS = ("gelu_new", "gelu", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish", "tanh")


def _check_shape(name: str, value: Any) -> list[int]:
    """`[height, width]` of positive integers (a tuple is accepted and stored as a list)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        for side in value:
            check_int(f"every entry of {name}", side, 1)
        return [int(value[0]), int(value[1])]
    raise ValueError(f"{name} must be [height, width] (two positive integers), got {value!r}")


class TransformerPriorConfig(ConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a [`TransformerPriorModel`]: a GPT-2 over one level's VQ-VAE codes in raster order, optionally
    conditioned on a class label and on the codes of the level above (see the module docstring for the token layout).

    Args:
        num_embeddings (`int`, defaults to 512): codebook size K of the modelled level (the VQ-VAE's `num_embeddings`).
        code_shape (`[height, width]`, *optional*, defaults to `[32, 32]`): the code map `sample` draws by default.
            None requires `max_code_positions` and a `shape` for every `sample` call.
        max_code_positions (`int`, *optional*): the largest code map (height * width) the model takes; defaults to
            `height * width` of `code_shape`. It sets GPT-2's position table with the prefix (`n_positions`). At most
            `MAX_POSITIONS` = 2**20 (a 1024x1024 map), as is `height * width` of `code_shape`.
        num_classes (`int`, defaults to 0): class labels the prior is conditioned on (one class token first in the
            sequence); 0 for an unconditional prior.
        condition_num_embeddings (`int`, defaults to 0): codebook size of the upper level whose codes condition this
            level (VQ-VAE-2's bottom prior reads the top codes); 0 for no code conditioning.
        condition_shape (`[height, width]`, *optional*): the upper level's code map; required when
            `condition_num_embeddings > 0`, and only then allowed.
        max_condition_positions (`int`, *optional*): the largest upper-level map (height * width) the model takes;
            defaults to `height * width` of `condition_shape`. At most `MAX_POSITIONS` = 2**20, as is that product.
        n_embd (`int`, defaults to 512): transformer width.
        n_layer (`int`, defaults to 12): transformer blocks.
        n_head (`int`, defaults to 8): attention heads; must divide `n_embd`.
        n_inner (`int`, *optional*): MLP width; None is GPT-2's `4 * n_embd`.
        activation_function (`str`, defaults to `"gelu_new"`): the MLP activation (GPT-2's).
        resid_pdrop, embd_pdrop, attn_pdrop (`float`, default to 0.1): GPT-2's dropout probabilities.
        layer_norm_epsilon (`float`, defaults to 1e-5): epsilon of the layer norms.
        initializer_range (`float`, defaults to 0.02): standard deviation of GPT-2's normal initialisation.
        codes_source (`dict`, *optional*): which VQ model made the codes this prior was trained on, written by
            `scripts/train.py` from the codes dataset's `codes_info.json`: `{"model": name, "codebook_sha256":
            {dtype: digest}}`. `VQVAE2Pipeline` refuses a VQ model whose codebooks do not match it.

    The output head is not tied to the input embeddings (GPT-2 ties them): the class, condition and BOS tokens are
    never predicted, and every weight then lives under its own name in `model.safetensors`.

    Example:

    ```python
    >>> from hf_vqvae.models.transformer_prior import TransformerPriorConfig, TransformerPriorModel
    >>> config = TransformerPriorConfig.from_preset("mnist")
    >>> config.vocab_size, config.bos_token_id, config.n_positions  # 128 codes + 10 classes + BOS + PAD; 1 + 1 + 49
    (140, 138, 51)
    >>> model = TransformerPriorModel(config)
    ```
    """

    model_type = "transformer_prior"
    attribute_map = {"hidden_size": "n_embd", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}

    num_embeddings: int = 512
    code_shape: list[int] | None = (32, 32)
    codes_source: dict | None = None
    max_code_positions: int | None = None
    num_classes: int = 0
    condition_num_embeddings: int = 0
    condition_shape: list[int] | None = None
    max_condition_positions: int | None = None
    n_embd: int = 512
    n_layer: int = 12
    n_head: int = 8
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02

    # Our choices, not the papers' (VQ-VAE-2 used PixelCNN/PixelSNAIL priors; this is the transformer alternative).
    PRESETS = {
        # MNIST 28x28 -> 7x7 codes of the `mnist` VQVAEConfig preset (K = 128), class-conditional; a small GPT.
        "mnist": dict(
            num_embeddings=128, code_shape=[7, 7], num_classes=10, n_embd=128, n_layer=4, n_head=4,
        ),
        # VQ-VAE-2 ImageNet 256 (`imagenet256-paper` VQVAE2Config preset): the 32x32 top level, class-conditional.
        "vqvae2-imagenet256-top": dict(
            num_embeddings=512, code_shape=[32, 32], num_classes=1000, n_embd=512, n_layer=12, n_head=8,
        ),
        # Its 64x64 bottom level, conditioned on the 32x32 top codes (which carry the class): 1024 + 1 + 4096 tokens.
        "vqvae2-imagenet256-bottom": dict(
            num_embeddings=512, code_shape=[64, 64], condition_num_embeddings=512, condition_shape=[32, 32],
            n_embd=512, n_layer=12, n_head=8,
        ),
    }  # fmt: skip

    def __post_init__(self, **kwargs):
        self._validate_tokens()
        self._validate_positions()
        self._validate_transformer()
        super().__post_init__(**kwargs)

    def _validate_tokens(self) -> None:
        if self.codes_source is not None and not isinstance(self.codes_source, dict):
            raise ValueError(f"codes_source must be a dict (written by prior training) or None, got {self.codes_source!r}")
        check_int("num_embeddings", self.num_embeddings, 1)
        check_int("num_classes", self.num_classes, 0)
        check_int("condition_num_embeddings", self.condition_num_embeddings, 0)
        if self.code_shape is not None:
            self.code_shape = _check_shape("code_shape", self.code_shape)
        if self.max_code_positions is None:
            if self.code_shape is None:
                raise ValueError(
                    "give code_shape ([height, width] of the code map) or max_code_positions (its largest "
                    "height * width); both are None"
                )
        else:
            check_int("max_code_positions", self.max_code_positions, 1)
            if self.code_shape is not None and self.code_shape[0] * self.code_shape[1] > self.max_code_positions:
                raise ValueError(
                    f"code_shape {self.code_shape} has {self.code_shape[0] * self.code_shape[1]} codes, more than "
                    f"max_code_positions={self.max_code_positions}; raise max_code_positions or leave it None"
                )
        if self.condition_num_embeddings == 0:
            if self.condition_shape is not None or self.max_condition_positions is not None:
                raise ValueError(
                    f"condition_shape={self.condition_shape!r} / max_condition_positions="
                    f"{self.max_condition_positions!r} are given but condition_num_embeddings is 0 (no upper-level "
                    f"codes); set condition_num_embeddings to the upper level's codebook size or drop them"
                )
            return
        if self.condition_shape is None:
            raise ValueError(
                f"condition_num_embeddings={self.condition_num_embeddings} needs condition_shape, [height, width] of "
                f"the upper level's code map (e.g. [32, 32] for the VQ-VAE-2 ImageNet top level)"
            )
        self.condition_shape = _check_shape("condition_shape", self.condition_shape)
        if self.max_condition_positions is not None:
            check_int("max_condition_positions", self.max_condition_positions, 1)
            height, width = self.condition_shape
            if height * width > self.max_condition_positions:
                raise ValueError(
                    f"condition_shape {self.condition_shape} has {height * width} codes, more than "
                    f"max_condition_positions={self.max_condition_positions}; raise it or leave it None"
                )

    def _validate_positions(self) -> None:
        for kind, positions in (("code", self.code_positions), ("condition", self.condition_positions)):
            if positions > MAX_POSITIONS:
                maximum = getattr(self, f"max_{kind}_positions")
                field = f"{kind}_shape {getattr(self, kind + '_shape')}" if maximum is None else f"max_{kind}_positions"
                raise ValueError(
                    f"{field} gives {positions} positions, more than the {MAX_POSITIONS} (a 1024x1024 map) a transformer "
                    f"prior accepts: each is a token of every sequence and a row of GPT-2's position table; model a "
                    f"smaller code map"
                )

    def _validate_transformer(self) -> None:
        check_int("n_embd", self.n_embd, 1)
        check_int("n_layer", self.n_layer, 1)
        check_int("n_head", self.n_head, 1)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; every attention head takes "
                f"n_embd / n_head channels, so choose e.g. n_head={math.gcd(self.n_embd, self.n_head)}"
            )
        if self.n_inner is not None:
            check_int("n_inner", self.n_inner, 1)
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation_function {self.activation_function!r}; choose one of: {', '.join(ACTIVATIONS)}"
            )
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            value = getattr(self, name)
            if not (is_number(value) and 0 <= value < 1):
                raise ValueError(f"{name} must be a dropout probability in [0, 1), got {value!r}")
        if not (is_number(self.layer_norm_epsilon) and self.layer_norm_epsilon > 0):
            raise ValueError(f"layer_norm_epsilon must be a number > 0, got {self.layer_norm_epsilon!r}")
        if not (is_number(self.initializer_range) and self.initializer_range > 0):
            raise ValueError(f"initializer_range must be a number > 0 (GPT-2: 0.02), got {self.initializer_range!r}")

    # -- the token layout (see the module docstring) --------------------------------------------------------------

    @classmethod
    def condition_fields(cls, upper_shape, shape) -> dict:
        """The fields that condition a prior over `shape` codes on the upper level's `upper_shape` codes."""
        return {"condition_shape": [int(side) for side in upper_shape]}

    @property
    def is_conditioned(self) -> bool:
        """Whether the prior reads an upper level's codes."""
        return self.condition_num_embeddings > 0

    @property
    def class_token_offset(self) -> int:
        """Token id of class 0 (class c is `class_token_offset + c`)."""
        return self.num_embeddings

    @property
    def condition_token_offset(self) -> int:
        """Token id of upper-level code 0."""
        return self.num_embeddings + self.num_classes

    @property
    def bos_token_id(self) -> int:
        """The BOS token, which separates the prefix from the codes (also GPT-2's EOS token)."""
        return self.num_embeddings + self.num_classes + self.condition_num_embeddings

    @property
    def pad_token_id(self) -> int:
        """GPT-2's padding token; it never appears in a sequence."""
        return self.bos_token_id + 1

    @property
    def vocab_size(self) -> int:
        """Codes, class tokens, condition tokens, BOS and PAD."""
        return self.bos_token_id + 2

    @property
    def code_positions(self) -> int:
        """The largest code map (height * width) the model takes."""
        if self.max_code_positions is not None:
            return self.max_code_positions
        return self.code_shape[0] * self.code_shape[1]

    @property
    def condition_positions(self) -> int:
        """The largest upper-level map (height * width) the model takes; 0 when unconditioned."""
        if not self.is_conditioned:
            return 0
        if self.max_condition_positions is not None:
            return self.max_condition_positions
        return self.condition_shape[0] * self.condition_shape[1]

    @property
    def n_positions(self) -> int:
        """GPT-2's position table: class token + upper-level codes + BOS + codes."""
        return int(self.num_classes > 0) + self.condition_positions + 1 + self.code_positions


__all__ = ["TransformerPriorConfig"]
