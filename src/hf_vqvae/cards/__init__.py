"""Model cards: one Jinja template per family (`templates/`, also under the repository's `model_cards/`),
rendered with `huggingface_hub.ModelCard.from_template` from a config, the held-out metrics and the training set-up.

`scripts/train.py` writes a card into every run folder; `scripts/push_to_hub.py` re-renders it from the run's
`metrics.json` (which keeps the training set-up under its `training` key) with the final repo id.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..registry import ModelFamily, family_for

TEMPLATES = Path(__file__).resolve().parent / "templates"

BIBTEX = {
    "vae": """@article{kingma2013autoencoding,
  title={Auto-Encoding Variational Bayes}, author={Kingma, Diederik P. and Welling, Max},
  journal={arXiv preprint arXiv:1312.6114}, year={2013}
}""",
    "vqvae": """@inproceedings{vandenoord2017neural,
  title={Neural Discrete Representation Learning}, author={van den Oord, Aaron and Vinyals, Oriol and Kavukcuoglu, Koray},
  booktitle={Advances in Neural Information Processing Systems}, year={2017}
}""",
    "vqvae2": """@inproceedings{razavi2019generating,
  title={Generating Diverse High-Fidelity Images with VQ-VAE-2}, author={Razavi, Ali and van den Oord, Aaron and Vinyals, Oriol},
  booktitle={Advances in Neural Information Processing Systems}, year={2019}
}""",
    "pixelcnn": """@inproceedings{vandenoord2016conditional,
  title={Conditional Image Generation with PixelCNN Decoders}, author={van den Oord, Aaron and Kalchbrenner, Nal and
  Vinyals, Oriol and Espeholt, Lasse and Graves, Alex and Kavukcuoglu, Koray},
  booktitle={Advances in Neural Information Processing Systems}, year={2016}
}""",
    "gpt2": """@article{radford2019language,
  title={Language Models are Unsupervised Multitask Learners}, author={Radford, Alec and Wu, Jeffrey and Child, Rewon and
  Luan, David and Amodei, Dario and Sutskever, Ilya}, year={2019}
}""",
}

# metric key -> (label in the results table, model-index metric type, task type); a key with {level} repeats per level.
_EVAL_METRICS = {
    "normalized_mse": ("normalised MSE (MSE / pixel variance)", "normalized_mse", "image-to-image"),
    "mse": ("MSE, pixels in [-1, 1]", "mse", "image-to-image"),
    "psnr": ("PSNR (dB)", "psnr", "image-to-image"),
    "codebook_usage_level_{level}": ("codebook usage, level {level}", "codebook_usage", "image-to-image"),
    "codebook_perplexity_level_{level}": ("codebook perplexity, level {level}", "perplexity", "image-to-image"),
    "psnr_levels_0_to_{level}": ("PSNR from levels 0..{level} (dB)", "psnr", "image-to-image"),
    "elbo": ("ELBO (nats per image)", "elbo", "unconditional-image-generation"),
    "nll": ("NLL, importance sampled (nats per image)", "nll", "unconditional-image-generation"),
    "nll_bits_per_dim": ("NLL (bits per dim)", "bits_per_dim", "unconditional-image-generation"),
    "nll_nats_per_code": ("NLL (nats per code)", "nll", "unconditional-image-generation"),
    "bits_per_dim": ("NLL (bits per dim of the image)", "bits_per_dim", "unconditional-image-generation"),
}
_ARCHITECTURE_FIELDS = (
    "image_size", "num_channels", "hidden_channels", "residual_channels", "num_residual_blocks", "num_downsamples",
    "level_downsamples", "num_embeddings", "embedding_dim", "beta", "ema_decay", "kmeans_init", "dead_code_threshold",
    "rotation_trick", "use_cosine_sim", "codebook_dim", "architecture",
    "hidden_size", "latent_dim", "decoder_distribution", "code_shape", "num_layers", "num_classes",
    "condition_num_embeddings", "num_attention_layers", "dropout", "n_embd", "n_layer", "n_head",
)  # fmt: skip


def family(model_type: str) -> ModelFamily:
    """The registry's family of `model_type`: its card template, citations and names."""
    return family_for(model_type)


