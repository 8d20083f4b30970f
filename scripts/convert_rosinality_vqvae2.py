#!/usr/bin/env python
"""Convert a rosinality/vq-vae-2-pytorch VQ-VAE-2 checkpoint (e.g. its FFHQ-256 `vqvae_560.pt`) to a model folder.

    python scripts/convert_rosinality_vqvae2.py vqvae_560.pt outputs/vqvae2-ffhq256-rosinality --check

The folder holds the model (`model.safetensors` + `config.json`, preset `rosinality-ffhq256`) and the matching
image processor, and loads with `VQVAE2Model.from_pretrained` or `AutoModel.from_pretrained` (after
`import hf_vqvae`). The checkpoint is read with `torch.load(weights_only=True)`: a file that pickles arbitrary
objects is refused, never executed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hf_vqvae import VQImageProcessor, VQVAE2Model
from hf_vqvae.conversion import convert_rosinality_checkpoint

CHECK_IMAGE_SIZE = 64  # small random batch for --check; the model is fully convolutional


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="rosinality checkpoint: a plain state dict saved with torch.save")
    parser.add_argument("output_dir", help="folder to write the converted model and image processor to")
    parser.add_argument(
        "--check", action="store_true", help="reload the saved folder and check it matches the converted model"
    )
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Path:
    """Convert, save, optionally check; conversion errors end the program with their message, no traceback."""
    output_dir = Path(args.output_dir)
    try:
        model = convert_rosinality_checkpoint(args.checkpoint)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    model.save_pretrained(output_dir)
    VQImageProcessor.from_model_config(model.config).save_pretrained(output_dir)
    check = ""
    if args.check:
        check = f"; reload check passed (max abs difference {check_saved_model(model, output_dir):.2e})"
    top, bottom = model.config.latent_shapes()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    print(
        f"converted {args.checkpoint} -> {output_dir}: VQVAE2Model ({parameters:,} parameters), "
        f"{model.config.image_size}px images -> top {top[0]}x{top[1]} + bottom {bottom[0]}x{bottom[1]} codes{check}"
    )
    return output_dir


@torch.no_grad()
def check_saved_model(model: VQVAE2Model, output_dir: Path) -> float:
    """Reload `output_dir` and compare codes and reconstructions with `model` on a random batch; the max difference."""
    reloaded = VQVAE2Model.from_pretrained(output_dir).eval()
    size = CHECK_IMAGE_SIZE
    pixels = torch.rand(2, model.config.num_channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected, found = model(pixels), reloaded(pixels)
    if not all(torch.equal(a, b) for a, b in zip(expected.codes, found.codes)):
        raise SystemExit(f"error: the model reloaded from {output_dir} chooses different codes than the converted one")
    difference = (expected.reconstruction - found.reconstruction).abs().max().item()
    if difference > 1e-5:
        raise SystemExit(f"error: reconstructions of the reloaded model differ by up to {difference:.3g}")
    return difference


if __name__ == "__main__":
    main(parse_args())
