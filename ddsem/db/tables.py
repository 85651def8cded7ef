"""Every table of the database. Later subsystems add theirs here, the same way.

Conventions: integer surrogate keys; natural keys enforced by unique constraints; tensors as
``.npy`` blobs (``ddsem.db.codec``); configurations and provenance as JSON text; a ``status``
column on long-job rows ("running" until every unit is written, then "complete").
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def now() -> datetime:
    return datetime.now(UTC)


class Meta(SQLModel, table=True):
    """Key/value facts about the database itself (schema_version)."""

    key: str = Field(primary_key=True)
    value: str


class Dataset(SQLModel, table=True):
    """A real data set (CIFAR-10, CIFAR-100) as the database knows it."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    source: str
    classes_json: str  # JSON list of class names in label order
    num_train: int
    num_test: int
    created_at: datetime = Field(default_factory=now)


class Image(SQLModel, table=True):
    """One real image (registered when a command first uses it), with a small display PNG."""

    __table_args__ = (UniqueConstraint("dataset_id", "split", "index"),)
    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True)
    split: str
    index: int
    label: int = Field(index=True)
    png: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class DistilledSet(SQLModel, table=True):
    """A distilled data set: made by ``ddsem distill`` or imported from others' files."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    method: str = Field(index=True)
    dataset: str = "cifar10"
    ipc: int
    num_images: int
    image_shape_json: str  # JSON [C, H, W]
    synthetic_lr: float | None = None  # MTT's learned learning rate, when given
    provenance_json: str = "{}"  # where it came from: file, format, config, wall time, ...
    created_at: datetime = Field(default_factory=now)


class ZCATransform(SQLModel, table=True):
    """A fitted ZCA whitening (``ddsem.data.zca``: kornia's ZCAWhitening, MTT's --zca) of a data
    set's training split: kornia's mean vector, transform and inverse as float32 ``.npy`` blobs.
    Keyed by the data set, eps and a hash of the training pixels it was fitted on, so it is
    fitted once and every set and job in that space applies the same one."""

    __table_args__ = (UniqueConstraint("dataset", "eps", "fingerprint"),)
    id: int | None = Field(default=None, primary_key=True)
    dataset: str = Field(index=True)
    eps: float
    fingerprint: str  # ddsem.data.zca.fingerprint of the training pixels
    num_images: int
    fitted_on: str  # what and how: split, pixel space, kornia version
    mean: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # (1, D)
    transform: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # (D, D)
    inverse: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # (D, D)
    created_at: datetime = Field(default_factory=now)


class SetSpace(SQLModel, table=True):
    """A distilled set whose images are in ZCA space (MTT's --zca): its transform. A set
    without a row here is in the normalised space. (A table, not a DistilledSet column, so
    databases of schema 2 gain it on open without a migration.)"""

    set_id: int = Field(foreign_key="distilledset.id", primary_key=True, ondelete="CASCADE")
    zca_id: int = Field(foreign_key="zcatransform.id", index=True)


class DistilledImage(SQLModel, table=True):
    """One distilled image: float32 tensor in the set's space (normalised, or ZCA when the set
    has a SetSpace row), values kept unclipped; the PNG is always in pixels."""

    __table_args__ = (UniqueConstraint("set_id", "index"),)
    id: int | None = Field(default=None, primary_key=True)
    set_id: int = Field(foreign_key="distilledset.id", index=True, ondelete="CASCADE")
    index: int
    label: int
    tensor: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    png: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


# -- influence (exact leave-one-out) -------------------------------------------------------------


class InfluenceRun(SQLModel, table=True):
    """One (set, seed, context, estimator) influence run: exact leave-one-out (``loo``) or an
    approximation (``if``, ``tracin``, ``trak``; schema version 3). ``status`` is "running" until
    every model and every influence row is written, then "complete"; readers ignore runs that
    are not complete. An estimator's run has no InfluenceModel rows: ``num_models`` counts the
    trainings it cost."""

    __table_args__ = (UniqueConstraint("set_id", "seed", "context", "estimator"),)
    id: int | None = Field(default=None, primary_key=True)
    set_id: int = Field(foreign_key="distilledset.id", index=True, ondelete="CASCADE")
    seed: int
    context: str = "distilled"  # distilled | real
    estimator: str = "loo"  # loo (exact) | if | tracin | trak
    status: str = "running"
    config_json: str  # model + training config, test selection, context parameters
    config_hash: str
    test_split: str = "test"
    test_indices: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # int64 .npy blob
    num_models: int
    init_state: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # codec.state_to_blob
    full_accuracy: float | None = None  # test accuracy of the model trained on the whole set
    device: str = "cpu"
    wall_seconds: float | None = None
    created_at: datetime = Field(default_factory=now)
    finished_at: datetime | None = None


class InfluenceModel(SQLModel, table=True):
    """One trained model of a run: per-test-image losses and accuracy.

    model_index -1 is the reference model (all distilled images; or the 100 real images in the
    real context); model_index i is the model without (or, real context, with) distilled image i.
    """

    __table_args__ = (UniqueConstraint("run_id", "model_index"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="influencerun.id", index=True, ondelete="CASCADE")
    model_index: int
    losses: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # float32 (T,)
    accuracy: float


class InfluenceRow(SQLModel, table=True):
    """influence(i, j) for one distilled image i over the run's test images (float32 blob)."""

    __table_args__ = (UniqueConstraint("run_id", "distilled_index"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="influencerun.id", index=True, ondelete="CASCADE")
    distilled_index: int
    values: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # float32 (T,)


class InfluenceTopK(SQLModel, table=True):
    """The k most influenced test images of each distilled image, for plain SQL."""

    __table_args__ = (UniqueConstraint("run_id", "distilled_index", "rank"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="influencerun.id", index=True, ondelete="CASCADE")
    distilled_index: int = Field(index=True)
    rank: int  # 0 = most influenced
    test_index: int  # index into the data set's split (not into the run's subset)
    test_label: int
    value: float


# -- annotation and attributes -------------------------------------------------------------------


class Annotation(SQLModel, table=True):
    """One answer of an annotator about one real image for one prompt."""

    __table_args__ = (UniqueConstraint("image_id", "prompt_name", "annotator", "model"),)
    id: int | None = Field(default=None, primary_key=True)
    image_id: int = Field(foreign_key="image.id", index=True, ondelete="CASCADE")
    prompt_name: str  # object | background | a user's --prompt NAME
    prompt: str
    annotator: str  # llava | color
    model: str  # model name or path; "palette-v1" for the colour annotator
    response: str
    created_at: datetime = Field(default_factory=now)


class Attribute(SQLModel, table=True):
    """A semantic attribute of the vocabulary ("yellow", "blue sky"), with its synonyms."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    kind: str = "any"  # object | background | any: which prompt's responses it is matched in
    synonyms_json: str = "[]"
    source: str = "extracted"  # extracted | manual
    document_frequency: int = 0


class ImageAttribute(SQLModel, table=True):
    """Image has attribute: recomputed from the annotations whenever the vocabulary changes."""

    image_id: int = Field(foreign_key="image.id", primary_key=True, ondelete="CASCADE")
    attribute_id: int = Field(foreign_key="attribute.id", primary_key=True, ondelete="CASCADE")


class AttributeScore(SQLModel, table=True):
    """How well a distilled image's influence ranking predicts an attribute (PR-AUC), and
    whether that is better than chance (``ddsem.significance``; schema version 2)."""

    __table_args__ = (
        UniqueConstraint("set_id", "scope", "distilled_index", "attribute_id", "class_filter"),
    )
    id: int | None = Field(default=None, primary_key=True)
    set_id: int = Field(foreign_key="distilledset.id", index=True, ondelete="CASCADE")
    scope: str  # "seed:<S>" (one run) or "mean" (influence averaged over seeds)
    context: str = "distilled"
    distilled_index: int
    attribute_id: int = Field(foreign_key="attribute.id", index=True, ondelete="CASCADE")
    class_filter: int = -1  # -1: all test images; c: only test images of class c
    estimator: str = "average_precision"  # scikit-learn's definition
    ap: float
    positive_rate: float
    positives: int
    lift: float  # AP / chance AP (1: no better than a random ranking)
    # Version 2; NULL on scores stored before it (re-run `ddsem rank` to fill them):
    chance_ap: float | None = None  # exact expected AP of a random ranking (T, P)
    p_value: float | None = None  # one-sided permutation p-value of the AP
    q_value: float | None = None  # Benjamini-Hochberg over the scores of one rank run
    draws: int | None = None  # null draws behind the p-value (p >= 1 / (draws + 1))


# -- distillation, curvature and other analyses --------------------------------------------------


class DistillRun(SQLModel, table=True):
    """A distillation job: config, progress and the latest checkpoint, so --resume continues."""

    id: int | None = Field(default=None, primary_key=True)
    set_name: str = Field(index=True)
    method: str
    config_json: str
    config_hash: str
    status: str = "running"  # running | complete
    iteration: int = 0
    checkpoint: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    wall_seconds: float = 0.0
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)


class CurvatureRun(SQLModel, table=True):
    """A curvature job: a model trained on real data, Hessian measured at checkpoints."""

    id: int | None = Field(default=None, primary_key=True)
    config_json: str
    config_hash: str = Field(index=True)
    sources_json: str  # JSON list of source names (distilled set names and/or "real")
    status: str = "running"
    created_at: datetime = Field(default_factory=now)
    finished_at: datetime | None = None


class CurvaturePoint(SQLModel, table=True):
    """Hessian facts of one source at one training iteration."""

    __table_args__ = (UniqueConstraint("run_id", "source", "iteration"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="curvaturerun.id", index=True, ondelete="CASCADE")
    source: str
    iteration: int
    trace: float
    trace_stderr: float
    probes: int
    top_eigenvalue: float | None = None
    density: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class AnalysisRun(SQLModel, table=True):
    """Any other analysis (landscape, evaluate, recognition, mixing, ...): params in, result out."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)
    params_json: str
    params_hash: str = Field(index=True)
    status: str = "running"
    result_json: str = "{}"
    data: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    figure_path: str | None = None
    created_at: datetime = Field(default_factory=now)


class JobClaim(SQLModel, table=True):
    """A unit of work a process is doing now (a chunk of influence models, a batch of answers,
    a distillation), so that the same job started twice never does a unit twice. A claim whose
    process is gone (its pid is dead on this host, or its heartbeat is old) can be taken over."""

    key: str = Field(primary_key=True)  # e.g. "influence:<run>:<first model>"
    owner: str  # "<host>:<pid>:<random>"
    heartbeat: datetime = Field(default_factory=now)
