"""An autoregressive transformer prior over VQ-VAE / VQ-VAE-2 codes, on transformers' `GPT2LMHeadModel`.

The codes of one level are modelled in raster order after a prefix that holds the conditioning: an optional class
token, then (VQ-VAE-2 lower levels) the upper level's codes, then BOS. See `configuration_transformer_prior.py` for
the token layout. `forward` scores a code map by teacher forcing; `sample` draws one through `generate()`.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_transformer_prior import TransformerPriorConfig, _check_int


@dataclass
class TransformerPriorOutput(ModelOutput):
    """
    Output of [`TransformerPriorModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): mean cross-entropy of the codes under the prior, in nats per code
            (divide by `math.log(2)` for bits per code).
        logits (`torch.FloatTensor` of shape `(batch, num_embeddings, height, width)`): unnormalised log-probabilities
            of every code at every position, given the conditioning and the codes before it in raster order (only the
            code tokens: the class, condition, BOS and PAD tokens are left out, i.e. masked).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class CodeOnlyLogitsProcessor(LogitsProcessor):
    """Sets the logits of every token outside `[0, num_codes)` to -inf, so `generate()` only ever draws codes.

    It runs before temperature, top-k and top-p (generate() applies custom processors first), so those see only the
    code tokens.
    """

    def __init__(self, num_codes: int):
        self.num_codes = num_codes

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[:, self.num_codes :] = float("-inf")
        return scores


def _is_integer_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and not (value.is_floating_point() or value.is_complex()) and (
        value.dtype != torch.bool
    )


def _gpt2_config(config: TransformerPriorConfig) -> GPT2Config:
    """The GPT-2 of a prior: its vocabulary, positions and special tokens follow the prior's token layout."""
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.n_inner,
        activation_function=config.activation_function,
        resid_pdrop=config.resid_pdrop,
        embd_pdrop=config.embd_pdrop,
        attn_pdrop=config.attn_pdrop,
        layer_norm_epsilon=config.layer_norm_epsilon,
        initializer_range=config.initializer_range,
        # GPT-2's defaults (50256) lie outside this vocabulary. BOS is never generated (sampling masks it), so it
        # serves as EOS and nothing stops a sample early; PAD never appears in a sequence.
        bos_token_id=config.bos_token_id,
        eos_token_id=config.bos_token_id,
        pad_token_id=config.pad_token_id,
        # An untied output head: the prefix tokens are inputs only, and every weight is saved under its own name.
        tie_word_embeddings=False,
        use_cache=True,
        attn_implementation=config._attn_implementation,
    )


class TransformerPriorModel(PreTrainedModel):
    r"""
    An autoregressive prior p(codes | class, upper-level codes) over one level of VQ-VAE codes: a GPT-2
    (`self.transformer`, a `GPT2LMHeadModel`) over the codes in raster order, after a prefix holding the class token
    and the upper level's codes (see `TransformerPriorConfig` for the token layout).

    Example:

    ```python
    >>> import torch
    >>> from hf_vqvae.models.transformer_prior import TransformerPriorConfig, TransformerPriorModel
    >>> model = TransformerPriorModel(TransformerPriorConfig.from_preset("mnist")).eval()
    >>> codes = torch.randint(0, 128, (2, 7, 7))
    >>> output = model(codes, class_labels=torch.tensor([3, 5]))
    >>> output.logits.shape, output.loss.shape  # loss: nats per code
    (torch.Size([2, 128, 7, 7]), torch.Size([]))
    >>> model.sample(4, class_labels=7, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 7, 7])
    ```
    """

    config_class = TransformerPriorConfig
    main_input_name = "codes"
    base_model_prefix = "prior"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT2Block"]
    # GPT-2's attention implementations; the prior's choice is handed to its GPT-2.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def __init__(self, config: TransformerPriorConfig):
        super().__init__(config)
        self.transformer = GPT2LMHeadModel(_gpt2_config(config))
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------------------------

    def forward(
        self,
        codes: torch.LongTensor,
        class_labels: torch.LongTensor | None = None,
        condition_codes: torch.LongTensor | None = None,
        return_dict: bool = True,
    ) -> TransformerPriorOutput:
        r"""
        Scores a code map by teacher forcing: the logits at code position t come from the tokens before it.

        Args:
            codes (`torch.LongTensor` of shape `(batch, height, width)`): code indices in `[0, num_embeddings)`
                (a VQ-VAE's `encode(...).codes[level]`); `height * width` at most `max_code_positions`.
            class_labels (`torch.LongTensor` of shape `(batch,)`): required iff `num_classes > 0`.
            condition_codes (`torch.LongTensor` of shape `(batch, h, w)`): the upper level's codes in
                `[0, condition_num_embeddings)`; required iff `condition_num_embeddings > 0`.

        Returns:
            [`TransformerPriorOutput`]: `logits (batch, num_embeddings, height, width)` and the mean cross-entropy
            `loss` in nats per code.
        """
        batch, height, width = self._check_codes(codes)
        prefix = self._prefix(batch, class_labels, condition_codes, codes.device)
        targets = codes.long()
        num_codes = height * width
        # [prefix ... BOS, c_0, ..., c_{n-2}]: position P - 1 + t (BOS for t = 0) predicts code t.
        input_ids = torch.cat([prefix, targets.flatten(1)[:, :-1]], dim=1)
        hidden = self.transformer(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            logits_to_keep=num_codes,
            use_cache=False,
        )
        logits = hidden.logits[..., : self.config.num_embeddings]  # (batch, n, K): the code tokens only
        logits = logits.transpose(1, 2).reshape(batch, self.config.num_embeddings, height, width)
        loss = F.cross_entropy(logits.float(), targets)
        output = TransformerPriorOutput(loss=loss, logits=logits)
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        shape: tuple[int, int] | list[int] | None = None,
        class_labels: torch.LongTensor | int | None = None,
        condition_codes: torch.LongTensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.LongTensor:
        r"""
        Draws code maps from the prior, one code at a time in raster order, with `self.transformer.generate()`.

        Args:
            batch_size (`int`): number of code maps.
            shape (`(height, width)`, *optional*): the code map; defaults to `config.code_shape`. `height * width`
                is at most `max_code_positions`.
            class_labels (`torch.LongTensor` of shape `(batch_size,)` or `int`): required iff `num_classes > 0`;
                an int gives every sample that class.
            condition_codes (`torch.LongTensor` of shape `(batch_size, h, w)`): the upper level's codes; required
                iff `condition_num_embeddings > 0`.
            temperature (`float`, defaults to 1.0): divides the logits; > 0.
            top_k (`int`, *optional*): sample among the k likeliest codes only; None for all.
            top_p (`float`, *optional*): nucleus sampling, in (0, 1]; None (or 1.0) for no nucleus cut.
            generator (`torch.Generator`, *optional*): makes the draw reproducible. generate() takes no generator,
                so a seed is drawn from `generator` (advancing it: one generator gives new maps on every call, and
                generators seeded alike give identical maps), the global RNGs are seeded with it inside
                `torch.random.fork_rng()`, and the caller's global RNG state is restored afterwards. Without a
                generator the global RNG is used (and advanced) as usual.
            use_cache (`bool`, defaults to True): reuse the attention keys and values of earlier tokens (KV cache).
                False recomputes the whole sequence at every step (the baseline); both give the same codes for the
                same generator.

        Returns:
            `torch.LongTensor` of shape `(batch_size, height, width)` with codes in `[0, num_embeddings)`.

        The model is put in eval mode (no dropout) while sampling and returned to its previous mode afterwards.
        """
        _check_int("batch_size", batch_size, 1)
        height, width = self._sample_shape(shape)
        _check_sampling(temperature, top_k, top_p)
        device = self.device
        if isinstance(class_labels, int) and not isinstance(class_labels, bool):
            class_labels = torch.full((batch_size,), class_labels, dtype=torch.long, device=device)
        prefix = self._prefix(batch_size, class_labels, condition_codes, device)
        num_codes = height * width
        bos = self.config.bos_token_id
        generation_config = GenerationConfig(
            do_sample=True,
            num_beams=1,
            temperature=float(temperature),
            top_k=0 if top_k is None else int(top_k),  # 0 disables top-k (None would mean generate()'s default 50)
            top_p=1.0 if top_p is None else float(top_p),
            max_new_tokens=num_codes,
            min_new_tokens=num_codes,
            use_cache=bool(use_cache),
            bos_token_id=bos,
            eos_token_id=bos,
            pad_token_id=self.config.pad_token_id,
        )
        was_training = self.training
        self.eval()
        try:
            with _seeded(generator, device):
                sequences = self.transformer.generate(
                    input_ids=prefix,
                    attention_mask=torch.ones_like(prefix),
                    generation_config=generation_config,
                    logits_processor=LogitsProcessorList([CodeOnlyLogitsProcessor(self.config.num_embeddings)]),
                )
        finally:
            self.train(was_training)
        return sequences[:, prefix.shape[1] :].reshape(batch_size, height, width)

    # ------------------------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------------------------

    def _prefix(self, batch: int, class_labels, condition_codes, device) -> torch.LongTensor:
        """The tokens before the first code, `(batch, P)`: [class token] [upper-level codes] BOS."""
        config = self.config
        parts = []
        labels = self._check_class_labels(class_labels, batch)
        if labels is not None:
            parts.append(labels.to(device).long()[:, None] + config.class_token_offset)
        condition = self._check_condition_codes(condition_codes, batch)
        if condition is not None:
            parts.append(condition.to(device).long().flatten(1) + config.condition_token_offset)
        parts.append(torch.full((batch, 1), config.bos_token_id, dtype=torch.long, device=device))
        return torch.cat(parts, dim=1)

    def _check_codes(self, codes) -> tuple[int, int, int]:
        config = self.config
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must be a (batch, height, width) LongTensor of code indices, got {shape}")
        if not _is_integer_tensor(codes):
            raise ValueError(f"codes must hold integer code indices (a LongTensor), got dtype {codes.dtype}")
        batch, height, width = codes.shape
        if batch == 0 or height == 0 or width == 0:
            raise ValueError(f"codes must not be empty, got shape {tuple(codes.shape)}")
        if height * width > config.code_positions:
            raise ValueError(
                f"a {height}x{width} code map has {height * width} codes, more than the {config.code_positions} "
                f"positions this prior allows (max_code_positions / code_shape {config.code_shape}); use a prior "
                f"configured with max_code_positions >= {height * width}"
            )
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= config.num_embeddings:
            raise ValueError(
                f"codes must lie in [0, {config.num_embeddings}) (num_embeddings), got values in [{low}, {high}]; "
                f"pass the code indices of a VQ-VAE with this codebook size"
            )
        return batch, height, width

    def _check_class_labels(self, class_labels, batch: int) -> torch.LongTensor | None:
        num_classes = self.config.num_classes
        if num_classes == 0:
            if class_labels is not None:
                raise ValueError(
                    "class_labels were given but this prior has no classes (num_classes=0); drop class_labels or "
                    "use a prior configured with num_classes > 0"
                )
            return None
        if class_labels is None:
            raise ValueError(
                f"class_labels are required: this prior is conditioned on {num_classes} classes; pass a (batch,) "
                f"LongTensor with values in [0, {num_classes})"
            )
        if not isinstance(class_labels, torch.Tensor) or tuple(class_labels.shape) != (batch,):
            shape = tuple(class_labels.shape) if isinstance(class_labels, torch.Tensor) else type(class_labels)
            raise ValueError(f"class_labels must be a LongTensor of shape ({batch},) (one label per map), got {shape}")
        if not _is_integer_tensor(class_labels):
            raise ValueError(f"class_labels must hold integer labels (a LongTensor), got dtype {class_labels.dtype}")
        low, high = int(class_labels.min()), int(class_labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"class_labels must lie in [0, {num_classes}) (num_classes), got values in [{low}, {high}]"
            )
        return class_labels

    def _check_condition_codes(self, condition_codes, batch: int) -> torch.LongTensor | None:
        config = self.config
        if not config.is_conditioned:
            if condition_codes is not None:
                raise ValueError(
                    "condition_codes were given but this prior is not conditioned on upper-level codes "
                    "(condition_num_embeddings=0); drop condition_codes or use a conditioned prior"
                )
            return None
        if condition_codes is None:
            raise ValueError(
                f"condition_codes are required: this prior is conditioned on the upper level's codes; pass a "
                f"(batch, height, width) LongTensor with values in [0, {config.condition_num_embeddings}) "
                f"(e.g. of shape ({batch}, {config.condition_shape[0]}, {config.condition_shape[1]}))"
            )
        if not isinstance(condition_codes, torch.Tensor) or condition_codes.dim() != 3:
            is_tensor = isinstance(condition_codes, torch.Tensor)
            shape = tuple(condition_codes.shape) if is_tensor else type(condition_codes)
            raise ValueError(f"condition_codes must be a (batch, height, width) LongTensor, got {shape}")
        if condition_codes.shape[0] != batch:
            raise ValueError(
                f"condition_codes hold {condition_codes.shape[0]} maps but the batch has {batch}; pass one "
                f"upper-level code map per code map"
            )
        if not _is_integer_tensor(condition_codes):
            raise ValueError(f"condition_codes must hold integer code indices, got dtype {condition_codes.dtype}")
        height, width = condition_codes.shape[1:]
        if height * width == 0 or height * width > config.condition_positions:
            raise ValueError(
                f"a {height}x{width} condition map has {height * width} codes; this prior takes 1 to "
                f"{config.condition_positions} (condition_shape {config.condition_shape}, max_condition_positions "
                f"{config.max_condition_positions})"
            )
        low, high = int(condition_codes.min()), int(condition_codes.max())
        if low < 0 or high >= config.condition_num_embeddings:
            raise ValueError(
                f"condition_codes must lie in [0, {config.condition_num_embeddings}) (condition_num_embeddings), "
                f"got values in [{low}, {high}]"
            )
        return condition_codes

    def _sample_shape(self, shape) -> tuple[int, int]:
        config = self.config
        if shape is None:
            if config.code_shape is None:
                raise ValueError("this prior has no default code_shape; pass shape=(height, width) to sample")
            shape = config.code_shape
        if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 2:
            raise ValueError(f"shape must be (height, width), got {shape!r}")
        for side in shape:
            _check_int("every entry of shape", side, 1)
        height, width = int(shape[0]), int(shape[1])
        if height * width > config.code_positions:
            raise ValueError(
                f"a {height}x{width} code map has {height * width} codes, more than the {config.code_positions} "
                f"positions this prior allows (max_code_positions / code_shape {config.code_shape}); use a prior "
                f"configured with max_code_positions >= {height * width}"
            )
        return height, width

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2's own initialisation: N(0, initializer_range) for its Conv1D, Linear and Embedding weights, zero
        # biases, LayerNorm ones/zeros and the 1/sqrt(2 n_layer)-scaled residual projections. transformers already
        # hands the modules inside `self.transformer` (a PreTrainedModel) to GPT2LMHeadModel._init_weights; anything
        # else that reaches here is deferred to it as well.
        if module is not self:
            self.transformer._init_weights(module)

    # Duplicated from models/vqvae/modeling_vqvae.py (self-contained folder, see configuration_transformer_prior.py).
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, allow_partial_load: bool = False, **kwargs):
        """As `PreTrainedModel.from_pretrained`, safetensors only, strict, with clear errors for broken folders.

        A weight of the model missing from the checkpoint, a weight of the checkpoint that the model does not have,
        or one of another shape raises a `ValueError` naming them, instead of a model with randomly initialised
        layers. `allow_partial_load=True` loads the weights that match and initialises the rest (to fine-tune from
        part of a model); `ignore_mismatched_sizes=True` allows only the shape differences. With
        `output_loading_info=True` it returns `(model, loading_info)` as transformers does.
        """
        path = os.fspath(pretrained_model_name_or_path)
        _require_safetensors(path)
        return_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        kwargs.setdefault("use_safetensors", True)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        except Exception as error:
            _raise_if_unreadable(path, error)
            raise
        if not allow_partial_load:
            _require_complete_load(path, type(model).__name__, info, ignore_mismatched)
        return (model, info) if return_info else model


def _check_sampling(temperature, top_k, top_p) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0 (1.0 samples the prior as is), got {temperature!r}")
    if top_k is not None:
        _check_int("top_k", top_k, 1)
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be a probability in (0, 1] (1.0 or None: no nucleus cut), got {top_p!r}")


@contextmanager
def _seeded(generator: torch.Generator | None, device: torch.device):
    """Seeds the global RNGs from `generator` inside `fork_rng` (restoring the caller's state), or does nothing."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    devices, device_type = [], "cuda"  # fork_rng always saves and restores the CPU RNG
    if device.type != "cpu":
        device_type = device.type
        devices = list(range(getattr(torch, device.type).device_count()))
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        torch.manual_seed(seed)  # seeds the CPU and every accelerator RNG
        yield


# Duplicated from models/vqvae/modeling_vqvae.py with `from_pretrained` (self-contained folder, see above).
def _require_safetensors(path: str) -> None:
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise ValueError(
            f"{path} has no model.safetensors; this library loads weights only from safetensors. "
            f"Save the model with save_pretrained, or convert pickled weights with a trusted tool first"
        )


def _raise_if_unreadable(path: str, error: Exception) -> None:
    """A clear `ValueError` for a truncated or corrupt safetensors file; any other error is left to the caller."""
    if "safetensor" in type(error).__name__.lower() or "deserializ" in str(error).lower():
        raise ValueError(
            f"could not read the weights in {path}: the safetensors file is truncated or corrupt ({error}); "
            f"save or download it again"
        ) from error


def _require_complete_load(path: str, model_name: str, info: dict, ignore_mismatched: bool) -> None:
    """Raise a `ValueError` naming the weights a load would leave randomly initialised or would drop."""
    mismatched = [f"{key} (shape {list(saved)} in the file, {list(wanted)} in the model)" for key, saved, wanted in
                  info["mismatched_keys"]]  # fmt: skip
    problems = [
        (sorted(info["missing_keys"]), "weight(s) of the model missing from the checkpoint"),
        (sorted(info["unexpected_keys"]), "weight(s) in the checkpoint that the model does not have"),
        ([] if ignore_mismatched else sorted(mismatched), "weight(s) of another shape"),
    ]
    found = [f"{len(keys)} {what} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})" for keys, what in
             problems if keys]  # fmt: skip
    if found:
        raise ValueError(
            f"{path} does not hold the weights of this {model_name}: {'; '.join(found)}. Loaded as is, the model would "
            f"have randomly initialised layers or drop saved weights. Check that its config.json and model.safetensors "
            f"come from the same saved model (save it again with save_pretrained), or pass allow_partial_load=True to "
            f"load only the matching weights (e.g. to fine-tune from part of a model)"
        )


__all__ = ["CodeOnlyLogitsProcessor", "TransformerPriorModel", "TransformerPriorOutput"]
