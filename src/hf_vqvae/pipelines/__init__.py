"""Sampling pipelines (diffusers `DiffusionPipeline`s) over the priors and the VQ decoders."""

from .classifier_judge import ClassifierJudge
from .vqvae2_pipeline import VQVAE2Pipeline, check_priors_match, rejection_sample

__all__ = ["ClassifierJudge", "VQVAE2Pipeline", "check_priors_match", "rejection_sample"]