def render_model_card(config, metrics: dict, training: dict | None = None, *, repo_id: str | None = None,
                      parameters: int | None = None, image: str | None = None) -> ModelCard:  # fmt: skip
    """Render the family template for `config` with the held-out `metrics` and the `training` set-up.

    `training` holds dataset, steps, batch_size, processes, wall_time_s, hardware and optionally base_model and
    eval_images; `repo_id` goes into the usage snippets (default: a placeholder); `image` is a file next to the
    card (reconstructions.png / samples.png).
    """
    training = training or {}
    model_type = config.model_type
    kind = family(model_type)
    source = str(training.get("dataset", "unknown data"))
    dataset = _dataset_name(source)
    eval_results = _eval_results(metrics, dataset, _num_levels(config))
    card_data = ModelCardData(
        # The repo carries its model code (trust_remote_code=True), so transformers is the library that loads it;
        # `custom_code` makes the Hub show that in its usage snippet.
        library_name="transformers", license="apache-2.0", pipeline_tag=kind.pipeline_tag,
        tags=["hf_vqvae", "custom_code", model_type, *(["vq-prior"] if kind.is_prior else ["image-reconstruction"])],
        datasets=[source] if _is_hub_id(source) else None, base_model=_hub_base_model(training, config),
        model_name=repo_id or f"{model_type}-hf_vqvae", eval_results=eval_results or None,
    )  # fmt: skip
    values = _template_values(config, metrics, training, repo_id, parameters, image, dataset)
    return ModelCard.from_template(card_data, template_path=str(TEMPLATES / kind.card_template), **values)


def _template_values(config, metrics, training, repo_id, parameters, image, dataset) -> dict:
    model_type = config.model_type
    kind = family(model_type)
    num_levels = _num_levels(config)
    return dict(
        config=config, title=f"{kind.display_name} trained with hf_vqvae", repo_id=repo_id or "PATH_OR_REPO_ID",
        summary=_summary(config, dataset, training), image=image or "", image_caption="reconstructions" if
        kind.is_vq else "samples", parameters=f"{parameters:,}" if parameters else "see config",
        architecture=[(key, getattr(config, key)) for key in _ARCHITECTURE_FIELDS if _shown(config, key)],
        architecture_name=_architecture_name(config), num_levels=num_levels,
        latent_shapes=config.latent_shapes() if hasattr(config, "latent_shapes") else None,
        codebook_training="EMA (decay {})".format(config.ema_decay) if getattr(config, "ema_decay", None) else
        "codebook loss (gradient)", bottom_downsample=_bottom_downsample(config), dataset=dataset,
        image_size=getattr(config, "image_size", None), training_text=_training_text(training),
        eval_text=_eval_text(metrics, training),
        results=_results_table(metrics, num_levels), citations=[BIBTEX[name] for name in kind.citations],
        cli_model=kind.cli_name,
        code_shape="x".join(str(side) for side in getattr(config, "code_shape", []) or []) or "any",
        class_conditioning=f"{config.num_classes} classes" if getattr(config, "num_classes", 0) else "none",
        level_conditioning="yes" if getattr(config, "condition_num_embeddings", 0) else "no (a top-level prior)",
        level=metrics.get("level", 0), vq_model=_vq_model_id(config) or "VQVAE_REPO_ID",
    )  # fmt: skip


def _eval_results(metrics: dict, dataset: str, num_levels: int) -> list[EvalResult]:
    results = []
    for key, label, metric_type, task in _expanded_metrics(num_levels):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            results.append(EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset,
                                      metric_type=metric_type, metric_value=round(float(value), 6),
                                      metric_name=label))  # fmt: skip
    return results


def _expanded_metrics(num_levels: int):
    for key, (label, metric_type, task) in _EVAL_METRICS.items():
        levels = range(num_levels) if "{level}" in key else [None]
        for level in levels:
            if level is not None and key.startswith("psnr_levels") and level == num_levels - 1:
                continue  # the same as the full reconstruction's PSNR
            yield key.format(level=level), label.format(level=level), metric_type, task


