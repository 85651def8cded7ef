"""Classifiers in a small registry: ``build_model(ModelConfig)``; later architectures join it."""

from ddsem.models.registry import ARCHITECTURES, build_model, has_batch_statistics, init_state

__all__ = ["ARCHITECTURES", "build_model", "has_batch_statistics", "init_state"]
