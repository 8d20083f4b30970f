"""Resumable checkpoints that a crash cannot leave half-written.

Every process writes `accelerator.save_state` into `checkpoints/.tmp-checkpoint-<step>/`; the main process then
writes `training_state.json` (step, epoch, data position of every process) last and renames the folder to
`checkpoint-<step>`.
A rename is atomic, so a process killed mid-save leaves only a `.tmp-*` folder, which resume ignores and the next
save removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.json"


@dataclass
class TrainingState:
    """Where training stands: optimizer steps done, and the data position of the next micro-batch."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed by this process
    # Raw examples of this process's shard of `epoch` read so far (decoded, or skipped as undecodable): where its
    # next micro-batch begins, so that a resumed run starts reading there and decodes none of the batches before it.
    # None: unknown (a checkpoint written before this field, or by another number of processes), and a resumed run
    # decodes and throws away `batches_in_epoch` batches instead. training_state.json holds every process's value
    # as the list `positions` (they differ when some images were undecodable).
    position: int | None = None

    def to_json(self, positions: list[int | None]) -> dict:
        values = asdict(self)
        del values["position"]
        return {**values, "positions": positions}

    @classmethod
    def from_json(cls, values: dict, process_index: int = 0, num_processes: int = 1) -> "TrainingState":
        values = dict(values)
        positions = values.pop("positions", None)
        state = cls(**values)
        if isinstance(positions, list) and len(positions) == num_processes:
            position = positions[process_index]
            state.position = position if isinstance(position, int) and position >= 0 else None
        return state


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(accelerator, output_dir, state: TrainingState, total_limit: int | None = None) -> Path:
    """Save model, optimizer, scheduler and RNG states with the data position; returns the final folder."""
    root = checkpoint_root(output_dir)
    final = root / f"checkpoint-{state.global_step}"
    temporary = root / f".tmp-checkpoint-{state.global_step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(root)
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            shutil.rmtree(final)
    accelerator.wait_for_everyone()
    positions = _gather_positions(accelerator, state)
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / STATE_FILE).write_text(json.dumps(state.to_json(positions), indent=2))
        os.replace(temporary, final)
        _rotate(root, total_limit)
    accelerator.wait_for_everyone()
    return final


def find_checkpoint(output_dir, which: str) -> Path:
    """'latest' -> the newest complete checkpoint of `output_dir`; otherwise `which` is a checkpoint folder."""
    if which != "latest":
        path = Path(which)
        if not (path / STATE_FILE).is_file():
            raise ValueError(f"{path} is not a complete checkpoint (no {STATE_FILE}); pass 'latest' or another folder")
        return path
    complete = list_checkpoints(checkpoint_root(output_dir))
    if not complete:
        raise ValueError(f"--resume_from_checkpoint latest: no complete checkpoint in {checkpoint_root(output_dir)}")
    return complete[-1]


def _gather_positions(accelerator, state: TrainingState) -> list[int | None]:
    """Every process's data position, in process order (a collective: every process calls it)."""
    position = torch.tensor([-1 if state.position is None else state.position], device=accelerator.device)
    if accelerator.num_processes > 1:
        position = accelerator.gather(position)
    return [None if value < 0 else value for value in position.tolist()]


def read_training_state(path: Path, process_index: int = 0, num_processes: int = 1) -> TrainingState:
    """The step and data position (of process `process_index` of `num_processes`) saved with a checkpoint, without
    loading the checkpoint."""
    try:
        return TrainingState.from_json(json.loads((Path(path) / STATE_FILE).read_text()), process_index, num_processes)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path}/{STATE_FILE} is unreadable or corrupt ({error}); resume from another checkpoint") from error


def load_checkpoint(accelerator, path: Path) -> TrainingState:
    _check_random_states(Path(path), accelerator.process_index)
    state = read_training_state(path, accelerator.process_index, accelerator.num_processes)
    accelerator.load_state(str(path))
    # accelerate numbers later save_state folders from this iteration (needed after load_state)
    accelerator.project_configuration.iteration = state.global_step
    return state


def _check_random_states(path: Path, process_index: int) -> None:
    """Accelerate skips an unreadable RNG file with an INFO line, so the resumed run would silently draw other
    augmentations and binarisations than the straight run; refuse it instead (read with weights_only=True)."""
    from accelerate.utils import load

    name = f"random_states_{process_index}.pkl"
    try:
        load(path / name)
    except Exception as error:  # noqa: BLE001  (any failure to read the file means the same thing)
        raise ValueError(
            f"{path / name} is missing or corrupt ({type(error).__name__}); resuming from it would not "
            f"reproduce the run's random draws. Resume from another checkpoint (--resume_from_checkpoint <folder>)"
        ) from error


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def _rotate(root: Path, total_limit: int | None) -> None:
    if total_limit is None:
        return
    for path in list_checkpoints(root)[:-total_limit]:
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale_temporaries(root: Path) -> None:
    for path in root.glob(".tmp-checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)
