#!/usr/bin/env python
"""Train or fine-tune a VAE, VQ-VAE or VQ-VAE-2 with Accelerate.

    accelerate launch scripts/train.py                                  # offline default: VQ-VAE on 8x8 digits
    accelerate launch scripts/train.py --model vqvae2 --preset imagenet256-paper \\
        --dataset_name ILSVRC/imagenet-1k --streaming --max_train_steps 250000
    accelerate launch scripts/train.py configs/vqvae-mnist.yaml         # the same arguments from YAML or JSON

Any field of the model's config can be set too (--num_embeddings 256); `--help` lists the rest.
"""

from __future__ import annotations

import logging
import sys

from transformers import HfArgumentParser

import hf_vqvae  # noqa: F401  (registers the Auto classes)
from hf_vqvae.data import DataArguments
from hf_vqvae.training import ModelArguments, TrainArguments, parse_config_overrides, train
from hf_vqvae.training.builders import config_class_for


def parse_args(argv: list[str] | None = None):
    """-> (ModelArguments, DataArguments, TrainArguments, config overrides)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainArguments), description=__doc__)
    parser.epilog = "Model config fields (e.g. --num_embeddings 256, --beta 0.25) override the preset."
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        loader = parser.parse_yaml_file if argv[0].endswith((".yaml", ".yml")) else parser.parse_json_file
        model_args, data_args, train_args = loader(argv[0], allow_extra_keys=False)
        return model_args, data_args, train_args, {}
    model_args, data_args, train_args, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    try:
        overrides = parse_config_overrides(remaining, config_class_for(model_args.model))
    except ValueError as error:
        parser.error(str(error))
    return model_args, data_args, train_args, overrides


def main(parsed=None) -> dict:
    model_args, data_args, train_args, overrides = parsed or parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return train(model_args, data_args, train_args, overrides)


if __name__ == "__main__":
    main()
