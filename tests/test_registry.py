"""One registry of model families: every part of the library reads it, so adding a family is one entry."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

import hf_vqvae
from hf_vqvae import VQVAEConfig, VQVAEModel, registry
from hf_vqvae.cards import BIBTEX, render_model_card
from hf_vqvae.registry import FAMILIES, family_for
from hf_vqvae.training import ModelArguments
from hf_vqvae.training.builders import build_model, config_class_for

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import train as train_script  # noqa: E402

IDS = [family.cli_name for family in FAMILIES]


def _codes_dataset(folder: Path, levels: int = 2) -> Path:
    """A codes dataset's description (all a prior's config reads from it): K = 16, 4x4 over 8x8 codes, 3 classes."""
    shapes = [[4, 4], [8, 8]][:levels]
    info = dict(model="vq", model_type="vqvae2", num_embeddings=16, code_shapes=shapes, image_size=[32, 32],
                num_channels=3, num_classes=3)  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "codes_info.json").write_text(json.dumps(info))
    return folder


def _help_text() -> str:
    with pytest.raises(SystemExit):
        train_script.parse_args(["--help"])


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_every_family_is_a_train_py_choice_with_its_default_preset_in_the_help(family, capsys):
    _help_text()
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"{family.cli_name} ({family.description})" in help_text
    assert f"{family.default_preset} ({family.cli_name})" in help_text
    assert config_class_for(family.cli_name) is family.config_class
    model_args, _, _, overrides = train_script.parse_args(["--model", family.cli_name, "--output_dir", "x"])
    assert model_args.model == family.cli_name and overrides == {}


def test_an_unknown_model_is_refused_naming_the_families(capsys):
    with pytest.raises(SystemExit):
        train_script.parse_args(["--model", "vqgan"])
    assert "invalid choice: 'vqgan'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown model family 'vqgan'; hf_vqvae knows: vae \(vae\), vqvae \(vqvae\)"):
        family_for("vqgan")


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_every_family_builds_from_its_default_preset(family, tmp_path):
    args = ModelArguments(model=family.cli_name, codes_dataset=str(_codes_dataset(tmp_path / "codes")), level=1)
    with torch.device("meta"):
        model = build_model(args, {}, resolution=None)
    assert type(model) is family.model_class
    expected = family.config_class.from_preset(family.default_preset).to_diff_dict()
    got = model.config.to_diff_dict()
    if family.is_prior:  # what the codes dataset says: K, the 8x8 bottom level, its classes, the 4x4 level above
        assert (got["num_embeddings"], got["code_shape"], got["num_classes"]) == (16, [8, 8], 3)
        assert got["condition_num_embeddings"] == 16
        expected = {key: value for key, value in expected.items() if key not in got or key not in (
            "num_embeddings", "code_shape", "num_classes", "condition_num_embeddings", "condition_upsample_factor",
            "condition_shape")}  # fmt: skip
    assert {key: got[key] for key in expected if key in got} == {key: expected[key] for key in expected if key in got}


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_every_family_is_registered_with_the_auto_classes(family):
    config = family.config_class.from_preset(family.default_preset)
    assert type(AutoConfig.for_model(family.model_type)) is family.config_class
    with torch.device("meta"):
        assert type(AutoModel.from_config(config)) is family.model_class
    assert family.config_class._auto_class == "AutoConfig" and family.model_class._auto_class == "AutoModel"
    assert (family.config_class in IMAGE_PROCESSOR_MAPPING) == family.reads_images  # a prior reads codes, not images
    assert family_for(config) is family and family_for(family.model_type) is family and family_for(family.cli_name) is family
    assert family.config_class.__name__ in hf_vqvae.list_presets()


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_every_family_renders_its_card_with_its_template_and_citations(family):
    config = family.config_class.from_preset(family.default_preset)
    card = render_model_card(config, {"psnr": 20.0}, {"dataset": "org/data", "steps": 10}, repo_id="org/model")
    text = str(card)
    assert f"# {family.display_name} trained with hf_vqvae" in text
    assert family.architecture_summary(config) in text
    assert f"--model {family.cli_name}" in text or family.cli_name in text
    for key in family.citations:
        assert BIBTEX[key] in text
    assert card.data.pipeline_tag == family.pipeline_tag


class ToyVQConfig(VQVAEConfig):
    model_type = "toy_vq"


class ToyVQModel(VQVAEModel):
    config_class = ToyVQConfig


def test_a_new_family_needs_only_a_registry_entry(monkeypatch, tmp_path):
    """A family added to FAMILIES (and nowhere else) is built by the training builders, named in cards, looked up
    by its names, and is a VQ model for the scripts that take one."""
    toy = registry.ModelFamily("toy-vq", "toy VQ-VAE", ToyVQConfig, ToyVQModel, "mnist", "vq", "vqvae.md.jinja",
                               ("vqvae",), "a toy VQ-VAE", lambda config: "toy blocks")  # fmt: skip
    monkeypatch.setattr(registry, "FAMILIES", (*FAMILIES, toy))
    assert registry.cli_names()[-1] == "toy-vq" and family_for("toy_vq") is toy
    assert config_class_for("toy-vq") is ToyVQConfig
    model = build_model(ModelArguments(model="toy-vq", preset="mnist"), {"num_embeddings": 8}, resolution=16)
    assert type(model) is ToyVQModel and model.config.num_embeddings == 8 and model.config.image_size == 16
    card = render_model_card(model.config, {}, {"dataset": "org/data"})
    assert "# toy VQ-VAE trained with hf_vqvae" in str(card) and "toy blocks" in str(card)
    assert card.data.pipeline_tag == "image-to-image"
    assert toy in registry.families_of_kind("vq")


def test_a_family_with_a_bad_kind_or_preset_is_refused_when_declared():
    with pytest.raises(ValueError, match="kind must be one of"):
        replace(FAMILIES[1], kind="gan")
    with pytest.raises(ValueError, match="no preset 'nope' in VQVAEConfig"):
        replace(FAMILIES[1], default_preset="nope")


def test_a_prior_card_names_its_vq_model_as_base_model_and_in_its_usage():
    from hf_vqvae import PixelCNNPriorConfig

    config = PixelCNNPriorConfig.from_preset("mnist", codes_source={"model": "org/vqvae-mnist", "codebook_sha256": None})
    card = render_model_card(config, {}, {"dataset": "org/codes"}, repo_id="org/prior")
    assert card.data.base_model == "org/vqvae-mnist" and card.data.library_name == "transformers"
    assert 'AutoModel.from_pretrained("org/vqvae-mnist")' in card.text and "--model org/vqvae-mnist" in card.text
    local = PixelCNNPriorConfig.from_preset("mnist", codes_source={"model": "/runs/vqvae", "codebook_sha256": None})
    card = render_model_card(local, {}, {"dataset": "org/codes"})
    assert card.data.base_model is None and "VQVAE_REPO_ID" in card.text  # a machine path stays out of the card
