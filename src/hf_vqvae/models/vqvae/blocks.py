"""Convolutional leaf blocks of the VQ-VAE and VQ-VAE-2 (explicit arguments, no config).

The layer order and indices follow the public VQ-VAE-2 reference (rosinality/vq-vae-2-pytorch), which is the
Sonnet VQ-VAE encoder generalised to any number of stride-2 stages; keeping the same `nn.Sequential` indices
lets its checkpoints be converted by renaming prefixes only.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """ReLU, 3x3 conv, ReLU, 1x1 conv, plus the input (VQ-VAE paper §4.1)."""

    def __init__(self, channels: int, residual_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, residual_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(residual_channels, channels, kernel_size=1),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.conv(hidden)


class Encoder(nn.Module):
    """`num_downsamples` 4x4 stride-2 convs (the first to channels // 2), a 3x3 conv, residual blocks, ReLU.

    (B, in_channels, H, W) -> (B, channels, H / 2**num_downsamples, W / 2**num_downsamples)
    """

    def __init__(
        self, in_channels: int, channels: int, residual_channels: int, num_residual_blocks: int, num_downsamples: int
    ):
        super().__init__()
        layers: list[nn.Module] = []
        current = in_channels
        for stage in range(num_downsamples):
            out = channels // 2 if stage == 0 else channels
            layers += [nn.Conv2d(current, out, kernel_size=4, stride=2, padding=1), nn.ReLU(inplace=True)]
            current = out
        layers.append(nn.Conv2d(current, channels, kernel_size=3, padding=1))
        layers += [ResidualBlock(channels, residual_channels) for _ in range(num_residual_blocks)]
        layers.append(nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.blocks(pixel_values)


class Decoder(nn.Module):
    """A 3x3 conv, residual blocks, ReLU, then `num_upsamples` 4x4 stride-2 transposed convs.

    The last transposed conv maps to `out_channels`, the one before it to channels // 2 (mirror of the encoder).
    (B, in_channels, h, w) -> (B, out_channels, h * 2**num_upsamples, w * 2**num_upsamples)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int,
        residual_channels: int,
        num_residual_blocks: int,
        num_upsamples: int,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)]
        layers += [ResidualBlock(channels, residual_channels) for _ in range(num_residual_blocks)]
        layers.append(nn.ReLU(inplace=True))
        current = channels
        for stage in range(num_upsamples):
            last = stage == num_upsamples - 1
            out = out_channels if last else (channels // 2 if stage == num_upsamples - 2 else channels)
            layers.append(nn.ConvTranspose2d(current, out, kernel_size=4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            current = out
        if num_upsamples == 0:
            layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
        self.blocks = nn.Sequential(*layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.blocks(hidden)


class CompactEncoder(nn.Module):
    """`num_downsamples` 3x3 stride-2 convs with ReLU (the first to channels // 2 when there are several), nothing
    after them: each output position sees only its own patch and a pixel around it (the Keras VQ-VAE example's
    encoder). Its codes are local, which makes them easier for a prior to predict.

    (B, in_channels, H, W) -> (B, channels, H / 2**num_downsamples, W / 2**num_downsamples)
    """

    def __init__(self, in_channels: int, channels: int, num_downsamples: int, **_unused):
        super().__init__()
        layers: list[nn.Module] = []
        current = in_channels
        for stage in range(max(num_downsamples, 1)):
            out = channels // 2 if stage == 0 and num_downsamples > 1 else channels
            layers += [nn.Conv2d(current, out, kernel_size=3, stride=2 if num_downsamples else 1, padding=1),
                       nn.ReLU(inplace=True)]  # fmt: skip
            current = out
        self.blocks = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.blocks(pixel_values)


class CompactDecoder(nn.Module):
    """`num_upsamples` 3x3 stride-2 transposed convs with ReLU (the last to channels // 2 when there are several),
    then a 3x3 conv to `out_channels` (the Keras VQ-VAE example's decoder).

    (B, in_channels, h, w) -> (B, out_channels, h * 2**num_upsamples, w * 2**num_upsamples)
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int, num_upsamples: int, **_unused):
        super().__init__()
        layers: list[nn.Module] = []
        current = in_channels
        for stage in range(num_upsamples):
            out = channels // 2 if stage == num_upsamples - 1 and num_upsamples > 1 else channels
            layers += [nn.ConvTranspose2d(current, out, kernel_size=3, stride=2, padding=1, output_padding=1),
                       nn.ReLU(inplace=True)]  # fmt: skip
            current = out
        layers.append(nn.Conv2d(current, out_channels, kernel_size=3, padding=1))
        self.blocks = nn.Sequential(*layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.blocks(hidden)


ENCODERS = {"paper": Encoder, "compact": CompactEncoder}
DECODERS = {"paper": Decoder, "compact": CompactDecoder}


class Upsampler(nn.Module):
    """`num_upsamples` 4x4 stride-2 transposed convs (ReLU between), channels unchanged; identity for 0."""

    def __init__(self, channels: int, num_upsamples: int):
        super().__init__()
        layers: list[nn.Module] = []
        for stage in range(num_upsamples):
            if stage > 0:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1))
        self.blocks = nn.Sequential(*layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.blocks(hidden)
