"""Packaging: the dependency lists against the imports, the inference-only install, the license, the Space's files.

A bare `pip install hf_vqvae` serves inference (load, encode, decode, sample); the `train` extra adds what training,
data loading and evaluation need. The first tests read pyproject.toml and the source's imports; one runs inference in
a fresh process where the training-only packages cannot be imported, as on a machine without them.
"""

import ast
import functools
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from PIL import Image
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import sample as sample_script  # noqa: E402

import hf_vqvae  # noqa: E402
from hf_vqvae import (  # noqa: E402
    PixelCNNPriorConfig,
    PixelCNNPriorModel,
    VQImageProcessor,
    VQVAE2Config,
    VQVAE2Model,
    VQVAE2Pipeline,
)

SRC = ROOT / "src"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SPACE = ROOT / "spaces_demo"

# Distributions that only training, data loading and evaluation need: never in the base install.
TRAINING_ONLY = {"accelerate", "datasets", "scikit-learn", "tensorboard"}
# Modules a bare install lacks (pandas and pyarrow come with datasets).
ABSENT_IN_A_BARE_INSTALL = ("datasets", "accelerate", "tensorboard", "sklearn", "pandas", "pyarrow")
# Needed without an import statement of ours naming them: distribution -> (where it must be declared, why).
INDIRECT = {
    "jinja2": ("base", "huggingface_hub's ModelCard.from_template renders the model card templates"),
    "tensorboard": ("train", "the default tracker of scripts/train.py (accelerate's TensorBoardTracker)"),
}
# Where the inference-only paths start: the package, the modules they use, and the scripts that need no training.
INFERENCE_ROOTS = ["hf_vqvae", "hf_vqvae.pipelines", "hf_vqvae.image_processing", "hf_vqvae.devices",
                   "hf_vqvae.conversion", "hf_vqvae.hub", ROOT / "scripts" / "sample.py",
                   ROOT / "scripts" / "convert_rosinality_vqvae2.py", ROOT / "scripts" / "push_to_hub.py"]  # fmt: skip


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _names(requirements: list[str]) -> set[str]:
    return {_normalize(Requirement(requirement).name) for requirement in requirements}


BASE = _names(PROJECT["dependencies"])
EXTRAS = {extra: _names(requirements) for extra, requirements in PROJECT["optional-dependencies"].items()}


# ------------------------------------------------------------------------------------------------- reading imports
def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """Every import statement of a file, at any depth (functions too), as (level, module, names); the bodies of
    `if TYPE_CHECKING:` are skipped (they never run)."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((0, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _module_file(name: str) -> Path | None:
    """`hf_vqvae.a.b` -> src/hf_vqvae/a/b.py or src/hf_vqvae/a/b/__init__.py (None when it is no module)."""
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _package_of(path: Path) -> str | None:
    """The package that a file's relative imports start from (None outside src/)."""
    if SRC not in path.parents:
        return None
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1])  # an __init__'s package is its folder; a module's, the folder that holds it


def _own_modules(path: Path, level: int, module: str, names: tuple[str, ...]) -> list[str]:
    """The hf_vqvae modules an import statement runs: the target, its parent packages, imported submodules."""
    if level:
        package = _package_of(path).split(".")
        target = ".".join([*package[: len(package) - (level - 1)], *([module] if module else [])])
    elif module.split(".")[0] == "hf_vqvae":
        target = module
    else:
        return []
    parts = target.split(".")
    modules = [".".join(parts[:end]) for end in range(1, len(parts) + 1)]
    modules += [f"{target}.{name}" for name in names if _module_file(f"{target}.{name}")]
    return [name for name in modules if _module_file(name)]


def _third_party(imports, local: set[str]) -> set[str]:
    tops = {module.split(".")[0] for level, module, _ in imports if level == 0 and module}
    return {top for top in tops if top not in sys.stdlib_module_names and top not in local | {"__future__", "hf_vqvae"}}


