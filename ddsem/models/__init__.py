"""Classifiers in a small registry: ``build_model(ModelConfig)``; later architectures join it."""

from ddsem.models.registry import (
    ARCHITECTURES,
    REFERENCE_NORM,
    build_model,
    has_batch_statistics,
    init_state,
    reference_config,
)

__all__ = [
    "ARCHITECTURES",
    "REFERENCE_NORM",
    "build_model",
    "has_batch_statistics",
    "init_state",
    "reference_config",
]
