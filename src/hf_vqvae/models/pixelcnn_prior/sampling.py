"""Ancestral sampling from the gated PixelCNN prior: a naive and an incremental (cached) sampler.

Both samplers expose the same two calls, used in raster order by `autoregressive_sample`:

    logits(i, j) -> (B, K) logits of position (i, j) given every code pushed so far
    push(i, j, codes)   the (B,) codes chosen at (i, j)

so the sequence of random draws (one `torch.multinomial` for the whole batch per position, fixed positions
included) is the same for both by construction, and they give the same codes for the same generator state.

`NaiveSampler` runs the full network on the whole map for every position (H * W passes), as public
implementations do. `IncrementalSampler` reuses earlier work ("row-wise caching of the vertical stack"):

* the conditioning (class embeddings, conditioning stack) is computed once;
* horizontal stack: the output of every layer at (i, j) depends only on that layer's horizontal inputs at
  (i, j - h .. j) and on the vertical features of row i - 1. Each layer keeps the current row of its horizontal
  inputs, so one position costs one small matrix product per layer ("a column" of the network on (B, C) tensors);
* vertical stack: row i depends on input rows <= i only, so when row i is complete it is computed for all layers
  at once (one (B, C, h + 1, W + 2h) conv per layer) from a window of the previous h rows of each layer's
  vertical inputs; the 1x1 link to the horizontal stack of row i + 1 is computed at the same time;
* attention: a key/value cache of the earlier positions, as in a transformer decoder.

The cached logits equal the full forward's up to float rounding (the tests check both the logits and the codes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import gate


# ----------------------------------------------------------------------------------------------------------------
# One sampling step
# ----------------------------------------------------------------------------------------------------------------


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """(B, K) logits with everything outside the top-k and outside the nucleus of mass top_p set to -inf.

    The nucleus is the smallest set of the most probable codes whose probability reaches `top_p` (Holtzman et al.
    2020); the most probable code is always kept.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth_best = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the better codes
        remove_sorted = mass_before >= top_p  # the nucleus is already complete without this code
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def draw(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, K) logits -> (B,) codes: logits / temperature, top-k and top-p filtering, one multinomial draw per row."""
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def autoregressive_sample(
    sampler,
    height: int,
    width: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    fixed_codes: torch.Tensor | None = None,
    fixed_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raster-order ancestral sampling with `sampler` (naive or incremental): returns (B, H, W) codes.

    A draw is made at every position, fixed ones included, so the random stream does not depend on the mask; where
    `fixed_mask` is True the code of `fixed_codes` replaces the draw and conditions everything after it.
    """
    codes = None
    for i in range(height):
        for j in range(width):
            logits = sampler.logits(i, j)  # (B, K)
            chosen = draw(logits, temperature, top_k, top_p, generator)  # (B,)
            if fixed_mask is not None:
                chosen = torch.where(fixed_mask[:, i, j], fixed_codes[:, i, j], chosen)
            if codes is None:
                codes = torch.zeros(chosen.shape[0], height, width, dtype=torch.long, device=chosen.device)
            codes[:, i, j] = chosen
            sampler.push(i, j, chosen)
    return codes


# ----------------------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------------------


class NaiveSampler:
    """One full forward pass of the network over the whole (B, H, W) map per position."""

    def __init__(self, model, batch_size: int, height: int, width: int, class_labels, spatial_condition):
        self.model = model
        self.class_labels = class_labels
        self.spatial_condition = spatial_condition  # (B, Cc, H, W) or None, computed once by the caller
        self.codes = torch.zeros(batch_size, height, width, dtype=torch.long, device=model.device)

    def logits(self, i: int, j: int) -> torch.Tensor:
        return self.model._logits(self.codes, self.class_labels, self.spatial_condition)[:, :, i, j]

    def push(self, i: int, j: int, codes: torch.Tensor) -> None:
        self.codes[:, i, j] = codes


