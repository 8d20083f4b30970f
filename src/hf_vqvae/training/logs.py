"""Logging of a training run: one line per run, not one per process.

`get_logger(name)` is `accelerate.logging.get_logger` (main process only by default; `main_process_only=False` for a
line every process should write), except that before any Accelerate state exists (a builder called on its own,
outside a run) it logs like a plain `logging` logger instead of raising.
"""

from __future__ import annotations

import logging

from accelerate.logging import MultiProcessAdapter
from accelerate.state import PartialState


class RunLogger(MultiProcessAdapter):
    def log(self, level, msg, *args, **kwargs):
        if PartialState._shared_state:  # a run's processes exist: accelerate decides who writes
            super().log(level, msg, *args, **kwargs)
            return
        kwargs.pop("main_process_only", None)
        kwargs.pop("in_order", None)
        if self.isEnabledFor(level):
            self.logger.log(level, msg, *args, **kwargs)


def get_logger(name: str) -> RunLogger:
    return RunLogger(logging.getLogger(name), {})
