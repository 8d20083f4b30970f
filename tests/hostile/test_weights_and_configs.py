"""Issue 13, point 6 (wrong or missing weights loaded silently as random values) and the config part of point 9
(NaN / infinite floats, strings for numbers, bools for numbers and absurd sizes accepted or failing with raw errors)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

from hf_vqvae import VAEConfig, VAEModel, VectorQuantizer, VQVAE2Config, VQVAEConfig, VQVAEModel
from hf_vqvae.models.pixelcnn_prior import PixelCNNPriorConfig, PixelCNNPriorModel
from hf_vqvae.models.transformer_prior import TransformerPriorConfig, TransformerPriorModel

ROOT = Path(__file__).resolve().parents[2]
TINY_VQ = dict(num_channels=1, image_size=8, hidden_channels=8, residual_channels=4, num_residual_blocks=1,
               num_downsamples=1, num_embeddings=8, embedding_dim=4)  # fmt: skip
DECODER_KEYS = ["decoder.blocks.0.bias", "decoder.blocks.0.weight", "decoder.blocks.1.conv.1.bias",
                "decoder.blocks.1.conv.1.weight"]  # the first four, sorted, of the 8 decoder tensors  # fmt: skip
MISSING_DECODER = r"8 weight\(s\) of the model missing from the checkpoint \(" + r", ".join(
    key.replace(".", r"\.") for key in DECODER_KEYS
)


def _tiny_vq(**overrides) -> VQVAEModel:
    torch.manual_seed(0)
    model = VQVAEModel(VQVAEConfig(**{**TINY_VQ, **overrides}))
    model.train()
    model(torch.rand(4, 1, 8, 8) * 2 - 1)  # one step of EMA and dead-code statistics, so they differ from their init
    return model.eval()


def _drop_weights(folder: Path, prefix: str) -> None:
    weights = load_file(folder / "model.safetensors")
    kept = {key: value for key, value in weights.items() if not key.startswith(prefix)}
    assert len(kept) < len(weights), f"no weight starts with {prefix!r}"
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A complete tiny VQ-VAE folder, one whose safetensors lack the decoder, and VAE weights under a VQ-VAE config."""
    root = tmp_path_factory.mktemp("weights")
    model = _tiny_vq()
    model.save_pretrained(root / "complete")
    shutil.copytree(root / "complete", root / "no_decoder")
    _drop_weights(root / "no_decoder", "decoder.")
    shutil.copytree(root / "complete", root / "vae_weights")
    VAEModel(VAEConfig(image_size=8, hidden_size=8, latent_dim=2)).save_pretrained(root / "vae")
    shutil.copy(root / "vae" / "model.safetensors", root / "vae_weights" / "model.safetensors")
    return root, model


# ---------------------------------------------------------------------------------------------------- point 6


def test_a_folder_without_the_decoder_weights_is_refused_naming_them(saved):
    root, _ = saved
    for load in (VQVAEModel.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(ValueError, match=MISSING_DECODER + r", \.\.\.\)") as error:
            load(root / "no_decoder")
        assert "pass allow_partial_load=True" in str(error.value)
        assert "come from the same saved model" in str(error.value)


def test_vae_weights_under_a_vqvae_config_are_refused(saved):
    root, _ = saved
    with pytest.raises(ValueError) as error:
        AutoModel.from_pretrained(root / "vae_weights")
    message = str(error.value)
    assert "does not hold the weights of this VQVAEModel" in message
    # 23 of the 24 tensors (a code's steps-since-used counter may be absent: it restarts from zero).
    assert "23 weight(s) of the model missing from the checkpoint (decoder.blocks.0.bias," in message
    assert ("8 weight(s) in the checkpoint that the model does not have (decoder.body.0.bias, decoder.body.0.weight, "
            "decoder.body.2.bias, decoder.body.2.weight, ...)") in message  # fmt: skip


def test_allow_partial_load_loads_the_matching_weights_and_reports_the_rest(saved):
    root, original = saved
    model, info = VQVAEModel.from_pretrained(root / "no_decoder", allow_partial_load=True, output_loading_info=True)
    assert isinstance(model, VQVAEModel)
    assert info["missing_keys"] == {key for key in original.state_dict() if key.startswith("decoder.")}
    assert info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    for key, value in original.state_dict().items():
        loaded = model.state_dict()[key]
        assert torch.equal(loaded, value) != key.startswith("decoder."), f"{key}: loaded iff it is in the file"
    auto = AutoModel.from_pretrained(root / "no_decoder", allow_partial_load=True)  # the keyword reaches the model
    assert torch.equal(auto.encoders[0].blocks[0].weight, original.encoders[0].blocks[0].weight)
    assert isinstance(VQVAEModel.from_pretrained(root / "complete"), VQVAEModel)  # the return shape is unchanged


def test_weights_of_another_shape_are_refused_unless_ignored(saved):
    root, _ = saved
    bigger = VQVAEConfig(**{**TINY_VQ, "num_embeddings": 16})
    expected = r"4 weight\(s\) of another shape \(quantizers\.0\.codebook \(shape \[8, 4\] in the file, \[16, 4\] in"
    with pytest.raises(ValueError, match=expected):
        VQVAEModel.from_pretrained(root / "complete", config=bigger)
    model = VQVAEModel.from_pretrained(root / "complete", config=bigger, ignore_mismatched_sizes=True)
    assert model.quantizers[0].codebook.shape == (16, 4)


@pytest.mark.parametrize("family", ["vae", "pixelcnn_prior", "transformer_prior"])
def test_every_family_refuses_a_missing_weight(tmp_path, family):
    model, dropped = {
        "vae": (lambda: VAEModel(VAEConfig(image_size=8, hidden_size=8, latent_dim=2)), "decoder.body.2.weight"),
        "pixelcnn_prior": (lambda: PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=8, hidden_channels=8,
                                                                          num_layers=1, code_shape=[4, 4])),
                           "head.3.weight"),
        # The untied LM head of the GPT-2 inside: it must not come back random.
        "transformer_prior": (lambda: TransformerPriorModel(TransformerPriorConfig(
            num_embeddings=8, code_shape=[2, 2], n_embd=8, n_layer=1, n_head=2)), "transformer.lm_head.weight"),
    }[family]  # fmt: skip
    model().save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)).__name__ == type(model()).__name__  # complete: loads
    _drop_weights(tmp_path, dropped)
    with pytest.raises(ValueError, match=rf"1 weight\(s\) of the model missing from the checkpoint \({dropped}\)"):
        AutoModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("before, after", [(None, 20), (20, None)])
