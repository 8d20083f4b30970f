"""hf_vqvae.conversion.rosinality and scripts/convert_rosinality_vqvae2.py against an independent implementation
of rosinality/vq-vae-2-pytorch's VQVAE forward pass, on a random state dict of exactly its published layout."""

import math
import pathlib
import pickle
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

import hf_vqvae  # noqa: F401  (registers the Auto classes)
from hf_vqvae import VQVAE2Config, VQVAE2Model
from hf_vqvae.conversion import (
    convert_rosinality_checkpoint,
    convert_rosinality_state_dict,
    load_rosinality_state_dict,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import convert_rosinality_vqvae2 as convert_script  # noqa: E402

LAYOUT_FILE = Path("reference") / "rosinality_vqvae2_state_dict.txt"
# The transposed convolutions of rosinality's VQVAE (layout doc): everything else is a Conv2d.
TRANSPOSED_CONVS = {"dec_t.blocks.4", "dec.blocks.4", "dec.blocks.6", "upsample_t"}
LAYOUT_LINE = re.compile(r"^(\S+) \(([\d, ]*)\) (\w+)$")


# ----------------------------------------------------------------------------------------------------------------
# A random rosinality state dict and rosinality's forward pass, written from the layout doc with torch.nn.functional
# ----------------------------------------------------------------------------------------------------------------


def read_layout(shared_dir: Path) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in (shared_dir / LAYOUT_FILE).read_text().splitlines():
        match = LAYOUT_LINE.match(line.strip())
        if match:
            key, shape, dtype = match.groups()
            assert dtype == "float32", line
            layout[key] = tuple(int(size) for size in shape.replace(" ", "").split(",") if size)
    assert len(layout) == 64
    return layout


def random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Variance-preserving conv weights, small biases, a N(0, 1) codebook and consistent EMA statistics."""
    if key.endswith(".weight"):
        layer = key[: -len(".weight")]
        kernel = shape[2] * shape[3]
        fan_in = shape[0] * kernel / 4 if layer in TRANSPOSED_CONVS else shape[1] * kernel  # stride-2 transposed
        return torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    if key.endswith(".bias"):
        return torch.randn(shape, generator=generator) * 0.05
    if key.endswith(".embed"):
        return torch.randn(shape, generator=generator)
    if key.endswith(".cluster_size"):
        return torch.rand(shape, generator=generator) * 10 + 0.5
    assert key.endswith(".embed_avg"), key
    return torch.empty(shape)  # filled from embed and cluster_size below


@pytest.fixture
def rosinality_state_dict(shared_dir) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    state = {key: random_tensor(key, shape, generator) for key, shape in read_layout(shared_dir).items()}
    for name in ("quantize_t", "quantize_b"):
        state[f"{name}.embed_avg"] = state[f"{name}.embed"] * state[f"{name}.cluster_size"]
    return state


def rosinality_forward(state: dict[str, torch.Tensor], image: torch.Tensor):
    """rosinality's VQVAE.forward (eval): ([top codes, bottom codes], reconstruction), from its tensors by name."""

    def conv(x, name, stride=1, padding=0):
        return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], stride=stride, padding=padding)

    def conv_transpose(x, name):
        return F.conv_transpose2d(x, state[f"{name}.weight"], state[f"{name}.bias"], stride=2, padding=1)

    def residual(x, name):
        hidden = conv(F.relu(x), f"{name}.conv.1", padding=1)
        return x + conv(F.relu(hidden), f"{name}.conv.3")

    def enc_b(x):
        x = F.relu(conv(x, "enc_b.blocks.0", stride=2, padding=1))
        x = F.relu(conv(x, "enc_b.blocks.2", stride=2, padding=1))
        x = conv(x, "enc_b.blocks.4", padding=1)
        return F.relu(residual(residual(x, "enc_b.blocks.5"), "enc_b.blocks.6"))

    def enc_t(x):
        x = F.relu(conv(x, "enc_t.blocks.0", stride=2, padding=1))
        x = conv(x, "enc_t.blocks.2", padding=1)
        return F.relu(residual(residual(x, "enc_t.blocks.3"), "enc_t.blocks.4"))

    def decoder(x, name, upsamples):
        x = conv(x, f"{name}.blocks.0", padding=1)
        x = F.relu(residual(residual(x, f"{name}.blocks.1"), f"{name}.blocks.2"))
        x = conv_transpose(x, f"{name}.blocks.4")
        return conv_transpose(F.relu(x), f"{name}.blocks.6") if upsamples == 2 else x

    def quantize(z, name):
        embed = state[f"{name}.embed"]  # (D, K)
        flatten = z.permute(0, 2, 3, 1).reshape(-1, embed.shape[0])
        dist = flatten.pow(2).sum(1, keepdim=True) - 2 * flatten @ embed + embed.pow(2).sum(0, keepdim=True)
        _, index = (-dist).max(1)
        quantized = F.embedding(index, embed.t()).view(*z.permute(0, 2, 3, 1).shape).permute(0, 3, 1, 2)
        quantized = z + (quantized - z).detach()  # rosinality's straight-through output
        return quantized, index.view(z.shape[0], *z.shape[2:])

    bottom_features = enc_b(image)
    top_features = enc_t(bottom_features)
    quant_t, id_t = quantize(conv(top_features, "quantize_conv_t"), "quantize_t")
    dec_t = decoder(quant_t, "dec_t", upsamples=1)
    quant_b, id_b = quantize(conv(torch.cat([dec_t, bottom_features], 1), "quantize_conv_b"), "quantize_b")
    upsample_t = conv_transpose(quant_t, "upsample_t")
    reconstruction = decoder(torch.cat([upsample_t, quant_b], 1), "dec", upsamples=2)
    return [id_t, id_b], reconstruction