def _closure(roots: list) -> dict[str, set[Path]]:
    """Third-party modules -> the files importing them, over every file reached from `roots` (module names or
    script paths) by imports of hf_vqvae modules."""
    files = [root if isinstance(root, Path) else _module_file(root) for root in roots]
    files += [_module_file(name) for root in roots if isinstance(root, str) for name in _own_modules(SRC, 0, root, ())]
    seen, used = set(), {}
    while files:
        path = files.pop()
        if path in seen:
            continue
        seen.add(path)
        imports = _imports(path)
        for top in _third_party(imports, local=set()):
            used.setdefault(top, set()).add(path)
        for level, module, names in imports:
            files += [_module_file(name) for name in _own_modules(path, level, module, names)]
    return used


@functools.cache
def _module_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    return {_normalize(name) for name in _module_distributions().get(module, [])}


def _undeclared(used: dict[str, set[Path]], allowed: set[str]) -> list[str]:
    problems = []
    for module, paths in sorted(used.items()):
        where = ", ".join(sorted(str(path.relative_to(ROOT)) for path in paths))
        distributions = _distributions(module)
        if not distributions:
            problems.append(f"{module} (imported by {where}) is not installed, so its distribution is unknown")
        elif not distributions & allowed:
            problems.append(f"{module} (imported by {where}) comes from {sorted(distributions)}, not declared here")
    return problems


# ------------------------------------------------------------------------------------------------- dependency lists
def test_training_packages_are_the_train_extra_not_the_base_install():
    assert not BASE & TRAINING_ONLY, f"training-only packages in the base dependencies: {sorted(BASE & TRAINING_ONLY)}"
    assert TRAINING_ONLY <= EXTRAS["train"], f"missing from the train extra: {sorted(TRAINING_ONLY - EXTRAS['train'])}"
    dev = [Requirement(requirement) for requirement in PROJECT["optional-dependencies"]["dev"]]
    assert any(req.name == "hf_vqvae" and {"train", "demo"} <= req.extras for req in dev), "dev must pull in the extras"
    assert '-e ".[train,dev]"' in (ROOT / "Makefile").read_text(), "make test / make train install the train extra"
    for distribution, (where, reason) in INDIRECT.items():
        assert distribution in (BASE if where == "base" else EXTRAS[where]), f"{distribution} ({reason}) in {where}"


def test_every_imported_module_comes_from_a_declared_dependency():
    declared = BASE.union(*EXTRAS.values())
    files = [*SRC.rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *SPACE.glob("*.py")]
    local = {path.stem for path in [*(ROOT / "scripts").glob("*.py"), *SPACE.glob("*.py")]}  # scripts import each other
    used = {}
    for path in files:
        for top in _third_party(_imports(path), local):
            used.setdefault(top, set()).add(path)
    assert {"torch", "transformers", "diffusers", "accelerate", "datasets", "gradio"} <= set(used)  # the scan works
    assert not _undeclared(used, declared), "\n".join(_undeclared(used, declared))


def test_inference_code_needs_only_the_base_dependencies():
    used = _closure(INFERENCE_ROOTS)
    assert {"torch", "transformers", "diffusers", "huggingface_hub"} <= set(used)
    assert not _undeclared(used, BASE), "\n".join(_undeclared(used, BASE))
    demo = _closure([SPACE / "app.py"])
    assert "gradio" in demo and not _undeclared(demo, BASE | EXTRAS["demo"]), _undeclared(demo, BASE | EXTRAS["demo"])


def test_the_installed_versions_meet_the_declared_ranges():
    """The test environment is what pyproject.toml promises (a floor above what is installed fails here)."""
    for requirement in map(Requirement, [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["train"]]):
        version = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name} {version}: {requirement}"
    transformers = next(Requirement(r) for r in PROJECT["dependencies"] if Requirement(r).name == "transformers")
    # AutoImageProcessor.register(image_processor_classes=...) is 5.4; before 5.18 AutoImageProcessor needs torchvision.
    assert not transformers.specifier.contains("5.17.0") and transformers.specifier.contains("5.18.0")


