"""Publishing: model cards from a training run, push_to_hub dry run and (patched) upload, loading by repo id."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import extract_codes  # noqa: E402
import push_to_hub  # noqa: E402
import sample as sample_script  # noqa: E402
import train as train_script  # noqa: E402

from hf_vqvae.hub import assemble_repo_folder  # noqa: E402

TINY_VQ = ["--model", "vqvae", "--preset", "mnist", "--resolution", "8", "--num_downsamples", "1",
           "--hidden_channels", "16", "--residual_channels", "8", "--num_embeddings", "32", "--embedding_dim", "4",
           "--train_batch_size", "16", "--report_to", "none", "--lr_warmup_steps", "2", "--max_train_steps", "4",
           "--checkpointing_steps", "2", "--image_logging_steps", "2"]  # fmt: skip
TINY_PRIOR = ["--model", "pixelcnn-prior", "--preset", "mnist", "--level", "0", "--train_batch_size", "16",
              "--max_train_steps", "3", "--report_to", "none", "--hidden_channels", "8", "--num_layers", "2",
              "--adam_weight_decay", "0.3"]  # fmt: skip
MODEL_FILES = {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "metrics.json",
               "reconstructions.png", "configuration_vqvae.py", "modeling_vqvae.py", "blocks.py", "quantizer.py",
               "image_processing.py", "config_helpers.py", "modeling_helpers.py"}  # fmt: skip
PRIOR_FILES = {"config.json", "model.safetensors", "metrics.json", "codes_info.json", "configuration_pixelcnn_prior.py",
               "modeling_pixelcnn_prior.py", "layers.py", "sampling.py", "config_helpers.py", "modeling_helpers.py"}  # fmt: skip
SHA = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny VQ-VAE run (with checkpoints and logs that must not be published), a prior on its codes, a pipeline."""
    root = tmp_path_factory.mktemp("runs")
    metrics = train_script.main(train_script.parse_args([*TINY_VQ, "--output_dir", str(root / "vqvae")]))
    extract_codes.main(extract_codes.parse_args(["--model", str(root / "vqvae"), "--output_dir", str(root / "codes"),
                                                 "--max_samples", "64"]))  # fmt: skip
    train_script.main(train_script.parse_args([*TINY_PRIOR, "--codes_dataset", str(root / "codes"),
                                               "--output_dir", str(root / "prior")]))  # fmt: skip
    sample_script.main(sample_script.parse_args(["--vqvae", str(root / "vqvae"), "--priors", str(root / "prior"),
                                                 "--num_images", "1", "--class_labels", "1", "--output",
                                                 str(root / "grid.png"), "--save_pipeline", str(root / "pipeline")]))  # fmt: skip
    return root, metrics


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_card_of_a_training_run_has_metadata_metrics_and_valid_yaml(runs):
    root, metrics = runs
    text = (root / "vqvae" / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and "custom_code" in meta["tags"] and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-to-image" and {"hf_vqvae", "vqvae"} <= set(meta["tags"])
    card = ModelCard(text, ignore_metadata_errors=False)  # parses the YAML and the model-index strictly
    by_type = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert by_type["mse"] == pytest.approx(metrics["mse"], rel=1e-5)
    assert by_type["codebook_usage"] == pytest.approx(metrics["codebook_usage_level_0"])
    assert {result.dataset_name for result in card.data.eval_results} == {"sklearn-digits"}
    for section in ("## Model", "## Training", "## Results", "## Usage", "## Limitations", "## Citation"):
        assert section in text, section
    assert f"{metrics['psnr']:.5g}" in text and "4 optimizer steps, batch 16" in text
    assert "learning rate 0.0002, precision no" in text  # no weight decay, so none named
    assert "![reconstructions](reconstructions.png)" in text and "vandenoord2017neural" in text
    assert "| codebook size K | 32 |" in text


def test_the_prior_card_reports_nats_and_bits(runs):
    root, _ = runs
    text = (root / "prior" / "README.md").read_text()
    card = ModelCard(text, ignore_metadata_errors=False)
    prior_metrics = json.loads((root / "prior" / "metrics.json").read_text())
    by_type = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert by_type["nll"] == pytest.approx(prior_metrics["nll_nats_per_code"], rel=1e-5)
    assert by_type["bits_per_dim"] == pytest.approx(prior_metrics["bits_per_dim"], rel=1e-5)
    assert card.data.pipeline_tag == "unconditional-image-generation" and "vandenoord2016conditional" in text
    assert prior_metrics["training"]["weight_decay"] == 0.3 and "weight decay 0.3, precision no" in text


def test_dry_run_assembles_exactly_the_published_files_and_validates(runs, tmp_path, capsys):
    root, _ = runs
    assert (root / "vqvae" / "checkpoints").is_dir()  # present in the run, never published
    result = push_to_hub.main(push_to_hub.parse_args([str(root / "vqvae"), "--repo_id", "org/tiny-vqvae", "--dry_run",
                                                      "--staging_dir", str(tmp_path / "repo")]))  # fmt: skip
    assert {file.path for file in result["files"]} == MODEL_FILES
    # validated without hf_vqvae: the model and its processor load from the folder's code
    validation = {"kind": "VQVAEModel", "output_shape": [1, 1, 8, 8], "image_processor": "VQImageProcessor"}
    assert result["validation"] == validation
    assert result["uploaded"] is None
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "13 files" in out and "dry run: nothing uploaded" in out
    card = (tmp_path / "repo" / "README.md").read_text()
    assert 'AutoModel.from_pretrained("org/tiny-vqvae")' in card and "name: org/tiny-vqvae" in card


def test_dry_run_of_a_pipeline_has_the_index_and_component_folders(runs, tmp_path):
    root, _ = runs
    result = push_to_hub.main(push_to_hub.parse_args([str(root / "pipeline"), "--repo_id", "org/tiny-pipeline",
                                                      "--dry_run", "--staging_dir", str(tmp_path / "repo")]))  # fmt: skip
    # Component folders hold what VQVAE2Pipeline.save_pretrained wrote: weights, config and model code (also joined
    # into the one module diffusers downloads from a Hub repo); the root the pipeline's code.
    expected = {"model_index.json", "README.md", "vqvae2_pipeline.py", "codes_source.py", "standalone_code.py"}
    expected |= {"vqvae/modeling_vqvae_standalone.py", "prior_level_0/modeling_pixelcnn_prior_standalone.py"}
    expected |= {f"vqvae/{name}" for name in MODEL_FILES if name.endswith((".py", ".json", ".safetensors"))}
    expected |= {f"prior_level_0/{name}" for name in PRIOR_FILES if name.endswith((".py", ".safetensors"))}
    expected -= {"vqvae/metrics.json", "vqvae/preprocessor_config.json", "vqvae/image_processing.py"}
    expected |= {"prior_level_0/config.json"}
    assert {file.path for file in result["files"]} == expected
    assert result["validation"]["kind"] == "pipeline" and result["validation"]["output_shape"] == [1, 8, 8, 1]
    card = ModelCard.load(tmp_path / "repo" / "README.md")  # diffusers loads it, with the repo's own code
    assert card.data.library_name == "diffusers" and "custom_code" in card.data.tags
    assert 'DiffusionPipeline.from_pretrained("org/tiny-pipeline", trust_remote_code=True)' in card.text


def test_upload_creates_the_repo_and_uploads_the_validated_folder(runs, tmp_path, monkeypatch):
    root, _ = runs
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw)))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: calls.append(("create_branch", repo_id, kw)))

    def upload_folder(self, **kw):
        calls.append(("upload_folder", kw["repo_id"], {**kw, "files": sorted(p.name for p in Path(kw["folder_path"]).iterdir())}))
        return "commit-url"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    result = push_to_hub.main(push_to_hub.parse_args([str(root / "vqvae"), "--repo_id", "org/tiny-vqvae", "--private",
                                                      "--revision", "v1", "--skip_validation"]))  # fmt: skip
    assert result["uploaded"] == "commit-url"
    assert [call[0] for call in calls] == ["create_repo", "create_branch", "upload_folder"]
    assert calls[0][1:] == ("org/tiny-vqvae", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls[1][2] == {"branch": "v1", "exist_ok": True}
    upload = calls[2][2]
    assert upload["revision"] == "v1" and upload["create_pr"] is False and upload["files"] == sorted(MODEL_FILES)

    calls.clear()
    push_to_hub.main(push_to_hub.parse_args([str(root / "vqvae"), "--repo_id", "org/tiny-vqvae", "--create_pr",
                                             "--skip_validation"]))  # fmt: skip
    assert [call[0] for call in calls] == ["create_repo", "upload_folder"] and calls[1][2]["create_pr"] is True


def test_bad_runs_and_repo_ids_are_refused_clearly(runs, tmp_path, capsys):
    root, _ = runs
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((root / "vqvae" / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not used")
    with pytest.raises(ValueError, match=r"no safetensors weights \(only pytorch_model.bin\)"):
        assemble_repo_folder(pickled, tmp_path / "out", "org/x")
    with pytest.raises(SystemExit, match="holds neither config.json"):
        push_to_hub.main(push_to_hub.parse_args([str(tmp_path / "out"), "--repo_id", "org/x", "--dry_run"]))
    with pytest.raises(SystemExit):
        push_to_hub.parse_args([str(root / "vqvae"), "--repo_id", "not a repo id"])
    assert "--repo_id must look like namespace/name" in capsys.readouterr().err


def _hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    snapshot = repo / "snapshots" / SHA
    for path in folder.rglob("*"):
        if path.is_file():
            (snapshot / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / path.relative_to(folder)).write_bytes(path.read_bytes())


LOAD_BY_REPO_ID = """
import torch, hf_vqvae
from transformers import AutoModel
from hf_vqvae import VQVAE2Pipeline
model = AutoModel.from_pretrained("org/tiny-vqvae")
pipe = VQVAE2Pipeline.from_pretrained("org/tiny-pipeline")
image = pipe(1, class_labels=[3], generator=torch.Generator().manual_seed(0)).images[0]
image.save("sample.png")
print(type(model).__name__, type(pipe.prior_level_0).__name__, image.size)
"""

# A user who never installed hf_vqvae: the repos' own code, through transformers' and diffusers' Auto loading.
LOAD_BY_REPO_ID_WITHOUT_PACKAGE = """
import sys
sys.modules["hf_vqvae"] = None  # unimportable in this process
import torch
from diffusers import DiffusionPipeline
from transformers import AutoImageProcessor, AutoModel
model = AutoModel.from_pretrained("org/tiny-vqvae", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("org/tiny-vqvae", trust_remote_code=True)
pipe = DiffusionPipeline.from_pretrained("org/tiny-pipeline", trust_remote_code=True)
image = pipe(1, class_labels=[3], generator=torch.Generator().manual_seed(0)).images[0]
image.save("sample_remote.png")
print(type(model).__module__.split(".")[0], type(processor).__name__, type(pipe).__module__, image.size)
"""


def test_model_and_pipeline_load_by_repo_id_offline_in_a_fresh_process(runs, tmp_path):
    root, _ = runs
    cache = tmp_path / "hub"
    for run, repo_id in (("vqvae", "org/tiny-vqvae"), ("pipeline", "org/tiny-pipeline")):
        push_to_hub.main(push_to_hub.parse_args([str(root / run), "--repo_id", repo_id, "--dry_run", "--skip_validation",
                                                 "--staging_dir", str(tmp_path / run)]))  # fmt: skip
        _hub_cache(cache, repo_id, tmp_path / run)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", LOAD_BY_REPO_ID], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VQVAEModel PixelCNNPriorModel (8, 8)" in result.stdout
    assert (tmp_path / "sample.png").is_file()

    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run([sys.executable, "-c", LOAD_BY_REPO_ID_WITHOUT_PACKAGE], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules VQImageProcessor diffusers_modules.local.vqvae2_pipeline (8, 8)" in result.stdout
    assert (tmp_path / "sample_remote.png").read_bytes() == (tmp_path / "sample.png").read_bytes()


def test_fine_tune_cards_name_their_base_model_and_keep_machine_paths_out(tmp_path):
    from hf_vqvae import VAEConfig
    from hf_vqvae.cards import render_model_card

    config = VAEConfig.from_preset("mnist-paper")
    training = {"dataset": str(tmp_path), "steps": 10, "batch_size": 4, "base_model": "org/vae-mnist"}
    card = render_model_card(config, {"elbo": -90.5, "nll": 88.25}, training, repo_id="org/vae-finetuned")
    assert card.data.base_model == "org/vae-mnist" and "fine-tuned from [`org/vae-mnist`]" in card.text
    assert str(tmp_path) not in str(card) and f"`{tmp_path.name}`" in card.text
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"elbo": -90.5, "nll": 88.25}
    local = render_model_card(config, {}, {**training, "base_model": str(tmp_path / "run")})
    assert local.data.base_model is None and "fine-tuned from `run`" in local.text
    with pytest.raises(ValueError, match="unknown model family 'gan'; hf_vqvae knows: vae"):
        from hf_vqvae.cards import family

        family("gan")
