"""Publishing a run to the Hub: assemble the repo folder, validate it in a fresh process, upload it.

A run folder (what `scripts/train.py` writes) or a pipeline folder (`VQVAE2Pipeline.save_pretrained`) becomes a
repo folder holding only what a user loads: safetensors weights, `config.json`, `preprocessor_config.json`, the
remote-code files written by `register_for_auto_class` (so `trust_remote_code=True` works without the package),
the card (re-rendered from `metrics.json` with the repo id), the run's image grid and `metrics.json`; for a
pipeline `model_index.json` and one such folder per component. Checkpoints, logs and anything pickled stay out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData

from .cards import render_model_card

# Files of a model folder that belong in the repo (besides the remote-code *.py files).
MODEL_FILES = ("config.json", "preprocessor_config.json", "metrics.json", "codes_info.json", "reconstructions.png",
               "samples.png")  # fmt: skip
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass
class RepoFile:
    path: str  # relative to the repo folder, "/"-separated
    size: int


def assemble_repo_folder(run_dir: str | Path, output_dir: str | Path, repo_id: str) -> list[RepoFile]:
    """Copy what belongs in the repo from `run_dir` to the empty or new `output_dir`; return the file list."""
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a folder: pass the output_dir of a training run or a saved pipeline")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"the staging folder {output_dir} is not empty: choose a new --staging_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "model_index.json").is_file():
        _assemble_pipeline(run_dir, output_dir, repo_id)
    elif (run_dir / "config.json").is_file():
        _assemble_model(run_dir, output_dir, repo_id)
    else:
        raise ValueError(f"{run_dir} holds neither config.json (a model) nor model_index.json (a pipeline)")
    return list_repo_files(output_dir)


def list_repo_files(folder: str | Path) -> list[RepoFile]:
    folder = Path(folder)
    return [RepoFile(path.relative_to(folder).as_posix(), path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file()]  # fmt: skip


def _assemble_model(source: Path, target: Path, repo_id: str, card: bool = True) -> None:
    weights = sorted(source.glob("model*.safetensors")) + sorted(source.glob("model.safetensors.index.json"))
    if not weights:
        pickled = [path.name for path in source.iterdir() if path.suffix in PICKLE_SUFFIXES]
        raise ValueError(f"{source} has no safetensors weights{' (only ' + ', '.join(pickled) + ')' if pickled else ''}; "
                         "only safetensors are published: re-save the model with save_pretrained")  # fmt: skip
    target.mkdir(parents=True, exist_ok=True)
    for path in [*weights, *sorted(source.glob("*.py")), *(source / name for name in MODEL_FILES)]:
        if path.is_file():
            shutil.copy2(path, target / path.name)
    if card:
        _write_card(source, target, repo_id)


def _write_card(source: Path, target: Path, repo_id: str) -> None:
    """Re-render the card from metrics.json (its `training` key holds the set-up); else keep the run's card."""
    from transformers import AutoConfig  # the package's __init__ has registered its configs

    metrics_path = source / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        training = metrics.pop("training", None)
        config = AutoConfig.from_pretrained(source)
        image = next((name for name in ("reconstructions.png", "samples.png") if (source / name).is_file()), None)
        card = render_model_card(config, metrics, training, repo_id=repo_id, parameters=_parameter_count(config),
                                 image=image)  # fmt: skip
        card.save(target / "README.md")
    elif (source / "README.md").is_file():
        shutil.copy2(source / "README.md", target / "README.md")


def _parameter_count(config) -> int:
    """Parameters of the architecture, counted on the meta device (no weights are loaded)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())


def _assemble_pipeline(source: Path, target: Path, repo_id: str) -> None:
    index = json.loads((source / "model_index.json").read_text())
    shutil.copy2(source / "model_index.json", target / "model_index.json")
    components = [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)
                  and value[0] is not None]  # fmt: skip
    for name in components:
        if not (source / name).is_dir():
            raise ValueError(f"model_index.json names the component {name!r} but {source / name} is missing")
        _assemble_model(source / name, target / name, f"{repo_id}/{name}", card=False)
    _pipeline_card(source, components, repo_id).save(target / "README.md")


def _pipeline_card(source: Path, components: list[str], repo_id: str) -> ModelCard:
    data = ModelCardData(library_name="hf_vqvae", license="apache-2.0", pipeline_tag="unconditional-image-generation",
                         tags=["hf_vqvae", "vqvae2-pipeline"])  # fmt: skip
    rows = []
    for name in components:
        config = json.loads((source / name / "config.json").read_text())
        rows.append(f"| {name} | {config.get('architectures', ['?'])[0]} | {config.get('model_type')} |")
    text = "\n".join([
        "---", data.to_yaml(), "---", "", "# VQ-VAE-2 sampling pipeline (hf_vqvae)", "",
        "A `VQVAE2Pipeline`: one autoregressive prior per level of the codes, top level first, and the VQ-VAE "
        "decoder.", "", "| component | class | model_type |", "| --- | --- | --- |", *rows, "", "## Usage", "",
        "```python", "import hf_vqvae", "from hf_vqvae import VQVAE2Pipeline", "",
        f'pipe = VQVAE2Pipeline.from_pretrained("{repo_id}")', "images = pipe(batch_size=4).images", "```", "",
        "Each component folder has its own weights, config and model code.", "",
    ])  # fmt: skip
    return ModelCard(text)


VALIDATE_SCRIPT = r"""
import json, sys, torch
import hf_vqvae
from pathlib import Path
from transformers import AutoModel
folder = Path(sys.argv[1])
torch.manual_seed(0)
with torch.no_grad():
    if (folder / "model_index.json").is_file():
        pipe = hf_vqvae.VQVAE2Pipeline.from_pretrained(folder)
        labels = [0] if getattr(pipe.prior_level_0.config, "num_classes", 0) else None
        images = pipe(1, class_labels=labels, output_type="np").images
        print(json.dumps({"kind": "pipeline", "output_shape": list(images.shape)}))
    else:
        model = AutoModel.from_pretrained(folder).eval()
        config = model.config
        if hasattr(config, "code_shape"):
            shape = config.code_shape or [4, 4]
            labels = torch.zeros(1, dtype=torch.long) if getattr(config, "num_classes", 0) else None
            codes = torch.randint(0, config.num_embeddings, (1, *shape))
            output = model(codes, class_labels=labels) if labels is not None else model(codes)
            shape = list(output.logits.shape)
        else:
            size = config.image_size if isinstance(config.image_size, list) else [config.image_size] * 2
            output = model(torch.rand(1, config.num_channels, *size) * 2 - 1)
            shape = list(output.reconstruction.shape)
        print(json.dumps({"kind": type(model).__name__, "output_shape": shape}))
"""


def validate_repo_folder(folder: str | Path, timeout: int = 600) -> dict:
    """Load the folder in a fresh Python process (as a user would) and run one batch; raise if that fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", VALIDATE_SCRIPT, str(folder)], capture_output=True, text=True,
                            env=env, timeout=timeout)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"the repo folder {folder} does not load and run in a fresh process:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def upload_repo_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                       create_pr: bool = False, commit_message: str | None = None, token: str | None = None):  # fmt: skip
    """Create the repo if needed (and the branch `revision`), then upload the folder in one commit."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision, create_pr=create_pr,
                             commit_message=commit_message or "Upload with hf_vqvae scripts/push_to_hub.py",
                             repo_type="model")  # fmt: skip


__all__ = ["RepoFile", "assemble_repo_folder", "list_repo_files", "upload_repo_folder", "validate_repo_folder"]
