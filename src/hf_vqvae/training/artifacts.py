"""What a finished run writes: the save_pretrained folder with its card, image grids and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData
from PIL import Image

CITATIONS = {
    "vae": "Kingma & Welling (2013), Auto-Encoding Variational Bayes, arXiv:1312.6114",
    "vqvae": "van den Oord, Vinyals & Kavukcuoglu (2017), Neural Discrete Representation Learning, arXiv:1711.00937",
    "vqvae2": "Razavi, van den Oord & Vinyals (2019), Generating Diverse High-Fidelity Images with VQ-VAE-2, "
    "arXiv:1906.00446",
    "pixelcnn_prior": "van den Oord et al. (2016), Conditional Image Generation with PixelCNN Decoders, "
    "arXiv:1606.05328; as the prior of VQ-VAE-2, arXiv:1906.00446",
    "transformer_prior": "Radford et al. (2019), Language Models are Unsupervised Multitask Learners (GPT-2), as a "
    "prior over VQ-VAE codes (arXiv:1711.00937)",
}


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
    if model.config.model_type == "vae":
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
    """A README.md model card: metadata, architecture, training set-up, held-out metrics, usage, citation."""
    config = model.config
    data = ModelCardData(
        library_name="hf_vqvae",
        license="apache-2.0",
        tags=["hf_vqvae", config.model_type, "vq-prior" if config.model_type.endswith("prior") else "image-reconstruction"],
        datasets=[training["dataset"]] if "/" in training["dataset"] and not Path(training["dataset"]).exists() else None,
    )
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {config.model_type} trained with hf_vqvae", "",
        f"A `{type(model).__name__}` ({_parameter_count(model):,} parameters) trained on `{training['dataset']}` "
        f"for {training['steps']} steps (batch {training['batch_size']} x {training['processes']} process(es), "
        f"{training['wall_time_s']:.0f} s on {training['hardware']}).", "",
        "## Architecture", "", "| field | value |", "| --- | --- |",
        *[f"| {key} | {value} |" for key, value in _architecture(config).items()], "",
        "## Held-out metrics", "", "| metric | value |", "| --- | --- |",
        *[f"| {key} | {_format(value)} |" for key, value in sorted(metrics.items()) if not isinstance(value, (list, dict))],
        "", "## Usage", "", "```python", "import hf_vqvae", "from transformers import AutoModel",
        'model = AutoModel.from_pretrained("PATH_OR_REPO_ID")', "```", "",
        "## Citation", "", CITATIONS[config.model_type], "",
    ]  # fmt: skip
    card = ModelCard("\n".join(lines))
    path = Path(output_dir) / "README.md"
    card.save(path)
    return path


def _architecture(config) -> dict:
    keys = ("image_size", "num_channels", "hidden_channels", "residual_channels", "num_residual_blocks",
            "num_downsamples", "level_downsamples", "num_embeddings", "embedding_dim", "beta", "ema_decay",
            "architecture", "hidden_size", "latent_dim", "decoder_distribution", "code_shape", "num_layers",
            "num_classes", "condition_num_embeddings", "num_attention_layers", "n_embd", "n_layer", "n_head")  # fmt: skip
    table = {key: getattr(config, key) for key in keys if hasattr(config, key)}
    if hasattr(config, "latent_shapes"):
        table["latent shapes (top first)"] = config.latent_shapes()
    return table


def _parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _format(value) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)
