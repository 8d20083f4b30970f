"""Each model folder is self-contained (trust_remote_code copies only same-folder imports), so a few small helpers
are duplicated on purpose. This guards the copies against drifting apart: their code (docstrings aside) must match."""

import ast
import inspect

import pytest

from hf_vqvae.models.pixelcnn_prior import configuration_pixelcnn_prior
from hf_vqvae.models.transformer_prior import configuration_transformer_prior
from hf_vqvae.models.vae import configuration_vae
from hf_vqvae.models.vqvae import configuration_vqvae

COPIES = [configuration_vae, configuration_pixelcnn_prior, configuration_transformer_prior]


def _code(obj) -> str:
    tree = ast.parse(inspect.getsource(obj))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:] or [ast.Pass()]  # drop the docstring
    return ast.dump(tree)


@pytest.mark.parametrize("module", COPIES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("name", ["_PresetMixin", "_check_int"])
def test_duplicated_helpers_match_the_vqvae_originals(module, name):
    assert _code(getattr(module, name)) == _code(getattr(configuration_vqvae, name)), (
        f"{module.__name__}.{name} drifted from hf_vqvae.models.vqvae.configuration_vqvae.{name}; keep the copies equal"
    )