def test_fine_tuning_that_toggles_dead_code_restarts_keeps_every_saved_statistic(tmp_path, before, after):
    """The one legitimate difference between a checkpoint and the model: a fine-tune (scripts/train.py --init_from)
    turns the restart counters on or off. Loading that used to reset the EMA codebook statistics to their init."""
    model = _tiny_vq(dead_code_threshold=before)
    model.save_pretrained(tmp_path)
    config = VQVAEConfig(**{**TINY_VQ, "dead_code_threshold": after})
    loaded, info = VQVAEModel.from_pretrained(tmp_path, config=config, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    for key, value in model.state_dict().items():
        if not key.endswith("steps_since_used"):
            assert torch.equal(loaded.state_dict()[key], value), f"{key} changed on loading"
    assert not torch.equal(model.quantizers[0].ema_cluster_size, torch.ones(8))  # the statistics are trained ones
    if after is not None:
        assert torch.equal(loaded.quantizers[0].steps_since_used, torch.zeros(8, dtype=torch.long))


def test_the_demo_refuses_to_serve_a_folder_with_missing_weights(saved):
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e .[demo]")
    sys.path.insert(0, str(ROOT / "spaces_demo"))
    import app as demo_app

    root, _ = saved
    with pytest.raises(ValueError, match=MISSING_DECODER):
        demo_app.load_demo(str(root / "no_decoder"))


def test_push_to_hub_dry_run_refuses_a_folder_with_missing_weights(saved, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import push_to_hub

    root, _ = saved
    args = push_to_hub.parse_args([str(root / "no_decoder"), "--repo_id", "org/x", "--dry_run",
                                   "--staging_dir", str(tmp_path / "repo")])  # fmt: skip
    # The validation loads the folder in a fresh process, which fails with the loading error (RuntimeError today).
    with pytest.raises((RuntimeError, SystemExit)) as error:
        push_to_hub.main(args)
    assert "ValueError" in str(error.value) and "8 weight(s) of the model missing from the checkpoint" in str(error.value)


REMOTE_CODE_LOAD = """
import sys
sys.modules["hf_vqvae"] = None  # the package is not installed for this user
from transformers import AutoModel
try:
    AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    print("LOADED")
except ValueError as error:
    print("REFUSED", error)
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True, allow_partial_load=True)
print("PARTIAL", type(model).__module__, type(model).__name__)
"""


def test_remote_code_without_the_package_is_strict_too(saved, tmp_path):
    root, _ = saved
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", REMOTE_CODE_LOAD, str(root / "no_decoder")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED" not in result.stdout
    assert "REFUSED" in result.stdout and "8 weight(s) of the model missing from the checkpoint" in result.stdout
    assert "PARTIAL transformers_modules" in result.stdout and "VQVAEModel" in result.stdout


# ---------------------------------------------------------------------------------------------------- point 9

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "config_class, overrides, message",
    [
        (VQVAEConfig, dict(beta=NAN), r"beta \(commitment weight\) must be a finite number >= 0, got nan"),
        (VQVAEConfig, dict(beta=INF), r"beta .* got inf"),
        (VQVAEConfig, dict(ema_decay="0.99"), r"ema_decay must lie strictly between 0 and 1 .* got '0\.99'"),
        (VQVAEConfig, dict(ema_decay=NAN), r"ema_decay .* got nan"),
        (VQVAEConfig, dict(ema_epsilon="1e-5"), r"ema_epsilon must be a finite number > 0, got '1e-5'"),
        (VQVAEConfig, dict(ema_epsilon=True), r"ema_epsilon .* got True"),
        (VQVAEConfig, dict(ema_epsilon=INF), r"ema_epsilon .* got inf"),
        (VQVAEConfig, dict(image_size=0), r"image_size \(an integer or \[height, width\]\) must be an integer in "
                                          r"\[1, 8192\], got 0"),
        (VQVAEConfig, dict(image_size=2**22), r"image_size .* in \[1, 8192\], got 4194304"),
        (VQVAEConfig, dict(image_size=[32, 32, 32]), r"image_size must be an integer or \[height, width\], got \[32, 32, "),
        (VQVAEConfig, dict(image_size=[32, "32"]), r"image_size width must be an integer in \[1, 8192\], got '32'"),
        (VQVAEConfig, dict(image_size=[-32, 32]), r"image_size height .* got -32"),
        (VQVAEConfig, dict(image_size=32.0), r"image_size .* got 32\.0"),
        (VQVAEConfig, dict(image_size="32"), r"image_size .* got '32'"),
        (VQVAEConfig, dict(image_size=None), r"image_size .* got None"),
        (VQVAEConfig, dict(image_size=True), r"image_size .* got True"),
        (VQVAEConfig, dict(num_embeddings=True), r"num_embeddings must be an integer >= 1, got True"),
        (VQVAEConfig, dict(num_downsamples=10**9), r"num_downsamples must be an integer in \[0, 13\], got 1000000000"),
        (VQVAE2Config, dict(level_downsamples=2.0), r"level_downsamples must be a non-empty list .* got 2\.0"),
        (VQVAE2Config, dict(image_size=[256, 256, 3]), r"image_size must be an integer or \[height, width\]"),
        (VAEConfig, dict(image_size=2**22), r"image_size .* in \[1, 8192\], got 4194304"),
        (VAEConfig, dict(image_size=[28, 28, 1]), r"image_size must be an integer or \[height, width\]"),
        (VAEConfig, dict(conv_channels=2.0), r"conv_channels must be a non-empty list of channel counts, got 2\.0"),
        (VAEConfig, dict(latent_dim=False), r"latent_dim must be an integer >= 1, got False"),
        (VAEConfig, dict(decoder_log_variance=INF), r"decoder_log_variance must be a finite number"),
        (PixelCNNPriorConfig, dict(code_shape=2.0), r"code_shape must be \[height, width\] or None, got 2\.0"),
        (PixelCNNPriorConfig, dict(code_shape={"h": 4, "w": 4}), r"code_shape must be \[height, width\] or None"),
        (PixelCNNPriorConfig, dict(code_shape=[2**22, 4]), r"code_shape height must be an integer in \[1, 8192\]"),
        (PixelCNNPriorConfig, dict(dropout="0.1"), r"dropout must be a number in \[0, 1\), got '0\.1'"),
        (TransformerPriorConfig, dict(code_shape=[4096, 4096]), r"code_shape \[4096, 4096\] gives 16777216 positions, "
                                                                r"more than the 1048576"),
        (TransformerPriorConfig, dict(max_code_positions=2**40), r"max_code_positions gives 1099511627776 positions"),
        (TransformerPriorConfig, dict(attn_pdrop=NAN), r"attn_pdrop must be a dropout probability in \[0, 1\), got nan"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_config_holes_give_a_value_error_naming_the_field(config_class, overrides, message):
    with pytest.raises(ValueError, match=message):
        config_class(**overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(beta=NAN), r"beta \(commitment weight\) must be a finite number >= 0, got nan"),
        (dict(ema_decay="0.99"), r"ema_decay must lie strictly between 0 and 1 \(or be None\), got '0\.99'"),
        (dict(ema_epsilon=True), r"ema_epsilon must be a finite number > 0, got True"),
        (dict(kmeans_iters=2.5), r"kmeans_iters must be an integer >= 1, got 2\.5"),
        (dict(dead_code_threshold="20"), r"dead_code_threshold must be an integer >= 1 step \(or None\), got '20'"),
    ],
)
def test_the_quantizer_on_its_own_refuses_the_same_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(8, 4, **overrides)


def test_a_config_json_with_a_string_for_a_number_is_refused_on_loading(saved, tmp_path):
    root, _ = saved
    shutil.copytree(root / "complete", tmp_path / "edited")
    config_path = tmp_path / "edited" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "ema_decay": "0.99"}))
    for load in (AutoConfig.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(ValueError, match=r"ema_decay must lie strictly between 0 and 1 .* got '0\.99'"):
            load(tmp_path / "edited")
