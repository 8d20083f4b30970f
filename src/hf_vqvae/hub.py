"""Publishing a run to the Hub: assemble the repo folder, validate it in a fresh process, upload it.

A run folder (what `scripts/train.py` writes) or a pipeline folder (`VQVAE2Pipeline.save_pretrained`) becomes a
repo folder holding only what a user loads: safetensors weights, `config.json`, `preprocessor_config.json`, the
remote-code files (so `trust_remote_code=True` works without the package), the card (re-rendered from
`metrics.json` with the repo id), the run's image grid and `metrics.json`; for a pipeline `model_index.json` and one
such folder per component, and the pipeline's own module at the root. The remote-code files are exactly the modules
the configs' `auto_map` (or model_index.json's `_class_name`) names and, found by parsing them (never importing),
their same-folder relative imports, transitively: any other `*.py` in the run folder (notes, scripts) stays out, as do
checkpoints, logs and anything pickled. A pipeline's component names must be plain folder names, checked before
anything is read or written. Validation loads the folder as a user without hf_vqvae would: in a fresh process where
the package cannot be imported, with `trust_remote_code=True`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData

from .cards import render_model_card

# Files of a model folder that belong in the repo (besides the remote-code *.py files).
MODEL_FILES = ("config.json", "preprocessor_config.json", "metrics.json", "codes_info.json", "reconstructions.png",
               "samples.png")  # fmt: skip
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# Configs whose `auto_map` names the remote-code modules a folder needs.
AUTO_MAP_FILES = ("config.json", "preprocessor_config.json")
# A pipeline's index: `_class_name` is `[module, class]` when the pipeline's code ships at the folder's root.
PIPELINE_INDEX = "model_index.json"
# A pipeline component is a folder directly inside the pipeline folder: no separators, no "..", no leading dot.
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class RepoFile:
    path: str  # relative to the repo folder, "/"-separated
    size: int


def assemble_repo_folder(run_dir: str | Path, output_dir: str | Path, repo_id: str) -> list[RepoFile]:
    """Copy what belongs in the repo from `run_dir` to the empty or new `output_dir`; return the file list."""
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a folder: pass the output_dir of a training run or a saved pipeline")
    is_pipeline = (run_dir / "model_index.json").is_file()
    if not is_pipeline and not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} holds neither config.json (a model) nor model_index.json (a pipeline)")
    components = pipeline_components(run_dir) if is_pipeline else []  # names checked before any read or write
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"the staging folder {output_dir} is not empty: choose a new --staging_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    if is_pipeline:
        _assemble_pipeline(run_dir, output_dir, repo_id, components)
    else:
        _assemble_model(run_dir, output_dir, repo_id)
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
    code = remote_code_files(source)
    target.mkdir(parents=True, exist_ok=True)
    for path in [*weights, *code, *(source / name for name in MODEL_FILES)]:
        if path.is_file():
            shutil.copy2(path, target / path.name)
    if card:
        _write_card(source, target, repo_id)


def remote_code_files(folder: str | Path) -> list[Path]:
    """The `*.py` files `trust_remote_code=True` loading of `folder` needs: the modules its configs' `auto_map`
    names (`"modeling_vqvae.VQVAEModel"` -> `modeling_vqvae.py`) or, for a pipeline folder, the module its
    model_index.json's `_class_name` names (`["vqvae2_pipeline", "VQVAE2Pipeline"]` -> `vqvae2_pipeline.py`), and,
    transitively, their same-folder relative imports (`from .quantizer import ...` -> `quantizer.py`), found by
    parsing the files, never importing them. A pipeline's component folders are not included: each is a folder
    of its own (`_assemble_pipeline` calls this once per component)."""
    folder = Path(folder)
    pending = [(f"{module}.py", f"the auto_map of {config}") for module, config in _auto_map_modules(folder)]
    pending += [(f"{module}.py", f"the _class_name of {PIPELINE_INDEX}") for module in _pipeline_modules(folder)]
    needed: set[str] = set()
    while pending:
        name, needed_by = pending.pop()
        if name in needed:
            continue
        if not (folder / name).is_file():
            raise ValueError(f"{needed_by} needs {name}, which is missing from {folder}: the published model's code "
                             "would not load; re-save the model with save_pretrained")  # fmt: skip
        needed.add(name)
        pending += [(f"{module}.py", name) for module in _same_folder_imports(folder / name)]
    return [folder / name for name in sorted(needed)]


def _auto_map_modules(folder: Path) -> list[tuple[str, str]]:
    """(module, config file) for every class reference in the `auto_map` of the folder's configs that lives here
    (a reference `"other/repo--module.Class"` points at another repo's code and needs no file here)."""
    modules = []
    for config_name in AUTO_MAP_FILES:
        path = folder / config_name
        auto_map = json.loads(path.read_text()).get("auto_map") if path.is_file() else None
        if auto_map is None:
            continue
        if not isinstance(auto_map, dict):
            raise ValueError(f"{path}: auto_map must map Auto classes to 'module.Class' references, got {auto_map!r}")
        for reference in _class_references(auto_map.values()):
            if "--" in reference:
                continue
            module = reference.rpartition(".")[0]
            if not module.isidentifier():
                raise ValueError(f"{path}: auto_map reference {reference!r} does not name a module of this folder "
                                 "(expected 'module.Class'); fix the config before publishing")  # fmt: skip
            modules.append((module, config_name))
    return modules


def _pipeline_modules(folder: Path) -> list[str]:
    """The module model_index.json's `_class_name` names (`[module, class]`); none for a class name alone."""
    path = folder / PIPELINE_INDEX
    class_name = json.loads(path.read_text()).get("_class_name") if path.is_file() else None
    if not isinstance(class_name, list):
        return []
    if len(class_name) != 2 or not isinstance(class_name[0], str) or not class_name[0].isidentifier():
        raise ValueError(f"{path}: _class_name must be a class name or [module, class] with the module at the folder's "
                         f"root, got {class_name!r}; re-save the pipeline with save_pretrained")  # fmt: skip
    return [class_name[0]]


def _class_references(values) -> list[str]:
    """auto_map values are 'module.Class' strings, or lists of them (None where a variant is absent)."""
    references = []
    for value in values:
        references += [item for item in (value if isinstance(value, list) else [value]) if isinstance(item, str)]
    return references


def _same_folder_imports(path: Path) -> list[str]:
    """Modules `path` imports with a single leading dot: `from .x import y` -> x; `from . import x` -> x when x.py
    exists beside it (else x is a name, not a module). `from ..x` reaches outside the folder and is not followed."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise ValueError(f"{path} is not valid Python ({error.msg}, line {error.lineno}): fix it before "
                         "publishing") from None
    modules = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        if node.module:
            modules.append(node.module.split(".")[0])
        else:
            modules += [alias.name for alias in node.names if (path.parent / f"{alias.name}.py").is_file()]
    return modules


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


def pipeline_components(source: str | Path) -> list[str]:
    """The component folders `model_index.json` names; each must be a plain folder name inside `source`."""
    source = Path(source)
    index = json.loads((source / "model_index.json").read_text())
    named = [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)]
    unsafe = [name for name in named if not COMPONENT_NAME.match(name)]
    if unsafe:
        raise ValueError(f"{source / 'model_index.json'} names the component(s) {unsafe}, which are not plain folder "
                         "names (no '/', '\\', '..', leading dot or absolute path): a component must be a folder "
                         "directly inside the pipeline folder; fix model_index.json or re-save the pipeline with "
                         "save_pretrained")  # fmt: skip
    return [name for name in named if index[name] and index[name][0] is not None]


def _assemble_pipeline(source: Path, target: Path, repo_id: str, components: list[str]) -> None:
    index = json.loads((source / PIPELINE_INDEX).read_text())
    if not isinstance(index.get("_class_name"), list):
        raise ValueError(f"{source / PIPELINE_INDEX} names the pipeline class {index.get('_class_name')!r} without its "
                         "module: the folder was saved without the pipeline's code, so it would not load without "
                         "hf_vqvae; load it with VQVAE2Pipeline.from_pretrained and save it again with save_pretrained")  # fmt: skip
    shutil.copy2(source / PIPELINE_INDEX, target / PIPELINE_INDEX)
    for path in remote_code_files(source):
        shutil.copy2(path, target / path.name)
    for name in components:
        if not (source / name).is_dir():
            raise ValueError(f"model_index.json names the component {name!r} but {source / name} is missing")
        _assemble_model(source / name, target / name, f"{repo_id}/{name}", card=False)
        _copy_component_module(source / name, target / name, name, index[name][0])
    _pipeline_card(source, components, repo_id).save(target / "README.md")


def _copy_component_module(source: Path, target: Path, name: str, module: str) -> None:
    """The module model_index.json loads the component from (its code in one file, beside the auto_map's modules):
    from a Hub repo id diffusers downloads only that file of the folder's code, so it must import nothing with a dot."""
    path = source / f"{module}.py"
    if not path.is_file():
        raise ValueError(f"model_index.json loads the component {name!r} from {module}.py, which is missing from "
                         f"{source}; re-save the pipeline with save_pretrained")  # fmt: skip
    dotted = _same_folder_imports(path)
    if dotted:
        raise ValueError(f"model_index.json loads the component {name!r} from {module}.py, which imports {dotted} "
                         "with a dot: diffusers would not download those from the Hub; re-save the pipeline with "
                         "save_pretrained, which writes the component's code in one file")  # fmt: skip
    shutil.copy2(path, target / path.name)


def _pipeline_card(source: Path, components: list[str], repo_id: str) -> ModelCard:
    # diffusers loads the repo, with its own code (trust_remote_code=True); `custom_code` makes the Hub say so
    data = ModelCardData(library_name="diffusers", license="apache-2.0", pipeline_tag="unconditional-image-generation",
                         tags=["hf_vqvae", "custom_code", "vqvae2-pipeline"])  # fmt: skip
    rows, configs = [], {}
    for name in components:
        configs[name] = config = json.loads((source / name / "config.json").read_text())
        rows.append(f"| {name} | {config.get('architectures', ['?'])[0]} | {config.get('model_type')} |")
    num_classes = configs.get("prior_level_0", {}).get("num_classes") or 0
    labels = f", class_labels={[label % num_classes for label in range(4)]}" if num_classes else ""
    text = "\n".join([
        "---", data.to_yaml(), "---", "", "# VQ-VAE-2 sampling pipeline (hf_vqvae)", "",
        "A `VQVAE2Pipeline`: one autoregressive prior per level of the codes, top level first, and the VQ-VAE "
        "decoder.", "", "| component | class | model_type |", "| --- | --- | --- |", *rows, "", "## Usage", "",
        "Without hf_vqvae (diffusers and transformers run the code in this repo):", "",
        "```python", "from diffusers import DiffusionPipeline", "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)',
        f"images = pipe(batch_size=4{labels}).images", "```", "",
        "With hf_vqvae installed (its own code runs):", "",
        "```python", "from hf_vqvae import VQVAE2Pipeline", "",
        f'pipe = VQVAE2Pipeline.from_pretrained("{repo_id}")', f"images = pipe(batch_size=4{labels}).images", "```", "",
        "Each component folder has its own weights, config and model code (also joined into the one module "
        "`model_index.json` names, which is what diffusers downloads of it); the pipeline's code is at the root.", "",
    ])  # fmt: skip
    return ModelCard(text)


VALIDATE_SCRIPT = r"""
import json, sys
sys.modules["hf_vqvae"] = None  # a user without the package: only the folder's own code can load it
import torch
from pathlib import Path
from PIL import Image
folder = Path(sys.argv[1])
torch.manual_seed(0)
with torch.no_grad():
    if (folder / "model_index.json").is_file():
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
        labels = [0] if getattr(pipe.prior_level_0.config, "num_classes", 0) else None
        images = pipe(1, class_labels=labels, output_type="np").images
        result = {"kind": "pipeline", "output_shape": list(images.shape)}
    else:
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        config, result = model.config, {}
        if hasattr(config, "code_shape"):
            shape = config.code_shape or [4, 4]
            labels = torch.zeros(1, dtype=torch.long) if getattr(config, "num_classes", 0) else None
            codes = torch.randint(0, config.num_embeddings, (1, *shape))
            output = model(codes, class_labels=labels) if labels is not None else model(codes)
            shape = list(output.logits.shape)
        else:
            height, width = config.image_size if isinstance(config.image_size, list) else [config.image_size] * 2
            pixels = torch.rand(1, config.num_channels, height, width) * 2 - 1
            if (folder / "preprocessor_config.json").is_file():  # the model reads what its processor makes
                processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
                image = Image.new("RGB" if config.num_channels == 3 else "L", (width * 2, height * 2), 128)
                pixels = processor(image).pixel_values
                result["image_processor"] = type(processor).__name__
            shape = list(model(pixels).reconstruction.shape)
        result = {"kind": type(model).__name__, "output_shape": shape, **result}
loaded = sorted(name for name, module in sys.modules.items() if name.startswith("hf_vqvae") and module is not None)
if loaded:
    raise SystemExit(f"hf_vqvae was imported after all: {loaded}")
print(json.dumps(result))
"""


def validate_repo_folder(folder: str | Path, timeout: int = 600) -> dict:
    """Load the folder in a fresh Python process as a user without hf_vqvae would (the package made unimportable,
    `trust_remote_code=True`: AutoModel, and AutoImageProcessor where the folder has one, or DiffusionPipeline for a
    pipeline) and run one batch; raise if that fails."""
    with tempfile.TemporaryDirectory(prefix="hf_vqvae_validate_") as modules:  # the remote code's import cache
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": modules}
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


__all__ = ["RepoFile", "assemble_repo_folder", "list_repo_files", "pipeline_components", "remote_code_files",
           "upload_repo_folder", "validate_repo_folder"]
