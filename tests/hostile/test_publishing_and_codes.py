"""Issue 13, points 7, 8 and 9 (a prior paired with another VQ model): publishing only what belongs in the repo,
code extraction that never mixes, duplicates, wraps or overwrites, and priors that remember their codes' source."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import HfApi

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import extract_codes  # noqa: E402
import push_to_hub  # noqa: E402
import sample as sample_script  # noqa: E402
import train as train_script  # noqa: E402

from hf_vqvae import PixelCNNPriorModel, VQVAE2Pipeline, VQVAEConfig, VQVAEModel  # noqa: E402
from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits  # noqa: E402
from hf_vqvae.data.codes import code_dtype, load_codes  # noqa: E402
from hf_vqvae.hub import assemble_repo_folder, remote_code_files  # noqa: E402
from hf_vqvae.pipelines.codes_source import codebook_matches  # noqa: E402

VQ_CODE = {"configuration_vqvae.py", "modeling_vqvae.py", "blocks.py", "quantizer.py", "config_helpers.py", "modeling_helpers.py"}
SECRET = "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"


def _tiny_vq(seed: int, num_embeddings: int = 16, embedding_dim: int = 4) -> VQVAEModel:
    torch.manual_seed(seed)
    config = VQVAEConfig(num_channels=1, image_size=8, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                         num_downsamples=1, num_embeddings=num_embeddings, embedding_dim=embedding_dim)  # fmt: skip
    return VQVAEModel(config).eval()


@pytest.fixture(scope="module")
def vq_models(tmp_path_factory):
    """Two VQ-VAEs of the same architecture (K = 16, 4x4 codes) and different weights, saved with their code."""
    root = tmp_path_factory.mktemp("vq")
    for name, seed in (("vq_a", 0), ("vq_b", 1)):
        _tiny_vq(seed).save_pretrained(root / name)
    return root / "vq_a", root / "vq_b"


def _extract(model: Path, output: Path, *extra: str) -> Path:
    return extract_codes.main(extract_codes.parse_args(["--model", str(model), "--output_dir", str(output),
                                                        "--splits", "train", "--batch_size", "8", *extra]))  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in files}


# ------------------------------------------------------------------------------------------- 7. push_to_hub


def test_only_the_auto_map_code_and_its_imports_are_staged_and_uploaded(vq_models, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(vq_models[0], run)
    (run / "my_notes.py").write_text(f'HF_TOKEN = "{SECRET}"\n')
    (run / "train_helper.py").write_text("from .quantizer import VectorQuantizer\n")  # imports ours, imported by none
    uploaded = {}

    def upload_folder(self, **kwargs):
        uploaded.update(_snapshot(Path(kwargs["folder_path"])))
        return "commit-url"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    result = push_to_hub.main(push_to_hub.parse_args([str(run), "--repo_id", "org/tiny", "--skip_validation",
                                                      "--staging_dir", str(tmp_path / "staging")]))  # fmt: skip
    published = {file.path for file in result["files"]}
    assert {name for name in published if name.endswith(".py")} == VQ_CODE
    assert set(uploaded) == published and result["uploaded"] == "commit-url"
    assert {path.name for path in (tmp_path / "staging").iterdir()} == published
    assert not any(SECRET.encode() in content for content in uploaded.values())


def test_remote_code_follows_auto_map_and_same_folder_imports_transitively(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    auto_map = {"AutoConfig": "configuration_x.XConfig", "AutoModel": ["modeling_x.XModel", None],
                "AutoImageProcessor": "other/repo--processing_x.XProcessor"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps({"auto_map": auto_map}))
    (folder / "configuration_x.py").write_text("from transformers import PreTrainedConfig\n")
    (folder / "modeling_x.py").write_text('"""from .notes import nothing: a docstring, not an import"""\n'
                                          "from .helpers import helper\nfrom . import layers\n")  # fmt: skip
    (folder / "helpers.py").write_text("from .deep import deep\nfrom ..outside import x\n")
    (folder / "deep.py").write_text("deep = 1\n")
    (folder / "layers.py").write_text("layer = 1\n")
    (folder / "notes.py").write_text(f"TOKEN = '{SECRET}'\n")
    names = [path.name for path in remote_code_files(folder)]
    assert names == ["configuration_x.py", "deep.py", "helpers.py", "layers.py", "modeling_x.py"]

    (folder / "deep.py").unlink()
    with pytest.raises(ValueError, match=r"helpers.py needs deep.py, which is missing from .*would not load"):
        remote_code_files(folder)
    (folder / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "../../etc/modeling.X"}}))
    with pytest.raises(ValueError, match=r"auto_map reference '../../etc/modeling.X' does not name a module"):
        remote_code_files(folder)


def _pipeline_folder(root: Path, vq: Path, component: str) -> Path:
    pipeline = root / "pipeline"
    shutil.copytree(vq, pipeline / "vqvae")
    index = {"_class_name": "VQVAE2Pipeline", "_diffusers_version": "0.42.1", "vqvae": ["hf_vqvae", "VQVAEModel"],
             component: ["hf_vqvae", "PixelCNNPriorModel"]}  # fmt: skip
    (pipeline / "model_index.json").write_text(json.dumps(index))
    return pipeline


def test_a_component_outside_the_pipeline_folder_is_refused_before_anything_is_read_or_written(vq_models, tmp_path):
    pipeline = _pipeline_folder(tmp_path, vq_models[0], "../victim_src")
    victim_src = tmp_path / "victim_src"  # what "../victim_src" reaches from the pipeline folder
    shutil.copytree(vq_models[1], victim_src)
    (victim_src / "private.py").write_text(f"TOKEN = '{SECRET}'\n")
    staging = tmp_path / "stage" / "repo"
    staging.parent.mkdir()
    (tmp_path / "stage" / "victim_src").mkdir()  # what "../victim_src" reaches from the staging folder
    (tmp_path / "stage" / "victim_src" / "keep.txt").write_text("untouched")
    before = _snapshot(tmp_path)
    command = [sys.executable, str(ROOT / "scripts" / "push_to_hub.py"), str(pipeline), "--repo_id", "org/pipe",
               "--dry_run", "--skip_validation", "--staging_dir", str(staging)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "push_to_hub:" in result.stderr and "names the component(s) ['../victim_src']" in result.stderr
    assert "not plain folder names" in result.stderr and "Traceback" not in result.stderr
    assert not staging.exists() and _snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["/tmp/abs", "a/b", "a\\b", ".hidden", "..", "."])
def test_every_component_name_that_is_not_a_plain_folder_name_is_refused(vq_models, tmp_path, name):
    pipeline = _pipeline_folder(tmp_path, vq_models[0], name)
    with pytest.raises(ValueError, match="not plain folder names"):
        assemble_repo_folder(pipeline, tmp_path / "staging", "org/pipe")
    assert not (tmp_path / "staging").exists()


# ----------------------------------------------------------------------------------------- 8. extract_codes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(folder: Path) -> list[tuple[bytes, int]]:
    dataset, _ = load_codes(folder)
    return sorted((np.asarray(row["codes_0"]).tobytes(), row["label"]) for row in dataset["train"])


def test_two_cpu_processes_encode_disjoint_halves_and_write_every_row_once(vq_models, tmp_path):
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(_free_port()), str(ROOT / "scripts" / "extract_codes.py"), "--model", str(vq_models[0]),
               "--output_dir", str(tmp_path / "two"), "--splits", "train", "--max_samples", "30",
               "--batch_size", "8"]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    _extract(vq_models[0], tmp_path / "one", "--max_samples", "30")

    shards = sorted((tmp_path / "two" / "data").iterdir())
    assert [path.name for path in shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert [pq.ParquetFile(path).metadata.num_rows for path in shards] == [15, 15]  # each process encoded half
    assert json.loads((tmp_path / "two" / "codes_info.json").read_text())["splits"] == {"train": 30}
    rows = _rows(tmp_path / "two")
    assert len(rows) == 30 and rows == _rows(tmp_path / "one")  # the dataset's rows, each exactly once


def test_an_earlier_extraction_is_refused_then_replaced_with_overwrite_never_mixed(vq_models, tmp_path):
    codes = _extract(vq_models[0], tmp_path / "codes", "--max_samples", "24")
    data = codes / "data"
    for rank in range(3):  # the shards an earlier 3-process extraction left
        shutil.copy(data / "train-00000-of-00001.parquet", data / f"train-{rank:05d}-of-00003.parquet")
    before = _snapshot(codes)
    with pytest.raises(ValueError, match=r"is not empty \(6 file\(s\).*mixed.*pass --overwrite"):
        _extract(vq_models[1], codes, "--max_samples", "12")
    assert _snapshot(codes) == before

    _extract(vq_models[1], codes, "--max_samples", "12", "--overwrite")
    dataset, info = load_codes(codes)
    assert [path.name for path in data.iterdir()] == ["train-00000-of-00001.parquet"]
    assert dataset["train"].num_rows == info.splits["train"] == 12 and info.model == str(vq_models[1])

    (codes / "my_notes.txt").write_text("keep me")
    before = _snapshot(codes)
    with pytest.raises(ValueError, match=r"--overwrite replaces only a codes dataset.*my_notes.txt.*nothing was del"):
        _extract(vq_models[0], codes, "--max_samples", "12", "--overwrite")
    assert _snapshot(codes) == before


def test_a_model_folder_is_never_an_output_dir(vq_models, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(vq_models[0], model)
    (model / "README.md").write_text("# The model card\n")
    before = _snapshot(model)
    for extra in ([], ["--overwrite"]):
        with pytest.raises(ValueError, match=r"holds a model \(config.json, model.safetensors\).*overwrite its README"):
            _extract(vq_models[0], model, *extra)
    assert _snapshot(model) == before


def test_codes_above_int16_are_stored_as_int32_and_round_trip(tmp_path):
    assert (code_dtype(32768), code_dtype(32769)) == ("int16", "int32")
    model = _tiny_vq(0, num_embeddings=40000, embedding_dim=2)
    with torch.no_grad():
        model.quantizers[0].codebook[:32768] = 1e4  # every nearest code is then >= 32768
    model.save_pretrained(tmp_path / "big")
    dataset, _ = load_codes(_extract(tmp_path / "big", tmp_path / "codes", "--max_samples", "8"))
    assert dataset["train"].features["codes_0"].dtype == "int32"
    stored = torch.as_tensor(np.asarray(dataset["train"].with_format("numpy")["codes_0"], dtype=np.int64))
    images = next(batches_for_rank(load_image_splits(DataArguments(max_train_samples=8)).train, "image",
                                   ImageTransform(8, 1), batch_size=8, seed=0, epoch=0, shuffle=False,
                                   drop_last=False))  # fmt: skip
    with torch.no_grad():
        expected = model.encode(images["pixel_values"]).codes[0]
    assert int(stored.min()) >= 32768 and torch.equal(stored, expected)


# ------------------------------------------------------------------------ 9. a prior and its codes' VQ model


@pytest.fixture(scope="module")
def prior_of_a(vq_models, tmp_path_factory):
    """A prior trained (1 step) on the codes of vq_a."""
    root = tmp_path_factory.mktemp("prior")
    _extract(vq_models[0], root / "codes", "--max_samples", "16")
    train_script.main(train_script.parse_args([
        "--model", "pixelcnn-prior", "--preset", "mnist", "--level", "0", "--codes_dataset", str(root / "codes"),
        "--train_batch_size", "8", "--max_train_steps", "1", "--report_to", "none", "--hidden_channels", "8",
        "--num_layers", "1", "--output_dir", str(root / "prior"),
    ]))  # fmt: skip
    return root


def test_the_prior_records_the_vq_model_its_codes_came_from(vq_models, prior_of_a):
    info = json.loads((prior_of_a / "codes" / "codes_info.json").read_text())
    prior = PixelCNNPriorModel.from_pretrained(prior_of_a / "prior")
    assert prior.config.codes_source == {"model": str(vq_models[0]), "codebook_sha256": info["codebook_sha256"]}
    a, b = (VQVAEModel.from_pretrained(path) for path in vq_models)
    assert codebook_matches(a, info["codebook_sha256"]) and not codebook_matches(b, info["codebook_sha256"])
    # the same model loaded in half precision still matches; the other one still does not
    assert codebook_matches(a.to(torch.float16), info["codebook_sha256"])
    assert codebook_matches(b.to(torch.bfloat16), info["codebook_sha256"]) is False


def test_a_prior_is_refused_with_another_vq_model_of_the_same_k_and_shape(vq_models, prior_of_a, tmp_path):
    vq_a, vq_b = vq_models
    prior = PixelCNNPriorModel.from_pretrained(prior_of_a / "prior")
    other = VQVAEModel.from_pretrained(vq_b)
    assert other.config.num_embeddings == prior.config.num_embeddings and other.config.latent_shapes() == [(4, 4)]
    message = (rf"prior_level_0 \(.*prior\) was trained on codes of the VQ model '{re.escape(str(vq_a))}', but the "
               rf"VQ model given is '{re.escape(str(vq_b))}'")
    with pytest.raises(ValueError, match=message):
        VQVAE2Pipeline(vqvae=other, prior_level_0=prior)
    with pytest.raises(ValueError, match=message):  # scripts/sample.py assembles the same pipeline
        sample_script.main(sample_script.parse_args(["--vqvae", str(vq_b), "--priors", str(prior_of_a / "prior"),
                                                     "--num_images", "1", "--class_labels", "0",
                                                     "--output", str(tmp_path / "grid.png")]))  # fmt: skip
    assert not (tmp_path / "grid.png").exists()

    # The right pair samples, saves and loads; a saved pipeline whose vqvae/ was swapped is refused on loading.
    pipe = VQVAE2Pipeline(vqvae=VQVAEModel.from_pretrained(vq_a), prior_level_0=prior)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = VQVAE2Pipeline.from_pretrained(tmp_path / "pipe")
    assert loaded(1, class_labels=[0], output_type="np").images.shape == (1, 8, 8, 1)
    shutil.copy(vq_b / "model.safetensors", tmp_path / "pipe" / "vqvae" / "model.safetensors")
    swapped = re.escape(str(tmp_path / "pipe" / "vqvae"))
    with pytest.raises(ValueError, match=rf"'{swapped}', whose codebook is not the one"):
        VQVAE2Pipeline.from_pretrained(tmp_path / "pipe")


def test_a_vq_model_retrained_in_place_is_named_as_such(vq_models, prior_of_a, tmp_path):
    retrained = tmp_path / "vq_a"
    shutil.copytree(vq_models[0], retrained)
    prior = PixelCNNPriorModel.from_pretrained(prior_of_a / "prior")
    prior.config.codes_source = {**prior.config.codes_source, "model": str(retrained)}
    shutil.copy(vq_models[1] / "model.safetensors", retrained / "model.safetensors")
    with pytest.raises(ValueError, match=r"now holds another codebook \(it was retrained or overwritten"):
        VQVAE2Pipeline(vqvae=VQVAEModel.from_pretrained(retrained), prior_level_0=prior)
