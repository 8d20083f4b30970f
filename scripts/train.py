#!/usr/bin/env python
"""Train or fine-tune a VAE, VQ-VAE or VQ-VAE-2 with Accelerate.

    accelerate launch scripts/train.py                                  # offline default: VQ-VAE on 8x8 digits
    accelerate launch scripts/train.py --model vqvae2 --preset imagenet256-paper \\
        --dataset_name ILSVRC/imagenet-1k --streaming --max_train_steps 250000
    accelerate launch scripts/train.py configs/vqvae2-cifar10.yaml      # the same arguments from YAML or JSON

Any field of the model's config can be set too (--num_embeddings 256); `--help` lists the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from transformers import HfArgumentParser

import hf_vqvae  # noqa: F401  (registers the Auto classes)
from hf_vqvae.data import DataArguments
from hf_vqvae.training import ModelArguments, TrainArguments, TrainingInterrupted, parse_config_overrides, train
from hf_vqvae.training.builders import config_class_for, run_output_dir


def parse_args(argv: list[str] | None = None):
    """-> (ModelArguments, DataArguments, TrainArguments, config overrides)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, TrainArguments),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.epilog = "Model config fields (e.g. --num_embeddings 256, --beta 0.25) override the preset."
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        argv = arguments_from_file(argv[0])
    model_args, data_args, train_args, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    try:
        overrides = parse_config_overrides(remaining, config_class_for(model_args.model))
    except ValueError as error:
        parser.error(str(error))
    return model_args, data_args, train_args, overrides


def arguments_from_file(path: str) -> list[str]:
    """A YAML or JSON mapping of option names to values -> the equivalent command line (config fields included)."""
    text = Path(path).read_text()
    values = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    if not isinstance(values, dict):
        raise SystemExit(f"{path} must hold a mapping of option names to values")
    argv = []
    for name, value in values.items():
        if value is None or value is False:
            continue  # the default of every optional / boolean option
        argv.append(f"--{name}")
        if value is not True:
            argv.append(value if isinstance(value, str) else json.dumps(value))
    return argv


def main(parsed=None) -> dict:
    model_args, data_args, train_args, overrides = parsed or parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        metrics = train(model_args, data_args, train_args, overrides)
    except TrainingInterrupted as stop:  # Ctrl-C or SIGTERM: a checkpoint was saved
        print(f"\n{stop}", file=sys.stderr)
        raise SystemExit(stop.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C twice, or once before the first step
        print("\nstopped at once by Ctrl-C: nothing saved since the last checkpoint, if any (resume from one with "
              "--resume_from_checkpoint latest)", file=sys.stderr)  # fmt: skip
        raise SystemExit(130) from None
    if train_args.push_to_hub:
        publish(model_args, train_args)
    return metrics


def publish(model_args, train_args) -> dict | None:
    """--push_to_hub: scripts/push_to_hub.py on the finished run, from the main process only."""
    from accelerate import PartialState

    import push_to_hub

    if not PartialState().is_main_process:
        return None
    argv = [str(run_output_dir(model_args, train_args)), "--repo_id", train_args.hub_model_id]
    argv += ["--private"] * train_args.hub_private_repo + (["--token", train_args.hub_token] if train_args.hub_token else [])
    return push_to_hub.main(push_to_hub.parse_args(argv))


if __name__ == "__main__":
    main()