# ----------------------------------------------------------------------------------------------------------------
# Conversion end to end
# ----------------------------------------------------------------------------------------------------------------


def test_converted_folder_reproduces_rosinalitys_forward_pass(rosinality_state_dict, tmp_path, capsys):
    checkpoint, output_dir = tmp_path / "vqvae_560.pt", tmp_path / "converted"
    torch.save(rosinality_state_dict, checkpoint)
    convert_script.main(convert_script.parse_args([str(checkpoint), str(output_dir), "--check"]))
    summary = capsys.readouterr().out.strip()
    assert len(summary.splitlines()) == 1 and "reload check passed" in summary and str(output_dir) in summary
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "preprocessor_config.json").is_file()

    image = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected_codes, expected_reconstruction = rosinality_forward(rosinality_state_dict, image)
        assert all(len(codes.unique()) >= 4 for codes in expected_codes)  # a non-trivial test: several codes used
        for model in (VQVAE2Model.from_pretrained(output_dir), AutoModel.from_pretrained(output_dir)):
            assert type(model) is VQVAE2Model and not model.training
            assert all(bool(q.initialized) and int(q.ema_steps) == 0 for q in model.quantizers)
            output = model(image)
            assert [codes.shape for codes in output.codes] == [(2, 8, 8), (2, 16, 16)]
            for level, (found, expected) in enumerate(zip(output.codes, expected_codes)):
                assert torch.equal(found, expected), f"level {level}: {(found != expected).sum()} codes differ"
            assert (output.reconstruction - expected_reconstruction).abs().max() <= 1e-5
            assert (model.decode_code(output.codes) - expected_reconstruction).abs().max() <= 1e-5


def test_quantizer_statistics_are_transposed_and_buffers_filled(rosinality_state_dict):
    converted = convert_rosinality_state_dict(rosinality_state_dict)
    assert set(converted) == set(VQVAE2Model(VQVAE2Config.from_preset("rosinality-ffhq256")).state_dict())
    for level, name in enumerate(("quantize_t", "quantize_b")):
        prefix = f"quantizers.{level}."
        assert torch.equal(converted[prefix + "codebook"], rosinality_state_dict[f"{name}.embed"].t())
        assert torch.equal(converted[prefix + "ema_embed_sum"], rosinality_state_dict[f"{name}.embed_avg"].t())
        assert torch.equal(converted[prefix + "ema_cluster_size"], rosinality_state_dict[f"{name}.cluster_size"])
        assert converted[prefix + "initialized"].dtype == torch.bool and bool(converted[prefix + "initialized"])
        assert converted[prefix + "ema_steps"].dtype == torch.long and int(converted[prefix + "ema_steps"]) == 0
    assert torch.equal(converted["upsamplers.0_to_1.blocks.0.weight"], rosinality_state_dict["upsample_t.weight"])


