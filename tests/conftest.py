import os
from pathlib import Path

import datasets
import pytest
import torch

# Nothing in the tests may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# datasets sleeps this long (5 s) whenever a shuffled stream's reader threads close (a guard against an Arrow
# shutdown crash, apache/arrow#45214); the tests close many tiny streams, so they wait less.
datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.2

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # pytest-xdist runs one worker per core
    yield


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED
