"""Auto classes, loading by Hub repo id from an offline cache, and trust_remote_code without the package."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoImageProcessor, AutoModel

import hf_vqvae
from hf_vqvae import VQImageProcessor, VQVAE2Config, VQVAE2Model, VQVAEConfig, VQVAEModel

REPO_ID = "org/vqvae2-imagenet"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _tiny_vqvae2():
    config = VQVAE2Config(image_size=32, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                          level_downsamples=[1, 2], num_embeddings=32, embedding_dim=8)  # fmt: skip
    torch.manual_seed(0)
    return VQVAE2Model(config).eval()


def _save_model_folder(folder):
    model = _tiny_vqvae2()
    model.save_pretrained(folder)
    VQImageProcessor.from_model_config(model.config).save_pretrained(folder)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        output = model(pixels)
    return model, pixels, output


def _write_hub_cache(cache, source_folder):
    """The layout huggingface_hub reads offline: refs/main holds the sha (no newline), snapshots/<sha>/ the files."""
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    snapshot = repo / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    for path in source_folder.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())


def _run(script, env_updates, tmp_path):
    env = {**os.environ, **env_updates, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


LOAD_AND_RUN = """
import sys, torch
from safetensors.torch import load_file, save_file
{preamble}
from transformers import AutoModel
model = AutoModel.from_pretrained({source!r}{extra}).eval()
pixels = load_file("inputs.safetensors")["pixels"]
with torch.no_grad():
    output = model(pixels)
save_file({{"reconstruction": output.reconstruction.contiguous(),
           **{{f"codes_{{i}}": c for i, c in enumerate(output.codes)}}}}, "outputs.safetensors")
print(type(model).__module__, type(model).__name__)
"""

BLOCK_PACKAGE = """
sys.modules["hf_vqvae"] = None  # make the package unimportable in this process
try:
    import hf_vqvae
    raise SystemExit("hf_vqvae should not be importable here")
except ImportError:
    pass
"""


def _check_outputs(tmp_path, expected):
    got = load_file(tmp_path / "outputs.safetensors")
    assert torch.equal(got["reconstruction"], expected.reconstruction)
    for level, codes in enumerate(expected.codes):
        assert torch.equal(got[f"codes_{level}"], codes)


def test_auto_classes_are_registered():
    config = AutoConfig.for_model("vqvae2", image_size=32, hidden_channels=16, residual_channels=8)
    assert isinstance(config, VQVAE2Config)
    assert isinstance(AutoModel.from_config(VQVAEConfig(image_size=16, hidden_channels=8)), VQVAEModel)


def test_saved_folder_holds_config_weights_processor_and_remote_code(tmp_path):
    _save_model_folder(tmp_path)
    names = {path.name for path in tmp_path.iterdir()}
    expected = {"config.json", "model.safetensors", "preprocessor_config.json", "configuration_vqvae.py",
                "modeling_vqvae.py", "blocks.py", "quantizer.py"}  # fmt: skip
    assert expected <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vqvae2"
    assert config["auto_map"] == {"AutoConfig": "configuration_vqvae.VQVAE2Config",
                                  "AutoModel": "modeling_vqvae.VQVAE2Model"}  # fmt: skip
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, VQImageProcessor) and processor.size == [32, 32]


def test_load_by_repo_id_offline_then_with_remote_code_and_no_package(tmp_path):
    folder = tmp_path / "saved"
    _model, pixels, expected = _save_model_folder(folder)
    save_file({"pixels": pixels}, tmp_path / "inputs.safetensors")
    cache = tmp_path / "hub"
    _write_hub_cache(cache, folder)

    # 1. A fresh process with the package: AutoModel resolves the repo id from the offline cache.
    script = LOAD_AND_RUN.format(preamble="import hf_vqvae", source=REPO_ID, extra="")
    stdout = _run(script, {"HF_HUB_CACHE": str(cache)}, tmp_path)
    assert "hf_vqvae.models.vqvae.modeling_vqvae VQVAE2Model" in stdout
    _check_outputs(tmp_path, expected)

    # 2. A fresh process where hf_vqvae cannot be imported: the folder's own code is used.
    (tmp_path / "outputs.safetensors").unlink()
    script = LOAD_AND_RUN.format(preamble=BLOCK_PACKAGE, source=REPO_ID, extra=", trust_remote_code=True")
    stdout = _run(script, {"HF_HUB_CACHE": str(cache)}, tmp_path)
    assert "transformers_modules" in stdout and "VQVAE2Model" in stdout
    _check_outputs(tmp_path, expected)


def test_package_surface():
    assert {"VAEConfig", "VAEModel", "VQVAEConfig", "VQVAEModel", "VQVAE2Config", "VQVAE2Model",
            "VectorQuantizer", "VQImageProcessor", "list_presets"} <= set(hf_vqvae.__all__)  # fmt: skip
    for name in hf_vqvae.__all__:
        assert getattr(hf_vqvae, name) is not None


@pytest.mark.parametrize("broken", ["missing", "truncated"])
def test_broken_weights_file_gives_a_clear_error(tmp_path, broken):
    model = _tiny_vqvae2()
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    if broken == "missing":
        weights.unlink()
        match = "no model.safetensors"
    else:
        weights.write_bytes(weights.read_bytes()[:100])
        match = "truncated or corrupt"
    with pytest.raises(ValueError, match=match):
        VQVAE2Model.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=match):
        AutoModel.from_pretrained(tmp_path)


def test_config_of_another_model_type_is_refused(tmp_path):
    VQVAEModel(VQVAEConfig(image_size=16, hidden_channels=8)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'vqvae', not 'vqvae2'"):
        VQVAE2Model.from_pretrained(tmp_path)
