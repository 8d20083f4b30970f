"""An autoregressive transformer prior over VQ-VAE / VQ-VAE-2 codes, on transformers' `GPT2LMHeadModel`.

The codes of one level are modelled in raster order after a prefix that holds the conditioning: an optional class
token, then (VQ-VAE-2 lower levels) the upper level's codes, then BOS. See `configuration_transformer_prior.py` for
the token layout. `forward` scores a code map by teacher forcing; `sample` draws one through `generate()`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .config_helpers import check_int
from .configuration_transformer_prior import TransformerPriorConfig
from .modeling_helpers import (
    StrictLoadingMixin,
    check_class_labels,
    check_code_map,
    check_fixed_codes,
    check_no_condition,
    check_sampling,
)


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


class FixedCodesLogitsProcessor(LogitsProcessor):
    """Where `fixed_mask` is True, leaves only the code of `fixed_codes` drawable (completion / inpainting).

    `fixed_codes` and `fixed_mask` are `(batch, H * W)` in raster order; the position of the code being drawn is the
    length of the sequence so far minus the `prefix_length` tokens before the first code. Running before temperature,
    top-k and top-p, it leaves one finite logit, which every warper keeps.
    """

    def __init__(self, fixed_codes: torch.LongTensor, fixed_mask: torch.BoolTensor, prefix_length: int):
        self.fixed_codes, self.fixed_mask, self.prefix_length = fixed_codes, fixed_mask, prefix_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        position = input_ids.shape[1] - self.prefix_length
        rows = self.fixed_mask[:, position]
        if not bool(rows.any()):
            return scores
        forced = torch.full_like(scores[rows], float("-inf"))
        forced.scatter_(1, self.fixed_codes[rows, position, None], 0.0)
        scores = scores.clone()
        scores[rows] = forced
        return scores


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


class TransformerPriorModel(StrictLoadingMixin, PreTrainedModel):
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
        fixed_codes: torch.LongTensor | None = None,
        fixed_mask: torch.BoolTensor | None = None,
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
            fixed_codes (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*): codes to keep where
                `fixed_mask` is True (completion / inpainting); what is fixed conditions what follows it.
            fixed_mask (`torch.BoolTensor` of shape `(batch_size, height, width)`, *optional*): where to keep
                `fixed_codes`.

        Returns:
            `torch.LongTensor` of shape `(batch_size, height, width)` with codes in `[0, num_embeddings)`.

        The model is put in eval mode (no dropout) while sampling and returned to its previous mode afterwards.
        """
        check_int("batch_size", batch_size, 1)
        height, width = self._sample_shape(shape)
        check_sampling(temperature, top_k, top_p)
        device = self.device
        if isinstance(class_labels, int) and not isinstance(class_labels, bool):
            class_labels = torch.full((batch_size,), class_labels, dtype=torch.long, device=device)
        prefix = self._prefix(batch_size, class_labels, condition_codes, device)
        fixed_codes, fixed_mask = check_fixed_codes(fixed_codes, fixed_mask, (batch_size, height, width),
                                                    self.config.num_embeddings, device)  # fmt: skip
        processors = LogitsProcessorList([CodeOnlyLogitsProcessor(self.config.num_embeddings)])
        if fixed_mask is not None:
            processors.append(FixedCodesLogitsProcessor(fixed_codes.flatten(1), fixed_mask.flatten(1), prefix.shape[1]))
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
                    logits_processor=processors,
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
        codes = check_code_map("codes", codes, config.num_embeddings)
        batch, height, width = codes.shape
        self._check_positions(height, width)
        return batch, height, width

    def _check_class_labels(self, class_labels, batch: int) -> torch.LongTensor | None:
        return check_class_labels(class_labels, batch, self.config.num_classes)

    def _check_condition_codes(self, condition_codes, batch: int) -> torch.LongTensor | None:
        config = self.config
        if not config.is_conditioned:
            check_no_condition(condition_codes)
            return None
        if condition_codes is None:
            raise ValueError(
                f"this prior is conditioned on the upper level's codes (condition_num_embeddings="
                f"{config.condition_num_embeddings}); pass condition_codes, a (batch, height, width) LongTensor "
                f"(e.g. of shape ({batch}, {config.condition_shape[0]}, {config.condition_shape[1]}))"
            )
        condition_codes = check_code_map("condition_codes", condition_codes, config.condition_num_embeddings,
                                         "condition_num_embeddings")  # fmt: skip
        if condition_codes.shape[0] != batch:
            raise ValueError(
                f"condition_codes hold {condition_codes.shape[0]} maps but the batch has {batch}; pass one "
                f"upper-level code map per code map"
            )
        height, width = condition_codes.shape[1:]
        if height * width > config.condition_positions:
            raise ValueError(
                f"a {height}x{width} condition map has {height * width} codes; this prior takes 1 to "
                f"{config.condition_positions} (condition_shape {config.condition_shape}, max_condition_positions "
                f"{config.max_condition_positions})"
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
            check_int("every entry of shape", side, 1)
        height, width = int(shape[0]), int(shape[1])
        self._check_positions(height, width)
        return height, width

    def _check_positions(self, height: int, width: int) -> None:
        config = self.config
        if height * width > config.code_positions:
            raise ValueError(
                f"a {height}x{width} code map has {height * width} codes, more than the {config.code_positions} "
                f"positions this prior allows (max_code_positions / code_shape {config.code_shape}); use a prior "
                f"configured with max_code_positions >= {height * width}"
            )

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2's own initialisation: N(0, initializer_range) for its Conv1D, Linear and Embedding weights, zero
        # biases, LayerNorm ones/zeros and the 1/sqrt(2 n_layer)-scaled residual projections. transformers already
        # hands the modules inside `self.transformer` (a PreTrainedModel) to GPT2LMHeadModel._init_weights; anything
        # else that reaches here is deferred to it as well.
        if module is not self:
            self.transformer._init_weights(module)


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


__all__ = ["CodeOnlyLogitsProcessor", "FixedCodesLogitsProcessor", "TransformerPriorModel", "TransformerPriorOutput"]
