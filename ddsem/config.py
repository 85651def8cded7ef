"""Typed, frozen configurations for every protocol. Defaults are the analysis paper's.

Each default says where it comes from; a CPU test shrinks a config (width, steps, images),
it never takes another code path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """A classifier. ConvNet defaults: depth 3, width 128, instance norm, average pooling
    (the dataset-distillation ConvNet; its "instancenorm" is GroupNorm(C, C, affine=True))."""

    arch: str = "convnet"
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"  # instancenorm | batchnorm | none
    pooling: str = "avg"  # avg | max
    channels: int = 3
    num_classes: int = 10
    image_size: int = 32


@dataclass(frozen=True)
class TrainConfig:
    """SGD with momentum. Defaults: the paper's protocol for training on distilled data
    (lr 0.01, momentum 0.9, 300 full-batch iterations, no weight decay, no augmentation)."""

    steps: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int | None = None  # None: full batch


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a (nested) config dataclass, for provenance and run keys."""
    return asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from ``to_dict`` output, ignoring unknown keys."""
    names = {f for f in cls.__dataclass_fields__}
    return cls(**{k: v for k, v in data.items() if k in names})


__all__ = ["ModelConfig", "TrainConfig", "to_dict", "from_dict", "field"]


@dataclass(frozen=True)
class InfluenceConfig:
    """Exact leave-one-out influence (paper section 5.1). The model and training protocol are a
    ``ModelConfig`` and a ``TrainConfig`` beside it (the paper's: ConvNet-128-3, 300 steps)."""

    # distilled: the full set and the set without image i (paper 5.1, eq. of influence);
    # real: a fixed sample of real training images with and without image i added
    # (paper 5.1, "independent of other distilled images": 100 additional real images).
    context: str = "distilled"
    real_images: int = 100  # paper 5.1: "we utilize 100 additional real images"
    test_limit: int | None = None  # None: the whole test split (paper: all 10,000 CIFAR-10 tests)
    selection_seed: int = 0  # picks the test subset and the real images (same for every seed)
    top_k: int = 100  # most influenced test images kept per distilled image for plain SQL


# -- annotation and the attribute vocabulary (ddsem annotate / ddsem attributes) -----------------


@dataclass(frozen=True)
class AnnotateConfig:
    """Annotation of real images (paper section 5.2: LLaVA asked "describe the object" and
    "describe the background" about every test image)."""

    annotator: str = "color"  # color: offline, any CPU; llava: the paper's annotator (a GPU)
    model: str = "llava-hf/llava-1.5-7b-hf"  # LLaVA-1.5 (Liu et al., 2023b), as in the paper
    max_new_tokens: int = 96  # not stated in the paper: room for a few sentences
    llava_batch_size: int = 16  # ours: fits a 7B model in fp16 on one 24 GB GPU
    color_batch_size: int = 1000  # ours: pixels only, a batch is one database transaction
    split: str = "test"  # the paper annotates the real test images


@dataclass(frozen=True)
class AttributeConfig:
    """Candidate attributes from the responses (the paper compiled recurring attributes by hand;
    this is the automatic first pass: unigrams and bigrams without English stop words)."""

    min_df: int = 5  # ours: a term must occur in this many responses of its prompt kind
    max_terms: int = 100  # ours: the most frequent terms kept per prompt kind
    ngram_max: int = 2  # unigrams and bigrams ("yellow", "blue sky")


# -- curvature and loss landscape (ddsem curvature / ddsem landscape) ----------------------------


@dataclass(frozen=True)
class CurvatureConfig:
    """Hessian of the loss on each data source at checkpoints of a model trained on real data
    (paper section 4.3 and appendix A). The number of iterations and the checkpoint spacing are
    per command: checkpoints of one run all lie on the same deterministic trajectory."""

    batch_size: int = 256  # paper 4.3: the model is trained on real data with batch 256
    lr: float = 0.01  # paper 4.3: SGD lr 0.01
    momentum: float = 0.9  # paper 4.3: momentum 0.9
    probes: int = 100  # issue 8 (--probes 100); PyHessian's trace(maxIter=100)
    rel_err: float = 0.05  # issue 8: stop once the standard error is 5% of |trace|
    min_probes: int = 10  # ours: a standard error from fewer probes is too noisy to stop on
    probe_block: int = 10  # ours: probes per vmapped pass (speed vs memory, same estimator)
    chunk_size: int = 1000  # ours: images per Hessian-vector pass (memory only)
    real_samples: int = 5000  # ours: the real source is a uniform random subsample (unbiased)
    lanczos_steps: int = 100  # issue 8 (--lanczos-steps 100); PyHessian's density(iter=100)
    lanczos_runs: int = 1  # PyHessian's density(n_v=1)

    def train_config(self, iterations: int) -> TrainConfig:
        return TrainConfig(
            steps=iterations, lr=self.lr, momentum=self.momentum, batch_size=self.batch_size
        )


@dataclass(frozen=True)
class LandscapeConfig:
    """Appendix A's loss plane through the initial weights, the weights after one epoch on real
    data and the weights after training on the distilled set (same initialisation)."""

    grid: int = 21  # issue 8 (--grid 21): points per axis
    margin: float = 0.25  # ours: room around the three points, as a fraction of each axis' span
    real_epochs: int = 1  # appendix A: one epoch on real data
    batch_size: int = 256  # as the curvature training (paper 4.3)
    lr: float = 0.01  # paper 4.3
    momentum: float = 0.9  # paper 4.3
    distilled_steps: int = 300  # paper section 2: 300 full-batch iterations on distilled data
    distilled_lr: float = 0.01  # paper section 2: SGD lr 0.01, momentum 0.9
    test_samples: int | None = None  # None: the whole test split (10,000 for CIFAR-10)
    trajectory_points: int = 30  # ours: checkpoints of each training drawn on the plane
