"""Two CPU processes through `accelerate launch`: disjoint data shards, synchronised weights and codebooks."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from test_data import write_parquet_dataset

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_see_disjoint_examples_and_end_identical(tmp_path):
    data = write_parquet_dataset(tmp_path / "stream", 64)  # 64 distinct images, one epoch = 4 steps of 8 x 2
    write_parquet_dataset(data, 16, split="test")
    output = tmp_path / "run"
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(ROOT / "scripts" / "train.py"),
        "--model", "vqvae", "--preset", "mnist", "--resolution", "8", "--num_downsamples", "1",
        "--hidden_channels", "16", "--residual_channels", "8", "--num_embeddings", "16", "--embedding_dim", "4",
        "--dataset_name", str(data), "--streaming", "--train_batch_size", "8", "--max_train_steps", "4",
        "--report_to", "none", "--debug_rank_outputs", "--output_dir", str(output),
        "--dataloader_num_workers", "2", "--checkpointing_steps", "4",  # 2 decoding workers per process
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    # the run's log lines come from the main process only, not once per process
    assert result.stderr.count("DataLoader worker process(es) per training process") == 1, result.stderr[-4000:]
    assert result.stderr.count(f"wrote {output}") == 1

    seen = [json.loads((output / f"example_ids_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 32
    assert not set(seen[0]) & set(seen[1]), "the ranks saw disjoint examples"
    assert len(set(seen[0]) | set(seen[1])) == 64, "whose union is the whole dataset"

    rank0, rank1 = (load_file(output / f"weights_rank{rank}.safetensors") for rank in (0, 1))
    assert set(rank0) == set(rank1)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between the ranks"
    assert int(rank0["quantizers.0.ema_steps"]) == 4
    # The checkpoint records where each process's next batch begins in its own shard (32 examples each, all read).
    state = json.loads((output / "checkpoints" / "checkpoint-4" / "training_state.json").read_text())
    assert state["positions"] == [32, 32] and state["batches_in_epoch"] == 4
    assert (output / "model.safetensors").is_file() and (output / "metrics.json").is_file()