def test_data_parallel_module_prefix_is_stripped(rosinality_state_dict, tmp_path):
    checkpoint = tmp_path / "data_parallel.pt"
    torch.save({f"module.{key}": value for key, value in rosinality_state_dict.items()}, checkpoint)
    assert set(load_rosinality_state_dict(checkpoint)) == set(rosinality_state_dict)
    model = convert_rosinality_checkpoint(checkpoint)
    assert torch.equal(model.encoders[1].blocks[0].weight, rosinality_state_dict["enc_b.blocks.0.weight"])


# ----------------------------------------------------------------------------------------------------------------
# Refusals and clear errors
# ----------------------------------------------------------------------------------------------------------------


class TouchesAFileWhenUnpickled:
    """A pickle payload: unpickling it calls `Path.touch(marker)` (harmless, but arbitrary code all the same)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_pickle_with_arbitrary_objects_is_refused_without_running_it(rosinality_state_dict, tmp_path):
    live_marker = tmp_path / "payload-is-live"
    pickle.loads(pickle.dumps(TouchesAFileWhenUnpickled(live_marker)))
    assert live_marker.exists()  # the payload really runs when unpickled by an unsafe loader

    marker, checkpoint = tmp_path / "payload-ran", tmp_path / "malicious.pt"
    torch.save({**rosinality_state_dict, "payload": TouchesAFileWhenUnpickled(marker)}, checkpoint)
    with pytest.raises(ValueError, match="objects other than tensors") as error:
        convert_rosinality_checkpoint(checkpoint)
    assert "refused for safety" in str(error.value) and "nothing in it was executed" in str(error.value)
    assert "plain state dict" in str(error.value)
    with pytest.raises(SystemExit, match="^error: .*objects other than tensors"):
        convert_script.main(convert_script.parse_args([str(checkpoint), str(tmp_path / "out")]))
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_missing_and_unexpected_keys_are_named(rosinality_state_dict):
    state = dict(rosinality_state_dict)
    del state["dec.blocks.6.bias"]
    state["enc_b.blocks.9.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="missing keys") as error:
        convert_rosinality_state_dict(state)
    message = str(error.value)
    assert "missing keys (1): dec.blocks.6.bias" in message and "unexpected keys (1): enc_b.blocks.9.weight" in message


def test_shape_mismatches_are_named_with_both_shapes(rosinality_state_dict):
    state = dict(rosinality_state_dict)
    state["enc_b.blocks.0.weight"] = torch.zeros(64, 1, 4, 4)
    state["quantize_t.embed"] = rosinality_state_dict["quantize_t.embed"].t()  # (K, D) instead of rosinality's (D, K)
    with pytest.raises(ValueError, match="shape mismatches \\(2\\)") as error:
        convert_rosinality_state_dict(state)
    message = str(error.value)
    assert "enc_b.blocks.0.weight: checkpoint (64, 1, 4, 4), model expects (64, 3, 4, 4)" in message
    assert "quantize_t.embed: checkpoint (512, 64), model expects (64, 512)" in message


def test_files_that_are_not_plain_state_dicts_get_clear_errors(rosinality_state_dict, tmp_path):
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": rosinality_state_dict, "epoch": 560}, wrapped)
    with pytest.raises(ValueError, match="'model' \\(dict\\), 'epoch' \\(int\\)"):
        load_rosinality_state_dict(wrapped)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        load_rosinality_state_dict(listed)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(wrapped.read_bytes()[:1000])
    with pytest.raises(ValueError, match="could not read"):
        load_rosinality_state_dict(truncated)
    with pytest.raises(ValueError, match="does not exist"):
        load_rosinality_state_dict(tmp_path / "absent.pt")


def test_configs_rosinality_checkpoints_cannot_fill_are_rejected(rosinality_state_dict):
    debiased = VQVAE2Config.from_preset("rosinality-ffhq256", ema_bias_correction=True)
    with pytest.raises(ValueError, match="ema_bias_correction=False"):
        convert_rosinality_state_dict(rosinality_state_dict, debiased)
    with pytest.raises(ValueError, match="two levels"):
        convert_rosinality_state_dict(rosinality_state_dict, VQVAE2Config.from_preset("ffhq1024-paper"))
