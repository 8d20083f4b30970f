"""Copy the shared model helpers into every model folder (or check that the copies are current).

A saved model folder must load with `trust_remote_code=True` where hf_vqvae is not installed, and remote code carries
only the files of the model's own folder. The helpers every folder needs therefore have one source,
`src/hf_vqvae/models/shared/*.py`, and each model folder holds a generated, byte-identical copy under a "do not edit"
header. A model folder is a folder of `src/hf_vqvae/models/` holding a `configuration_*.py` (found without importing
the package, so that the copies can be written while it does not import).

    python scripts/generate_model_helpers.py           # write the copies
    python scripts/generate_model_helpers.py --check   # exit 1, listing them, when a copy differs from its source
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "hf_vqvae"
SOURCE_DIR = PACKAGE / "models" / "shared"
SOURCES = ("config_helpers.py", "modeling_helpers.py")
HEADER = (
    "# GENERATED from src/hf_vqvae/models/shared/{name} by scripts/generate_model_helpers.py: do not edit.\n"
    "# A saved model folder loads with trust_remote_code=True, which carries only this folder's files, hence the copy.\n"
)


def model_folders() -> list[Path]:
    """Every model folder (one holding a `configuration_*.py`), sorted."""
    return sorted({path.parent for path in (PACKAGE / "models").glob("*/configuration_*.py")})


def expected_copy(name: str) -> str:
    return HEADER.format(name=name) + (SOURCE_DIR / name).read_text(encoding="utf-8")


def stale_copies(folders: list[Path] | None = None) -> list[Path]:
    """The copies that are missing or differ from header + source."""
    stale = []
    for folder in folders or model_folders():
        for name in SOURCES:
            target = folder / name
            if not target.is_file() or target.read_text(encoding="utf-8") != expected_copy(name):
                stale.append(target)
    return stale


def write_copies(folders: list[Path] | None = None) -> list[Path]:
    written = []
    for target in stale_copies(folders):
        target.write_text(expected_copy(target.name), encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a copy is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_copies()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python scripts/generate_model_helpers.py)")
        return 1 if stale else 0
    for path in write_copies():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
