"""The run's output folder: checked before training, written atomically after it.

A run must not lose anything already saved: it refuses a folder holding another run's checkpoints (unless told to
resume or overwrite), checks that the folder is writable before the first step, and writes its final model into a
temporary folder first, so that a failed save (a full disk) leaves the folder's previous model loadable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .checkpointing import checkpoint_root, list_checkpoints

FINAL_TEMPORARY = ".tmp-final-model"


def check_output_dir(output_dir: Path, *, resuming: bool, overwrite: bool) -> list[Path]:
    """Refuse another run's checkpoints and an unwritable folder, before anything is trained.

    Returns the checkpoints that `--overwrite_output_dir` asks to delete; every process decides alike, and the caller
    deletes them on the main process once all have looked (`remove_checkpoints`).
    """
    found = list_checkpoints(checkpoint_root(output_dir))
    if found and not resuming and not overwrite:
        names = ", ".join(path.name for path in found[-3:])
        raise ValueError(
            f"{output_dir} already holds checkpoints of another run ({names}); pass --resume_from_checkpoint "
            f"latest to continue that run, --overwrite_output_dir to delete them and start afresh, or choose "
            f"another --output_dir"
        )
    check_writable(output_dir)
    return [] if resuming else found


def remove_checkpoints(output_dir: Path) -> None:
    """Delete the checkpoints folder (what --overwrite_output_dir discards)."""
    shutil.rmtree(checkpoint_root(output_dir), ignore_errors=True)


def check_writable(folder: Path) -> None:
    """Create `folder` and write (then remove) a small file in it; a clear error if either fails."""
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"cannot write to the output folder {folder} ({type(error).__name__}: {error}); choose a writable "
            f"--output_dir (nothing was trained)"
        ) from error


def write_atomically(output_dir: Path, write: Callable[[Path], None]) -> None:
    """`write(folder)` into a temporary folder inside `output_dir`, then move each file into place.

    If `write` fails (e.g. the disk is full), the temporary folder is removed and `output_dir`'s previous files are
    untouched. The moves are renames within one file system: they need no space and cannot half-write a file.
    """
    temporary = output_dir / FINAL_TEMPORARY
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        write(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    for path in sorted(temporary.iterdir(), key=_weights_last):
        target = output_dir / path.name
        if target.is_dir() and not path.is_dir():
            shutil.rmtree(target)
        elif path.is_dir() and target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(path, target)
    temporary.rmdir()


def _weights_last(path: Path) -> tuple[bool, str]:
    """Config and weights are moved last and together, so the window with a mixed old/new model is two renames."""
    return path.name in ("config.json", "model.safetensors"), path.name


__all__ = ["check_output_dir", "check_writable", "remove_checkpoints", "write_atomically"]
