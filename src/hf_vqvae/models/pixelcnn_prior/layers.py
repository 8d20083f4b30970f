"""Building blocks of the gated PixelCNN prior (explicit arguments, no config).

References: van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders" (Gated PixelCNN: §2.2
gates and Fig. 2 stacks, §2.3 eqs. 4-5 conditioning) and Razavi et al. 2019 (VQ-VAE-2: self-attention in the top
prior, a deep conditioning stack in the bottom prior).

Masks are realised by kernel *shapes* and padding instead of multiplying full n x n kernels by 0/1 masks (the
"down-shifted" form of PixelCNN++): the function is that of the masked convolutions, no weight is wasted, and there
is no mask buffer to save or to rebuild after `from_pretrained`. With h = n // 2:

* vertical stack: a (h + 1) x n kernel over the input padded by h rows on top and h columns on each side, so the
  output at row i sees input rows i - h .. i (all columns j - h .. j + h);
* horizontal stack, mask 'B': a 1 x (h + 1) kernel over the input padded by h columns on the left, so the output
  at (i, j) sees (i, j - h .. j);
* horizontal stack, mask 'A': a 1 x h kernel over the same padded input, the last output column dropped, so the
  output at (i, j) sees (i, j - h .. j - 1): never its own code;
* the vertical stack reaches the horizontal one through a 1x1 conv of its features *shifted down one row*, so the
  horizontal output at row i sees the vertical features of rows < i only. That makes the receptive field of
  position (i, j) exactly "all rows above (within reach) plus the same row left of j": no blind spot, and no
  position ever sees its own or a later code in raster order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gate(pre_activation: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Gated activation unit tanh(a) ⊙ σ(b) (Gated PixelCNN eq. 2); `a, b` are the two halves along `dim`."""
    a, b = pre_activation.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W) with row i holding row i - 1 of the input and row 0 zeros."""
    return F.pad(features, (0, 0, 1, 0))[:, :, :-1]


class ResidualBlock(nn.Module):
    """ReLU, 3x3 conv, ReLU, 1x1 conv, plus the input (the VQ-VAE residual block), for the conditioning stack."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=1),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.conv(hidden)


class ConditioningStack(nn.Module):
    """Upper-level codes -> a spatial condition map s at the modelled resolution (the m(y) of Gated PixelCNN eq. 5).

    Code embedding -> `num_residual_blocks` residual blocks -> ReLU -> nearest upsampling by `upsample_factor`
    (none for 1) -> 3x3 conv. (B, h, w) LongTensor -> (B, channels, h * factor, w * factor). Each gated layer adds
    its own 1x1 projection of s into its gates. It does not depend on the codes being modelled, so sampling computes
    it once.
    """

    def __init__(self, num_embeddings: int, channels: int, num_residual_blocks: int, upsample_factor: int):
        super().__init__()
        self.upsample_factor = upsample_factor
        self.embedding = nn.Embedding(num_embeddings, channels)
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(num_residual_blocks)])
        self.output_conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, condition_codes: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(condition_codes).permute(0, 3, 1, 2)  # (B, Cc, h, w)
        hidden = F.relu(self.blocks(hidden))
        if self.upsample_factor > 1:
            hidden = F.interpolate(hidden, scale_factor=self.upsample_factor, mode="nearest")  # (B, Cc, H, W)
        return self.output_conv(hidden)


