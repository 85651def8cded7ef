"""What every ``ddsem analyze`` job shares: the sets it runs on, the real data, the figure
folder, and models trained on real data (stored once, reused by every analysis that needs
the same one).

Light imports only at module level (no torch): requests are built and validated first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.common import DataSource, check, load_data, real_space, whiten

if TYPE_CHECKING:
    import torch

    from ddsem.config import ModelConfig, TrainConfig
    from ddsem.data import ImageData
    from ddsem.db import Database
    from ddsem.db.sets import SetSummary
    from ddsem.jobs.workspace import Workspace

OUT = "figures"  # the default folder for figures (as curvature and landscape)

__all__ = [
    "OUT",
    "AnalysisSet",
    "check_image_shapes",
    "choose_sets",
    "figure_folder",
    "load_sets",
    "real_model",
    "real_tensors",
    "sets_space",
    "test_tensors",
]


def figure_folder(out: str | Path) -> Path:
    """``--out`` as a folder (created when the figure is written); a file there is refused."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"--out must be a folder; {path} is a file")
    return path


def check_image_shapes(
    summaries: list[SetSummary], shape: tuple[int, int, int] = (3, 32, 32)
) -> None:
    """Each set's images have ``shape`` (CIFAR's): refused before the real data is looked for
    (``load_sets`` checks them again against the data)."""
    for s in summaries:
        check(
            tuple(s.image_shape) == shape,
            f"set {s.name!r} has images of shape {tuple(s.image_shape)}, "
            f"the data set's are {shape}",
        )


def choose_sets(db: Database, methods: tuple[str, ...], names: tuple[str, ...]) -> list[SetSummary]:
    """The sets an analysis runs on: each method's newest set and each named set, without
    repeats, in the order given; neither: every set in the database."""
    from ddsem.db.sets import find_set, list_sets

    if not methods and not names:
        every = list_sets(db)
        if not every:
            raise UserError(
                "no distilled set yet: `ddsem distill --method dm` or `ddsem sets import FILE`"
            )
        return every
    found = [find_set(db, method=m) for m in methods] + [find_set(db, name=n) for n in names]
    return list({s.id: s for s in found}.values())