def _results_table(metrics: dict, num_levels: int) -> list[tuple[str, str]]:
    known = list(_expanded_metrics(num_levels))
    rows = [(label, _format(metrics[key])) for key, label, _, _ in known if key in metrics]
    shown = {key for key, *_ in known}
    skip = shown | {"training", "skipped_images", "train_steps"}
    full = f"_levels_0_to_{num_levels - 1}"  # the same figures as the full reconstruction's
    rows += [(key, _format(value)) for key, value in sorted(metrics.items())
             if key not in skip and not key.endswith(full) and isinstance(value, (int, float, str))]  # fmt: skip
    return rows


def _shown(config, key: str) -> bool:
    """Config fields of the card's table: those the architecture uses (compact VQ blocks have no residual blocks)."""
    if not hasattr(config, key):
        return False
    return not (key.startswith(("residual_", "num_residual")) and getattr(config, "architecture", None) == "compact")


def _eval_text(metrics: dict, training: dict) -> str:
    if training.get("eval_images"):
        return f"{training['eval_images']:,} held-out images"
    if metrics.get("eval_codes"):
        return f"{metrics['eval_codes']:,} held-out codes"
    return "the held-out split"


def _summary(config, dataset: str, training: dict) -> str:
    text = f"A {family(config.model_type).display_name} ({_architecture_name(config)}) trained on `{dataset}`"
    if _hub_base_model(training) and training.get("base_model"):
        text += f", fine-tuned from [`{training['base_model']}`](https://huggingface.co/{training['base_model']})"
    elif training.get("base_model"):
        text += f", fine-tuned from `{_dataset_name(str(training['base_model']))}`"
    return text + " with [hf_vqvae](https://github.com/hf-vqvae/hf_vqvae)."


def _training_text(training: dict) -> str:
    if not training:
        return "Not recorded."
    parts = [f"- dataset: `{_dataset_name(str(training.get('dataset', 'unknown')))}`"]
    if "steps" in training:
        parts.append(f"- {training['steps']} optimizer steps, batch {training.get('batch_size', '?')} per process x "
                     f"{training.get('processes', 1)} process(es)")  # fmt: skip
    if "learning_rate" in training:
        decay = f", weight decay {training['weight_decay']}" if training.get("weight_decay") else ""
        parts.append(f"- learning rate {training['learning_rate']}{decay}, "
                     f"precision {training.get('mixed_precision', 'no')}")  # fmt: skip
    if "wall_time_s" in training:
        parts.append(f"- {training['wall_time_s']:.0f} s wall time on {training.get('hardware', 'unknown hardware')}")
    if training.get("base_model"):
        parts.append(f"- initialised from `{training['base_model']}`")
    return "\n".join(parts)


def _architecture_name(config) -> str:
    return family(config.model_type).architecture_summary(config)


def _num_levels(config) -> int:
    return len(config.level_downsamples) if hasattr(config, "level_downsamples") else 1


def _bottom_downsample(config) -> int:
    return 2 ** sum(config.level_downsamples) if hasattr(config, "level_downsamples") else 1


def _hub_base_model(training: dict, config=None) -> str | None:
    """`base_model` metadata, a Hub id: the model a fine-tune started from, else for a prior the VQ model whose codes
    it models. A local folder is named in the text only."""
    base = training.get("base_model")
    if base and _is_hub_id(str(base)):
        return base
    return _vq_model_id(config) if config is not None else None


def _vq_model_id(config) -> str | None:
    """The Hub id of the VQ model that made a prior's codes (`config.codes_source`), when it is one."""
    source = getattr(config, "codes_source", None) or {}
    model = str(source.get("model", ""))
    return model if _is_hub_id(model) else None


def _dataset_name(source: str) -> str:
    """A Hub id as it is; a local folder by its name (machine paths stay out of cards)."""
    if source.startswith(("/", ".", "~")) or Path(source).exists():
        return Path(source).name or source
    return source


def _is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/"))


def _format(value) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


__all__ = ["BIBTEX", "TEMPLATES", "family", "render_model_card"]
