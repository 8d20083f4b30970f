"""Ctrl-C and SIGTERM end a run with a checkpoint and a message saying how to resume.

The signal only sets a flag; the loop checks it after each optimizer step (where model, optimizer and data position
agree), saves a checkpoint and raises `TrainingInterrupted`. A second Ctrl-C stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import threading


class TrainingInterrupted(RuntimeError):
    """The run was stopped by a signal after saving a checkpoint; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class StopSignals:
    """Context manager: while active, SIGINT and SIGTERM set `received` instead of killing the process."""

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self._previous = {number: signal.signal(number, self._handle) for number in self.HANDLED}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame) -> None:
        # A second Ctrl-C stops at once, without a checkpoint. A SIGTERM never does: `accelerate launch` (torchrun)
        # answers the Ctrl-C it gets too by sending its workers SIGTERM, which must not cut their checkpoint short.
        if number == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt("Ctrl-C pressed twice")
        if self.received is None:
            self.received = number


__all__ = ["StopSignals", "TrainingInterrupted"]