class GatedMaskedConvLayer(nn.Module):
    """One gated PixelCNN layer with a vertical and a horizontal stack (Gated PixelCNN Fig. 2).

    With C channels, cond = V_c e(y) + V_s * s the class and spatial condition (eqs. 4-5; shared by both stacks):

        v_feat = W_v * v_in                                              (B, 2C, H, W), rows <= i
        v_out  = tanh(v_feat_f + cond_f) ⊙ σ(v_feat_g + cond_g)           (B, C, H, W)
        h_feat = W_h * h_in + shift_down(W_vh v_feat)                      (B, 2C, H, W), mask 'A' or 'B'
        gated  = tanh(h_feat_f + cond_f) ⊙ σ(h_feat_g + cond_g)           (B, C, H, W)
        skip   = W_skip gated                                            (B, C, H, W), summed over layers
        h_out  = h_in + dropout(W_res gated)     (mask 'B'; mask 'A' has no identity path: h_in holds the codes)

    The last layer's h_out is never read (the head reads the skips), so it has no `residual_conv`.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        mask_type: str,
        has_residual_output: bool = True,
        num_classes: int = 0,
        condition_channels: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        self.mask_type = mask_type
        self.channels = channels
        self.half = kernel_size // 2
        self.horizontal_width = self.half if mask_type == "A" else self.half + 1
        self.vertical_conv = nn.Conv2d(channels, 2 * channels, kernel_size=(self.half + 1, kernel_size))
        self.horizontal_conv = nn.Conv2d(channels, 2 * channels, kernel_size=(1, self.horizontal_width))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1)
        self.skip_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.residual_conv = nn.Conv2d(channels, channels, kernel_size=1) if has_residual_output else None
        self.class_embedding = nn.Embedding(num_classes, 2 * channels) if num_classes > 0 else None
        self.condition_projection = (
            nn.Conv2d(condition_channels, 2 * channels, kernel_size=1) if condition_channels > 0 else None
        )
        self.dropout = nn.Dropout(dropout)

    def class_term(self, class_labels: torch.Tensor | None) -> torch.Tensor | None:
        """V^T h of eq. 4 for the class embedding h: (B, 2C, 1, 1), or None without classes."""
        if self.class_embedding is None:
            return None
        return self.class_embedding(class_labels)[:, :, None, None]

    def spatial_term(self, spatial: torch.Tensor | None) -> torch.Tensor | None:
        """V * s of eq. 5, a 1x1 conv of the condition map (B, Cc, H, W) -> (B, 2C, H, W); None without it."""
        if self.condition_projection is None:
            return None
        return self.condition_projection(spatial)

    def condition(self, class_labels: torch.Tensor | None, spatial: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning term added into both stacks' gates: (B, 2C, 1, 1), (B, 2C, H, W) or None."""
        class_term, spatial_term = self.class_term(class_labels), self.spatial_term(spatial)
        if class_term is None or spatial_term is None:
            return spatial_term if class_term is None else class_term
        return class_term + spatial_term

    def vertical_features(self, vertical: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) vertical input -> (B, 2C, H, W) features; row i sees input rows i - h .. i."""
        half = self.half
        return self.vertical_conv(F.pad(vertical, (half, half, half, 0)))

    def horizontal_features(self, horizontal: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) horizontal input -> (B, 2C, H, W); (i, j) sees (i, j - h .. j) ('B') or .. j - 1 ('A')."""
        width = horizontal.shape[-1]
        return self.horizontal_conv(F.pad(horizontal, (self.half, 0, 0, 0)))[..., :width]

    def output(self, gated: torch.Tensor, horizontal: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Gated activations and h_in, (B, C, H, W) each -> (h_out or None, skip), (B, C, H, W) each."""
        skip = self.skip_conv(gated)
        if self.residual_conv is None:
            return None, skip
        residual = self.residual_conv(gated)
        if self.mask_type == "A":
            return residual, skip  # no identity path: the input holds the codes themselves
        return horizontal + self.dropout(residual), skip

    def forward(
        self, vertical: torch.Tensor, horizontal: torch.Tensor, condition: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(v_in, h_in, cond) -> (v_out, h_out or None, skip), all (B, C, H, W) but cond (B, 2C, H or 1, W or 1)."""
        v_feat = self.vertical_features(vertical)  # (B, 2C, H, W)
        h_feat = self.horizontal_features(horizontal) + shift_down(self.vertical_to_horizontal(v_feat))
        if condition is not None:
            v_feat_conditioned, h_feat = v_feat + condition, h_feat + condition
        else:
            v_feat_conditioned = v_feat
        h_out, skip = self.output(gate(h_feat), horizontal)
        return gate(v_feat_conditioned), h_out, skip


def position_encoding(rows: torch.Tensor, cols: torch.Tensor, channels: int) -> torch.Tensor:
    """Fixed 2D sinusoidal encoding of (row, col) pairs: (N,), (N,) integer tensors -> (N, channels).

    A quarter of the channels each for sin/cos of the row and of the column at geometric frequencies (Vaswani et al.
    2017), zeros in the remaining channels when `channels` is not a multiple of 4. It depends on the absolute
    position only, not on the map size, so the prior stays shape-agnostic and the cached sampler can compute it for
    one position.
    """
    quarter = channels // 4
    frequencies = torch.exp(
        torch.arange(quarter, device=rows.device, dtype=torch.float32) * (-math.log(10000.0) / max(quarter, 1))
    )  # (quarter,)
    row_angles = rows.float()[:, None] * frequencies  # (N, quarter)
    col_angles = cols.float()[:, None] * frequencies
    encoding = torch.cat([row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()], dim=1)
    return F.pad(encoding, (0, channels - 4 * quarter))


class CausalSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over raster positions <= the current one, with its residual.

    (B, C, H, W) -> (B, C, H, W): x + dropout(W_o MHA(LN(x) + P)), causal in raster (row-major) order, with P the
    fixed 2D sinusoidal `position_encoding` (convolutional features alone say little about where a far-away position
    lies; PixelSNAIL and the VQ-VAE-2 priors also give their attention a position signal). On the horizontal stack
    after a mask-'B' layer, position t holds a function of codes < t only, so attending to positions <= t keeps the
    prior causal. `step` is the same computation for one position with a key/value cache.
    """

    def __init__(self, channels: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out_proj = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def project(self, sequence: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, N, C) features and their (N, C) position encodings -> queries, keys, values, each (B, heads, N, d)."""
        batch, length, _ = sequence.shape
        qkv = self.qkv(self.norm(sequence) + positions.to(sequence.dtype))
        query, key, value = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return query, key, value

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden.shape
        sequence = hidden.flatten(2).transpose(1, 2)  # (B, HW, C), raster order
        rows = torch.arange(height, device=hidden.device).repeat_interleave(width)  # (HW,)
        cols = torch.arange(width, device=hidden.device).repeat(height)
        query, key, value = self.project(sequence, position_encoding(rows, cols, channels))
        attended = F.scaled_dot_product_attention(query, key, value, is_causal=True)  # (B, heads, HW, d)
        attended = attended.transpose(1, 2).reshape(batch, height * width, channels)
        update = self.dropout(self.out_proj(attended))  # (B, HW, C)
        return hidden + update.transpose(1, 2).reshape(batch, channels, height, width)

    def step(
        self, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, row: int, col: int, position: int
    ) -> torch.Tensor:
        """Position (row, col), raster index `position`: (B, C) -> (B, C); writes its key/value into the caches.

        `keys`, `values`: (B, heads, N, d) caches holding the earlier positions in raster order.
        """
        index = torch.tensor([row], device=hidden.device), torch.tensor([col], device=hidden.device)
        query, key, value = self.project(hidden[:, None, :], position_encoding(*index, self.channels))  # (B, h, 1, d)
        keys[:, :, position] = key[:, :, 0]
        values[:, :, position] = value[:, :, 0]
        attended = F.scaled_dot_product_attention(query, keys[:, :, : position + 1], values[:, :, : position + 1])
        return hidden + self.dropout(self.out_proj(attended.reshape(hidden.shape)))
