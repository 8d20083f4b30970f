"""A pipeline component's code joined into one module (`pipelines.standalone_code`): what diffusers downloads of a
component's code from a Hub repo. The joined module must behave as the modules it joins."""

import importlib.util
import sys

import pytest
import torch
from diffusers.utils.dynamic_modules_utils import get_relative_imports

from hf_vqvae.pipelines.standalone_code import SUFFIX, dependency_order, write_standalone_module
from hf_vqvae.registry import FAMILIES


def _import(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclass-style configs look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def _write(folder, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.py").write_text(text)
    return folder


@pytest.mark.parametrize("family", FAMILIES, ids=[family.cli_name for family in FAMILIES])
def test_every_familys_code_joins_into_one_module_that_loads_its_saved_weights(family, tmp_path):
    torch.manual_seed(0)
    model = family.model_class(family.config_class.from_preset(family.default_preset))
    model.save_pretrained(tmp_path)
    module = family.model_class.__module__.rpartition(".")[2]
    assert get_relative_imports(tmp_path / f"{module}.py")  # the saved modeling module imports others with a dot

    name = write_standalone_module(tmp_path, module)
    assert name == module + SUFFIX
    assert get_relative_imports(tmp_path / f"{name}.py") == []
    joined = _import(tmp_path / f"{name}.py", f"standalone_{family.config_class.model_type}")
    standalone_class = getattr(joined, family.model_class.__name__)
    assert standalone_class is not family.model_class and standalone_class.__module__ == joined.__name__
    assert joined.__all__ == sys.modules[family.model_class.__module__].__all__  # the entry module's names

    loaded = standalone_class.from_pretrained(tmp_path)
    assert type(loaded.config).__module__ == joined.__name__
    assert loaded.config.to_diff_dict() == model.config.to_diff_dict()
    expected = model.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[key], expected[key]) for key in expected)


def test_modules_are_joined_dependencies_first_with_aliases_and_one_future_import(tmp_path):
    folder = _write(tmp_path / "code", {
        "base": "from __future__ import annotations\n\nSCALE = 3\n\ndef scale(x):\n    return SCALE * x\n\n"
                "__all__ = ['scale']\n",
        "layer": "from __future__ import annotations\nimport math\n\nfrom .base import scale as times_three\n\n"
                 "def layer(x):\n    return times_three(x) + math.floor(0.5)\n",
        "model": '"""The entry."""\nfrom __future__ import annotations\n\nimport math\n\nfrom .base import SCALE\n'
                 "from .layer import (\n    layer,\n)\n\n\ndef model(x):\n    return layer(x) * SCALE\n\n"
                 "__all__ = ['model']\n",
    })  # fmt: skip
    assert dependency_order(folder, "model") == ["base", "layer", "model"]
    name = write_standalone_module(folder, "model")
    text = (folder / f"{name}.py").read_text()
    assert text.count("from __future__ import annotations") == 1
    assert text.index("from __future__") < text.index("SCALE = 3") < text.index("def layer") < text.index("def model")
    assert "from ." not in text and "times_three = scale" in text
    assert text.count("__all__") == 1
    joined = _import(folder / f"{name}.py", "joined_toy")
    assert joined.model(2) == 18 and joined.times_three(1) == 3 and joined.__all__ == ["model"]


def test_a_module_without_dotted_imports_is_used_as_it_is(tmp_path):
    folder = _write(tmp_path / "code", {"alone": "import math\n\nX = math.pi\n"})
    assert write_standalone_module(folder, "alone") == "alone"
    assert sorted(path.name for path in folder.iterdir()) == ["alone.py"]


@pytest.mark.parametrize(
    "files, message",
    [
        ({"m": "from .a import f\n", "a": "from .m import g\n"}, "m -> a -> m: the modules .* import each other in a cycle"),
        ({"m": "from .a import f\nf = 1\n", "a": "def f():\n    pass\n"}, "a.py and m.py both define 'f' differently"),
        ({"m": "import torch as t\nfrom .a import f\n", "a": "import numpy as t\nf = 1\n"}, "both define 't' differently"),
        ({"m": "def f():\n    from .a import g\n", "a": "g = 1\n"}, "m.py:2: a dotted import inside a function"),
        ({"m": "from . import a\n", "a": "g = 1\n"}, "does not import a module of the same folder by name"),
        ({"m": "from ..x import a\n"}, "does not import a module of the same folder by name"),
        ({"m": "from .missing import a\n"}, "m.py imports .missing, which is missing from"),
    ],
    ids=["cycle", "clash", "import-clash", "nested", "module-object", "parent", "missing"],
)
def test_code_that_cannot_be_joined_is_refused_with_the_reason(tmp_path, files, message):
    folder = _write(tmp_path / "code", files)
    with pytest.raises(ValueError, match=message):
        write_standalone_module(folder, "m")
    assert not (folder / f"m{SUFFIX}.py").exists()


def test_the_same_import_in_two_modules_is_not_a_clash(tmp_path):
    folder = _write(tmp_path / "code", {
        "m": "import torch\nfrom torch import nn\nfrom .a import f\n",
        "a": "import torch\nimport torch.nn as nn\n\ndef f():\n    return nn.Linear\n",
    })  # fmt: skip
    name = write_standalone_module(folder, "m")
    assert _import(folder / f"{name}.py", "joined_imports").f() is torch.nn.Linear