def test_license_and_build_backend():
    assert PROJECT["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    for pattern in PROJECT["license-files"]:
        assert list(ROOT.glob(pattern)), f"license-files {pattern!r} matches no file"
    setuptools = next(Requirement(r) for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    # An SPDX `license` string and `license-files` are PEP 639, which setuptools implements from 77.
    assert not setuptools.specifier.contains("76.1") and setuptools.specifier.contains("77.0")


# ------------------------------------------------------------------------------------------------- a bare install
LEAN_SCRIPT = """
import importlib.abc, json, sys
ABSENT = {absent!r}
# As on a machine without them: find_spec() reports them missing (transformers and diffusers probe for some) and an
# import fails. Left alone, a finder raising ImportError also stops any import that would still reach for them.
for name in ABSENT:
    sys.modules[name] = None


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ImportError(f"{{name}} is not installed in a bare install")


sys.meta_path.insert(0, Absent())
import torch
torch.set_num_threads(1)
from safetensors.torch import load_file, save_file
from transformers import AutoModel
import hf_vqvae
from hf_vqvae import VQVAE2Pipeline

inputs = load_file("inputs.safetensors")
vqvae = AutoModel.from_pretrained("vqvae2").eval()
pipe = VQVAE2Pipeline.from_pretrained("pipeline")
with torch.no_grad():
    codes = vqvae.encode(inputs["pixels"]).codes
    decoded = vqvae.decode_code([inputs["codes_0"], inputs["codes_1"]])
images = pipe(1, class_labels=[3], generator=torch.Generator().manual_seed(0), output_type="pt").images
save_file({{"codes_0": codes[0], "codes_1": codes[1], "decoded": decoded.contiguous(), "sample": images}},
          "outputs.safetensors")
sys.path.insert(0, {scripts!r})
import sample
sample.main(sample.parse_args(["--pipeline", "pipeline", "--num_images", "2", "--class_labels", "3", "--device", "cpu",
                               "--output", "grid.png"]))
loaded = sorted(name for name in sys.modules if name.partition(".")[0] in ABSENT and sys.modules[name] is not None)
print(json.dumps({{"model": type(vqvae).__name__, "loaded": loaded}}))
"""


def save_tiny_vqvae2_and_pipeline(root: Path) -> list[tuple[int, int]]:
    """A tiny untrained two-level VQ-VAE-2 (root/vqvae2, with its image processor) and a pipeline over it with
    class-conditional (10 classes) PixelCNN priors (root/pipeline); returns the levels' code shapes, top first."""
    torch.manual_seed(0)
    config = VQVAE2Config(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                          num_residual_blocks=1, level_downsamples=[1, 1], num_embeddings=16, embedding_dim=4)
    vqvae = VQVAE2Model(config).eval()
    shapes = [tuple(shape) for shape in config.latent_shapes()]
    prior = dict(num_embeddings=16, hidden_channels=8, num_layers=2, num_classes=10)
    top = PixelCNNPriorModel(PixelCNNPriorConfig(**prior, code_shape=list(shapes[0]))).eval()
    bottom = PixelCNNPriorModel(PixelCNNPriorConfig(**prior, code_shape=list(shapes[1]), condition_num_embeddings=16,
                                                    condition_hidden_channels=8, condition_num_residual_blocks=1))
    vqvae.save_pretrained(root / "vqvae2")
    VQImageProcessor.from_model_config(config).save_pretrained(root / "vqvae2")
    VQVAE2Pipeline(vqvae=vqvae, prior_level_0=top, prior_level_1=bottom.eval()).save_pretrained(root / "pipeline")
    return shapes


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny VQ-VAE-2 and pipeline, saved, and inputs for them: pixels and codes of each level."""
    root = tmp_path_factory.mktemp("lean")
    top_shape, bottom_shape = save_tiny_vqvae2_and_pipeline(root)
    generator = torch.Generator().manual_seed(1)
    save_file({"pixels": torch.rand(2, 1, 16, 16, generator=generator) * 2 - 1,
               "codes_0": torch.randint(0, 16, (2, *top_shape), generator=generator),
               "codes_1": torch.randint(0, 16, (2, *bottom_shape), generator=generator)},
              root / "inputs.safetensors")  # fmt: skip
    return root


def _expected(root: Path) -> dict:
    """What the lean process must compute, computed here (every package importable)."""
    inputs = load_file(root / "inputs.safetensors")
    vqvae = VQVAE2Model.from_pretrained(root / "vqvae2").eval()
    pipe = VQVAE2Pipeline.from_pretrained(root / "pipeline")
    with torch.no_grad():
        codes = vqvae.encode(inputs["pixels"]).codes
        decoded = vqvae.decode_code([inputs["codes_0"], inputs["codes_1"]])
    sample = pipe(1, class_labels=[3], generator=torch.Generator().manual_seed(0), output_type="pt").images
    return {"codes_0": codes[0], "codes_1": codes[1], "decoded": decoded, "sample": sample}


def test_inference_runs_without_the_training_packages(saved, tmp_path):
    script = LEAN_SCRIPT.format(absent=ABSENT_IN_A_BARE_INSTALL, scripts=str(ROOT / "scripts"))
    package_dir = str(Path(hf_vqvae.__file__).resolve().parents[1])  # the hf_vqvae this process tests
    python_path = os.pathsep.join(filter(None, [package_dir, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": python_path}
    result = subprocess.run([sys.executable, "-c", script], cwd=saved, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"model": "VQVAE2Model", "loaded": []}
    got, expected = load_file(saved / "outputs.safetensors"), _expected(saved)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert got["sample"].shape == (1, 1, 16, 16)
    sample_script.main(sample_script.parse_args(["--pipeline", str(saved / "pipeline"), "--num_images", "2",
                                                 "--class_labels", "3", "--device", "cpu",
                                                 "--output", str(tmp_path / "grid.png")]))  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(saved / "grid.png")), np.asarray(Image.open(tmp_path / "grid.png")))


# ------------------------------------------------------------------------------------------------- the Space
def _space_header() -> dict:
    text = (SPACE / "README.md").read_text()
    assert text.startswith("---\n"), "the Space README must open with its YAML header"
    return yaml.safe_load(text.split("---\n")[1])


def _space_requirements() -> tuple[list[str], list[Requirement]]:
    options, requirements = [], []
    for line in (SPACE / "requirements.txt").read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        (options if line.startswith("-") else requirements).append(line if line.startswith("-") else Requirement(line))
    return options, requirements


def test_space_header_pins_python_and_gradio_within_the_project_ranges():
    header = _space_header()
    python = header["python_version"]
    # Quoted: an unquoted 3.10 is the float 3.1 in YAML.
    assert isinstance(python, str) and re.fullmatch(r"3\.\d+(\.\d+)?", python), f"python_version {python!r}"
    requires = PROJECT["requires-python"]
    assert SpecifierSet(requires).contains(python), f"python_version {python} is outside requires-python {requires}"
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py"
    gradio = next(Requirement(r) for r in PROJECT["optional-dependencies"]["demo"] if Requirement(r).name == "gradio")
    assert gradio.specifier.contains(str(header["sdk_version"])), f"sdk_version {header['sdk_version']} vs {gradio}"
    assert header["license"] == PROJECT["license"].lower()


def test_space_requirements_install_the_package_and_a_cpu_torch_but_not_gradio_again():
    options, requirements = _space_requirements()
    names = [_normalize(requirement.name) for requirement in requirements]
    assert len(names) == len(set(names)), f"a requirement is listed twice: {names}"
    assert not {"gradio", "gradio-client"} & set(names), "sdk_version in README.md pins gradio; do not list it again"
    assert not TRAINING_ONLY & set(names), "the Space runs inference only"
    package = requirements[names.index("hf-vqvae")]
    assert package.url == f"git+{PROJECT['urls']['Repository']}" and not package.extras  # the base install
    torch_requirement = requirements[names.index("torch")]
    base_torch = next(Requirement(r) for r in PROJECT["dependencies"] if Requirement(r).name == "torch")
    assert torch_requirement.specifier == base_torch.specifier
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in options, "a CPU Space takes torch's CPU wheels"
    # Everything app.py imports comes from the package's base install or the Space's own gradio.
    used = _closure([SPACE / "app.py"])
    assert not _undeclared(used, BASE | {"gradio"}), _undeclared(used, BASE | {"gradio"})
