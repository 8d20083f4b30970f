"""Choosing the torch device that the command-line tools (scripts/sample.py, scripts/train_classifier.py) and the demo
run on: `--device` names one, the default is CUDA when a GPU is there, else the CPU. A device that is not there
is refused with a message saying which ones are, instead of a stack trace from deep inside torch."""

from __future__ import annotations

import argparse

import torch


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    """Names of the devices this machine can run on: "cpu", then "cuda", "cuda:0", ... and "mps" when present."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{index}" for index in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1", "mps", a `torch.device`) checked against this machine; None: `default_device()`.

    Raises `ValueError` naming the devices that are available when `name` is not one of them."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        choices = ", ".join(available_devices())
        raise ValueError(f"{name!r} is not a torch device name ({error}); use one of: {choices}") from None
    if not _is_available(device):
        raise ValueError(f"device {str(device)!r} is not available on this machine; use one of: "
                         f"{', '.join(available_devices())}")  # fmt: skip
    return device


def device_argument(value: str) -> torch.device:
    """An argparse `type=` for `--device`: the checked device, or a usage error (not a traceback)."""
    try:
        return resolve_device(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """`--device` (default None: `resolve_device()` picks CUDA when available, else the CPU)."""
    parser.add_argument("--device", type=device_argument, default=None,
                        help='torch device to run on, e.g. "cpu", "cuda", "cuda:1" (default: cuda when available, '
                             "else cpu)")  # fmt: skip


def _is_available(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index is None or device.index < torch.cuda.device_count())
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and mps.is_available()
    backend = getattr(torch, device.type, None)  # xpu, npu, ... expose is_available() / device_count()
    if backend is None or not callable(getattr(backend, "is_available", None)) or not backend.is_available():
        return False
    count = getattr(backend, "device_count", None)
    return device.index is None or count is None or device.index < count()


__all__ = ["add_device_argument", "available_devices", "default_device", "device_argument", "resolve_device"]