class _LayerCache:
    """The cached state of one gated layer while sampling a (B, H, W) map; C channels, h = kernel_size // 2.

    row:     (B, h + W, C)          horizontal inputs of the current row, h zero columns on the left
    window:  (B, C, h + 1, W + 2h)  vertical inputs of rows i - h .. i, zero padded like the full conv
    addend:  (B, W, 2C)             per position of the current row: horizontal bias + link from the vertical
                                    features of the row above + condition
    """

    def __init__(self, layer, batch_size: int, width: int, reference: torch.Tensor):
        channels, half = layer.channels, layer.half
        self.layer = layer
        self.half = half
        self.width = layer.horizontal_width  # columns of the horizontal kernel: h ('A') or h + 1 ('B')
        self.has_identity = layer.mask_type == "B"
        self.has_residual = layer.residual_conv is not None
        # Horizontal conv as one matrix over the flattened (columns, channels) window: (width * C, 2C).
        weight = layer.horizontal_conv.weight  # (2C, C, 1, width)
        self.horizontal_weight = weight[:, :, 0].permute(2, 1, 0).reshape(self.width * channels, 2 * channels)
        # Skip and residual 1x1 convs as one matrix (C, C or 2C): columns [skip | residual].
        convs = [layer.skip_conv] + ([layer.residual_conv] if self.has_residual else [])
        self.output_weight = torch.cat([conv.weight[:, :, 0, 0] for conv in convs]).t().contiguous()
        self.output_bias = torch.cat([conv.bias for conv in convs])
        self.row = reference.new_zeros(batch_size, half + width, channels)
        self.window = reference.new_zeros(batch_size, channels, half + 1, width + 2 * half)
        self.link = None  # (B, 2C, 1, W): W_vh v_feat of the row above, None on the first row
        self.condition_row = None  # (B, 2C, 1, W or 1) or None
        self.addend = None

    def start_row(self, condition_row: torch.Tensor | None) -> None:
        self.condition_row = condition_row
        addend = self.layer.horizontal_conv.bias[None, :, None, None]  # (1, 2C, 1, 1)
        if self.link is not None:
            addend = addend + self.link
        if condition_row is not None:
            addend = addend + condition_row
        batch, columns = self.row.shape[0], self.row.shape[1] - self.half
        self.addend = addend.expand(batch, -1, 1, columns)[:, :, 0].transpose(1, 2).contiguous()  # (B, W, 2C)
        self.row.zero_()

    def column(self, j: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Position (i, j) of the current row: -> (h_out or None, skip), each (B, C)."""
        batch, channels = self.row.shape[0], self.row.shape[2]
        window = self.row[:, j : j + self.width].reshape(batch, self.width * channels)  # (B, width * C)
        pre_activation = torch.addmm(self.addend[:, j], window, self.horizontal_weight)  # (B, 2C)
        out = torch.addmm(self.output_bias, gate(pre_activation), self.output_weight)  # (B, C or 2C)
        skip = out[:, :channels]
        if not self.has_residual:
            return None, skip
        residual = out[:, channels:]
        if self.has_identity:
            return self.row[:, self.half + j] + residual, skip  # dropout is off in eval mode
        return residual, skip

    def finish_row(self, vertical_input: torch.Tensor) -> torch.Tensor:
        """Vertical stack of the completed row: (B, C, W) inputs -> (B, C, W) outputs; stores the next link."""
        half, columns = self.half, vertical_input.shape[-1]
        self.window[:, :, half, half : half + columns] = vertical_input
        v_feat = self.layer.vertical_conv(self.window)  # (B, 2C, 1, W)
        self.link = self.layer.vertical_to_horizontal(v_feat)  # feeds the horizontal stack of the next row
        conditioned = v_feat if self.condition_row is None else v_feat + self.condition_row
        self.window = torch.roll(self.window, shifts=-1, dims=2)  # drop the oldest row; the last is overwritten
        return gate(conditioned)[:, :, 0]


class IncrementalSampler:
    """Row-wise cached vertical stack, per-row cached horizontal stack and key/value-cached attention.

    Produces the logits of the naive sampler (up to float rounding) at a fraction of the cost: per position one
    column of (B, C) x (C, 2C)-sized products per layer, per row one one-row conv per layer.
    """

    def __init__(self, model, batch_size: int, height: int, width: int, class_labels, spatial_condition):
        if model.training:
            raise ValueError("the incremental sampler needs the model in eval mode (no dropout); use model.sample")
        self.model = model
        self.height, self.width = height, width
        self.class_labels = class_labels
        self.spatial_condition = spatial_condition  # (B, Cc, H, W) or None
        reference = model.embedding.weight
        self.caches = [_LayerCache(layer, batch_size, width, reference) for layer in model.layers]
        # Key/value caches of the attention blocks: (B, heads, H * W, d) each, by the index of the layer they follow.
        self.attention = {}
        for index, block in zip(model.attention_positions, model.attention_blocks):
            shape = (batch_size, block.num_heads, height * width, block.head_dim)
            self.attention[index] = (block, reference.new_zeros(shape), reference.new_zeros(shape))
        # Output head as matrices: ReLU, (C -> C), ReLU, (C -> K).
        first, last = model.head[1], model.head[3]
        self.head = [(first.weight[:, :, 0, 0], first.bias), (last.weight[:, :, 0, 0], last.bias)]
        # The class part of the conditioning does not change: (B, 2C, 1, 1) per layer or None.
        self.class_terms = [layer.class_term(class_labels) for layer in model.layers]  # (B, 2C, 1, 1) or None
        self._start_row(0)

    def _start_row(self, i: int) -> None:
        for layer, cache, class_term in zip(self.model.layers, self.caches, self.class_terms):
            term = class_term
            if layer.condition_projection is not None:
                spatial = layer.spatial_term(self.spatial_condition[:, :, i : i + 1])  # (B, 2C, 1, W)
                term = spatial if term is None else term + spatial
            cache.start_row(term)

    def logits(self, i: int, j: int) -> torch.Tensor:
        skip_total = 0
        position = i * self.width + j
        for index, cache in enumerate(self.caches):
            hidden, skip = cache.column(j)  # (B, C) each
            skip_total = skip_total + skip
            if index in self.attention:
                block, keys, values = self.attention[index]
                hidden = block.step(hidden, keys, values, i, j, position)
            if hidden is not None:
                following = self.caches[index + 1]
                following.row[:, following.half + j] = hidden  # the next layer's horizontal input at (i, j)
        (first_weight, first_bias), (last_weight, last_bias) = self.head
        hidden = F.linear(F.relu(skip_total), first_weight, first_bias)
        return F.linear(F.relu(hidden), last_weight, last_bias)  # (B, K)

    def push(self, i: int, j: int, codes: torch.Tensor) -> None:
        first = self.caches[0]
        first.row[:, first.half + j] = self.model.embedding(codes)  # (B, C): the code enters the first layer
        if j < self.width - 1:
            return
        # Row i is complete: run the vertical stack on it and prepare the horizontal stack of row i + 1.
        vertical = first.row[:, first.half :].transpose(1, 2)  # (B, C, W): embedded codes of row i
        for cache in self.caches:
            vertical = cache.finish_row(vertical)
        if i + 1 < self.height:
            self._start_row(i + 1)
