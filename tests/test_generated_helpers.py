"""The helpers every model folder needs have one source (`models/shared/`); each folder holds a generated,
byte-identical copy (remote code carries only the model's own folder). This fails when a copy differs."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import generate_model_helpers as generator  # noqa: E402

from hf_vqvae.registry import FAMILIES  # noqa: E402


def test_every_model_folder_holds_current_copies_of_the_shared_helpers():
    folders = generator.model_folders()
    assert {Path(f.model_class.__module__.replace(".", "/")).parent.name for f in FAMILIES} == {f.name for f in folders}
    assert generator.stale_copies() == [], "run: python scripts/generate_model_helpers.py"
    for folder in folders:
        for name in generator.SOURCES:
            copy = (folder / name).read_text()
            assert copy.startswith("# GENERATED from src/hf_vqvae/models/shared/") and "do not edit" in copy
            assert copy.endswith((generator.SOURCE_DIR / name).read_text())


def test_the_check_fails_on_an_edited_copy_and_the_generator_repairs_it(tmp_path):
    folder = tmp_path / "models" / "toy"
    folder.mkdir(parents=True)
    assert generator.stale_copies([folder]) == [folder / name for name in generator.SOURCES]  # missing
    generator.write_copies([folder])
    assert generator.stale_copies([folder]) == []
    edited = folder / "config_helpers.py"
    edited.write_text(edited.read_text().replace("MAX_IMAGE_SIDE = 8192", "MAX_IMAGE_SIDE = 4096"))
    assert generator.stale_copies([folder]) == [edited]
    assert generator.write_copies([folder]) == [edited] and generator.stale_copies([folder]) == []


def test_the_check_mode_exits_zero_on_this_tree():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_model_helpers.py"), "--check"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("family", FAMILIES, ids=[f.cli_name for f in FAMILIES])
def test_model_and_config_classes_use_the_shared_mixins(family):
    assert any(base.__name__ == "ConfigMixin" for base in family.config_class.__mro__)
    assert any(base.__name__ == "StrictLoadingMixin" for base in family.model_class.__mro__)


@pytest.mark.parametrize("family", FAMILIES, ids=[f.cli_name for f in FAMILIES])
def test_a_models_module_imports_every_file_of_its_folder_directly(family):
    """diffusers loads a pipeline component's module with only the files that module imports itself (one level), so
    every file the module needs, the generated helpers included, must be a direct import of it."""
    from hf_vqvae.hub import _same_folder_imports

    module = Path(sys.modules[family.model_class.__module__].__file__)
    direct = set(_same_folder_imports(module))
    reached, pending = set(), list(direct)
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending += _same_folder_imports(module.parent / f"{name}.py")
    assert reached == direct, f"{module.name} reaches {sorted(reached - direct)} only through other modules"
    assert {"config_helpers", "modeling_helpers"} <= direct
