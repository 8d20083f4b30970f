"""What a finished run writes: the save_pretrained folder with its card, image grids and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from ..cards import render_model_card
from ..registry import family_for



def image_grid(rows: list[list[Image.Image]], padding: int = 2) -> Image.Image:
    """Rows of equally sized images -> one image, rows stacked top to bottom."""
    width, height = rows[0][0].size
    columns = max(len(row) for row in rows)
    mode = "RGB" if any(image.mode == "RGB" for row in rows for image in row) else "L"
    grid = Image.new(mode, (columns * (width + padding) + padding, len(rows) * (height + padding) + padding), 255)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image.convert(mode), (padding + c * (width + padding), padding + r * (height + padding)))
    return grid


@torch.no_grad()
def reconstruction_grid(model, processor, pixel_values: torch.Tensor, max_images: int = 8) -> Image.Image:
    """Top row: inputs; bottom row: their reconstructions."""
    was_training = model.training
    model.eval()
    pixel_values = pixel_values[:max_images]
    reconstruction = model(pixel_values).reconstruction
    model.train(was_training)
    if family_for(model).kind == "vae":
        reconstruction = reconstruction.clamp(0, 1)
    return image_grid([processor.postprocess(pixel_values), processor.postprocess(reconstruction)])


@torch.no_grad()
def sample_grid(model, processor, num: int = 16, seed: int = 0) -> Image.Image:
    """VAE samples from the prior, two rows."""
    samples = model.sample(num, generator=torch.Generator(device=model.device).manual_seed(seed))
    images = processor.postprocess(samples)
    return image_grid([images[: num // 2], images[num // 2 :]])


def write_metrics(output_dir: Path, metrics: dict) -> Path:
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return path


def write_model_card(output_dir: Path, model, metrics: dict, training: dict) -> Path:
    """README.md from the family's template (hf_vqvae.cards): metadata with model-index results, architecture,
    training set-up, held-out metrics, the run's image grid, usage, limitations and citations."""
    output_dir = Path(output_dir)
    image = next((name for name in ("reconstructions.png", "samples.png") if (output_dir / name).is_file()), None)
    card = render_model_card(model.config, metrics, training, parameters=sum(p.numel() for p in model.parameters()),
                             image=image)  # fmt: skip
    path = output_dir / "README.md"
    card.save(path)
    return path