@dataclass
class AnalysisSet:
    """A distilled set as the analyses use it: normalised images and integer labels."""

    summary: SetSummary
    images: torch.Tensor  # (N, C, H, W) float32, in the set's space (normalised, or ZCA)
    labels: torch.Tensor  # (N,) int64
    zca: Any = None  # the set's ZCA transform (ddsem.data.zca.ZCA); None: normalised

    @property
    def name(self) -> str:
        return self.summary.name

    def normalised(self) -> torch.Tensor:
        """The images in the normalised space (a ZCA set's inverse-transformed), for pixel
        statistics and display."""
        return self.images if self.zca is None else self.zca.inverse_transform(self.images)

    def in_space(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised real images in this set's space (whitened for a ZCA set)."""
        return whiten(self.zca, x)

    @property
    def method(self) -> str:
        return self.summary.method


def load_sets(
    db: Database, summaries: list[SetSummary], data: ImageData, model: ModelConfig | None = None
) -> list[AnalysisSet]:
    """Each set's tensors, refused in one line when its images do not have the data set's
    shape (or the model's), or its labels are not classes of the data set."""
    import torch

    from ddsem.db.sets import set_tensors

    _, h, w, c = data.train_x.shape  # uint8 NHWC pixels
    shape = (c, h, w)
    if model is not None:
        shape = (model.channels, model.image_size, model.image_size)
    out = []
    for s in summaries:
        check(
            s.dataset == data.name,
            f"set {s.name!r} was distilled from {s.dataset}, the data given is {data.name}",
        )
        images, labels = set_tensors(db, s.id)
        if tuple(images.shape[1:]) != shape:
            raise UserError(
                f"set {s.name!r} has images of shape {tuple(images.shape[1:])}, "
                f"the data set's are {shape}"
            )
        if labels.ndim != 1 or labels.min() < 0 or labels.max() >= data.num_classes:
            raise UserError(f"set {s.name!r} has labels outside 0..{data.num_classes - 1}")
        zca = real_space(db, s)
        out.append(AnalysisSet(s, torch.from_numpy(images), torch.from_numpy(labels), zca))
    return out


def sets_space(summaries: list[SetSummary]) -> dict[str, Any] | None:
    """The one space of sets that share a model trained on real images (recognition,
    inverse, extra-training, agreement): None (normalised) or a ZCA set's transform key.
    Sets of different spaces are refused: one model learns the real images in one space."""
    import json

    spaces = {json.dumps(s.zca, sort_keys=True) for s in summaries}
    if len(spaces) > 1:
        names = ", ".join(f"{s.name} ({'ZCA' if s.zca else 'normalised'})" for s in summaries)
        raise UserError(
            f"these sets live in different spaces ({names}); the real-data model of this "
            "analysis learns the real images in one space: analyse them in separate runs"
        )
    return summaries[0].zca if summaries else None


def real_tensors(
    source: DataSource,
    dataset: str = "cifar10",
    samples: int | None = None,
    seed: int = 0,
    zca: Any = None,
) -> tuple[ImageData, torch.Tensor, torch.Tensor, Any]:
    """The real training images (all, or a class-stratified subset of ``samples``):
    (the data set, NCHW images normalised, or whitened by ``zca`` (the sets' ZCA transform),
    int64 labels, the indices chosen)."""
    import torch

    from ddsem.data import normalize, stratified_indices

    data = load_data(source, dataset)
    if samples is not None and not 1 <= samples <= len(data.train_y):
        raise UserError(f"--train-samples must be between 1 and {len(data.train_y)}, got {samples}")
    idx = stratified_indices(data.train_y, samples, seed)
    images = whiten(zca, normalize(data.train_x[idx]))
    return data, images, torch.from_numpy(data.train_y[idx].astype("int64")), idx


def test_tensors(
    data: ImageData, limit: int | None, zca: Any = None
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The real test images (all, or the class-stratified subset of ``limit`` every ddsem job
    uses, seed 0): (images normalised, or whitened by ``zca``, int64 labels, indices into the
    test split)."""
    import torch

    from ddsem.data import normalize, stratified_indices

    if limit is not None and not 1 <= limit <= len(data.test_y):
        raise UserError(f"--test-limit must be between 1 and {len(data.test_y)}, got {limit}")
    idx = stratified_indices(data.test_y, limit, 0)
    images = whiten(zca, normalize(data.test_x[idx]))
    return images, torch.from_numpy(data.test_y[idx].astype("int64")), idx


def real_model(
    ws: Workspace,
    model: ModelConfig,
    train: TrainConfig,
    real: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    key: dict[str, Any],
    seed: int,
    label: str,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
    """A model trained on real data, from the database when one of the same parameters is
    stored, else trained (the one engine: initial state of ``seed``, minibatch order of
    ``seed``) and stored with its test accuracy.

    ``key`` says which real and test images were used (data set, subset sizes, seeds, and
    "zca": the transform of ``sets_space`` when they are whitened, which makes another model);
    with the model and training configs it keys the stored model. Returns (state, result with
    "test_accuracy", trained now)."""
    import torch

    from ddsem.config import to_dict
    from ddsem.db.analyses import find_real_model, save_real_model
    from ddsem.models import init_state
    from ddsem.train import evaluate_population, train_population

    params = {"model": to_dict(model), "train": to_dict(train), "seed": seed, **key}
    stored = find_real_model(ws.db, params)
    if stored is not None:
        state, result = stored
        return {k: torch.from_numpy(v) for k, v in state.items()}, result, False
    ws.db.require_writable()
    x, y = real
    device = ws.torch_device()
    with ws.progress.phase(label, train.steps) as advance:
        (state,) = train_population(
            model, x, y, torch.ones(1, len(y)), [init_state(model, seed)], train,
            device=device, batch_seed=seed, progress=advance,
        )  # fmt: skip
    ev = evaluate_population(model, [state], test[0], test[1], device=device)
    result = {"test_accuracy": float(ev.accuracy[0]), "test_images": len(test[1])}
    save_real_model(ws.db, params, state, result)
    return state, result, True
