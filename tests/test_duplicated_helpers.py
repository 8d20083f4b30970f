"""Each model folder is self-contained (trust_remote_code copies only same-folder imports), so a few small helpers
are duplicated on purpose. This guards the copies against drifting apart: their code (docstrings aside) must match."""

import ast
import inspect
import textwrap

import pytest

from hf_vqvae.models.pixelcnn_prior import configuration_pixelcnn_prior, modeling_pixelcnn_prior
from hf_vqvae.models.transformer_prior import configuration_transformer_prior, modeling_transformer_prior
from hf_vqvae.models.vae import configuration_vae, modeling_vae
from hf_vqvae.models.vqvae import configuration_vqvae, modeling_vqvae

COPIES = [configuration_vae, configuration_pixelcnn_prior, configuration_transformer_prior]
# Which helpers each config module duplicates, besides `_PresetMixin` and `_check_int` (which all of them do).
EXTRA_CONFIG_HELPERS = {
    configuration_vae: ["_is_number", "_image_hw", "_check_image_size"],
    configuration_transformer_prior: ["_is_number"],
}
CONFIG_CLASSES = [configuration_vae.VAEConfig, configuration_pixelcnn_prior.PixelCNNPriorConfig,
                  configuration_transformer_prior.TransformerPriorConfig]  # fmt: skip
MODEL_CLASSES = [modeling_vae.VAEPreTrainedModel, modeling_pixelcnn_prior.PixelCNNPriorPreTrainedModel,
                 modeling_transformer_prior.TransformerPriorModel]  # fmt: skip
LOADING_HELPERS = ["_require_safetensors", "_raise_if_unreadable", "_require_complete_load"]


def _code(obj) -> str:
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:] or [ast.Pass()]  # drop the docstring
    return ast.dump(tree)


def _name(module) -> str:
    return module.__name__.rsplit(".", 1)[-1]


@pytest.mark.parametrize(
    "module, name",
    [(module, name) for module in COPIES for name in ["_PresetMixin", "_check_int", *EXTRA_CONFIG_HELPERS.get(module, [])]],
    ids=lambda value: value if isinstance(value, str) else _name(value),
)
def test_duplicated_helpers_match_the_vqvae_originals(module, name):
    assert _code(getattr(module, name)) == _code(getattr(configuration_vqvae, name)), (
        f"{module.__name__}.{name} drifted from hf_vqvae.models.vqvae.configuration_vqvae.{name}; keep the copies equal"
    )


def test_the_image_side_limit_is_the_same_everywhere():
    assert configuration_vae.MAX_IMAGE_SIDE == configuration_vqvae.MAX_IMAGE_SIDE == 8192
    assert configuration_pixelcnn_prior.MAX_CODE_SIDE == configuration_vqvae.MAX_IMAGE_SIDE


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_config_model_type_guard_matches_the_vqvae_original(config_class):
    original = configuration_vqvae.VQVAEConfig.from_pretrained
    assert _code(config_class.from_pretrained) == _code(original), (
        f"{config_class.__name__}.from_pretrained drifted from the VQ-VAE configs'; keep the copies equal"
    )


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_strict_from_pretrained_matches_the_vqvae_original(model_class):
    original = modeling_vqvae.VQPreTrainedModel.from_pretrained
    assert _code(model_class.from_pretrained) == _code(original), (
        f"{model_class.__name__}.from_pretrained drifted from VQPreTrainedModel.from_pretrained; keep the copies equal"
    )
    module = inspect.getmodule(model_class)
    for name in LOADING_HELPERS:
        assert _code(getattr(module, name)) == _code(getattr(modeling_vqvae, name)), (
            f"{module.__name__}.{name} drifted from hf_vqvae.models.vqvae.modeling_vqvae.{name}; keep the copies equal"
        )
