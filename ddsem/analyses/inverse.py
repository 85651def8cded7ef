"""The inverse pipeline (paper Fig. 2): models trained on real data classify distilled images
(accuracy per set and per class, left), and the penultimate features of distilled and real
test images embedded in 2-D and plotted by class (right).

Tensors and configs in, numbers and PNG figures out; storage and progress are the job's
(``ddsem.jobs.analyze.inverse``). Heavy imports (torch, matplotlib, sklearn, umap) inside
functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ddsem.config import ModelConfig

__all__ = [
    "MARKERS",
    "Classification",
    "accuracy_figure",
    "available_embedder",
    "classify",
    "embed_2d",
    "embedding_figure",
    "penultimate_features",
    "per_class_accuracy",
]

# one marker per distilled set on the embedding (real test points are small dots)
MARKERS = ("o", "s", "^", "D", "P", "X", "*", "v", "<", ">", "h", "p")


@dataclass
class Classification:
    """A real-data model's predictions on a distilled set."""

    predictions: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64
    num_classes: int

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels)) if len(self.labels) else 0.0

    @property
    def per_class(self) -> list[float | None]:
        return per_class_accuracy(self.predictions, self.labels, self.num_classes)

    @property
    def counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.num_classes).astype(int).tolist()


def per_class_accuracy(
    predictions: np.ndarray, labels: np.ndarray, num_classes: int
) -> list[float | None]:
    """For each class c: the fraction of images labelled c that are predicted c (None when the
    set has no image of c)."""
    out: list[float | None] = []
    for c in range(num_classes):
        mine = labels == c
        out.append(float(np.mean(predictions[mine] == c)) if mine.any() else None)
    return out


def classify(
    model: ModelConfig,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
) -> Classification:
    """The model's predictions (eval mode: BatchNorm uses its running statistics) on images."""
    from ddsem.train import evaluate_population

    ev = evaluate_population(model, [state], images, labels, device=device)
    return Classification(
        ev.predictions[0].numpy().astype(np.int64),
        labels.numpy().astype(np.int64),
        model.num_classes,
    )


def _final_linear(net: Any) -> Any:
    from torch import nn

    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no nn.Linear layer")
    return linears[-1]


def penultimate_features(
    model: ModelConfig,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    chunk_size: int = 500,
) -> np.ndarray:
    """The input of the model's last linear layer for every image (N, D) float32, captured by
    a forward hook (so it works for every architecture in ddsem.models), in eval mode."""
    import torch

    from ddsem.models import build_model

    device = torch.device(device)
    net = build_model(model)
    net.load_state_dict(state)
    net = net.to(device).eval()
    captured: list[torch.Tensor] = []

    def hook(_module, inputs, _output):
        captured.append(inputs[0].detach().flatten(1).float().cpu())

    handle = _final_linear(net).register_forward_hook(hook)
    try:
        with torch.no_grad():
            for s in range(0, images.shape[0], chunk_size):
                net(images[s : s + chunk_size].to(device))
    finally:
        handle.remove()
    if not captured:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(captured).numpy().astype(np.float32)


def available_embedder() -> str:
    """The 2-D embedder at hand: "umap" when umap-learn is importable, else "tsne"
    (scikit-learn's t-SNE, a dependency of ddsem)."""
    try:
        import umap  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "tsne"
    return "umap"


def embed_2d(
    features: np.ndarray, n_neighbors: int, seed: int, method: str | None = None
) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of ``features`` and the embedder used: UMAP (umap-learn, as
    the paper's notebook: n_neighbors, random_state) when importable, else scikit-learn's
    t-SNE (perplexity 30, or less for few points; PCA initialisation; random_state=seed).
    ``method`` ("umap" or "tsne") forces one; None: ``available_embedder()``."""
    n = len(features)
    x = np.asarray(features, dtype=np.float32)
    method = method or available_embedder()
    if n < 3:  # neither embedder works on so few points: the first two coordinates
        out = np.zeros((n, 2), dtype=np.float32)
        out[:, : min(2, x.shape[1])] = x[:, :2]
        return out, "identity"
    if method == "umap":
        import umap  # type: ignore[import-not-found]

        reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), random_state=seed)
        return np.asarray(reducer.fit_transform(x), dtype=np.float32), "umap"
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return np.asarray(tsne.fit_transform(x), dtype=np.float32), "tsne"


# -- figures --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_figure(
    models: list[str],
    test_accuracy: list[float],
    sets: list[str],
    accuracy: np.ndarray,
    chance: float,
    path: Path,
    *,
    title: str = "real-data models classifying distilled data",
) -> Path:
    """Fig. 2 left: grouped bars, for each distilled set the accuracy of every real-data model
    (the model's own real test accuracy in the legend), with chance level dashed.

    ``accuracy`` is (models, sets), in [0, 1]."""
    plt = _pyplot()
    acc = np.asarray(accuracy, dtype=float).reshape(len(models), len(sets))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(sets) * (1 + len(models)) + 1), 4))
    width = 0.8 / max(1, len(models))
    x = np.arange(len(sets))
    colors = plt.get_cmap("Blues")(np.linspace(0.45, 0.9, max(1, len(models))))
    for i, (m, t) in enumerate(zip(models, test_accuracy, strict=True)):
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(
            pos, 100 * acc[i], width, color=colors[i], edgecolor="black", linewidth=0.5,
            label=f"{m} (real test {100 * t:.1f}%)",
        )  # fmt: skip
        for b, v in zip(bars, acc[i], strict=True):
            ax.annotate(
                f"{100 * v:.0f}", (b.get_x() + b.get_width() / 2, 100 * v), ha="center",
                va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points",
            )  # fmt: skip
    ax.axhline(100 * chance, color="grey", ls="--", lw=1, label=f"chance ({100 * chance:.0f}%)")
    ax.set_xticks(x)
    ax.set_xticklabels(
        sets, rotation=20 if len(sets) > 4 else 0, ha="right" if len(sets) > 4 else "center"
    )
    ax.set_ylabel("accuracy on the distilled set (%)")
    ax.set_ylim(0, 108)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def embedding_figure(
    test_xy: np.ndarray,
    test_labels: np.ndarray,
    sets: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: list[str] | tuple[str, ...],
    path: Path,
    *,
    title: str,
) -> Path:
    """Fig. 2 right: the 2-D embedding coloured by class; real test images as small dots, each
    distilled set's images as larger marked symbols with a black edge (one marker per set)."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7.5, 6))
    dot = float(np.clip(6000 / max(1, len(test_labels)), 3.0, 14.0))  # fewer points, larger
    ax.scatter(
        test_xy[:, 0], test_xy[:, 1], c=[cmap(int(c) % cmap.N) for c in test_labels], s=dot,
        alpha=0.5, linewidths=0, rasterized=True,
    )  # fmt: skip
    set_handles = []
    for k, (name, (xy, labels)) in enumerate(sets.items()):
        marker = MARKERS[k % len(MARKERS)]
        ax.scatter(
            xy[:, 0], xy[:, 1], c=[cmap(int(c) % cmap.N) for c in labels], s=55, marker=marker,
            edgecolors="black", linewidths=0.8, zorder=3,
        )  # fmt: skip
        set_handles.append(
            Line2D([], [], marker=marker, ls="", mfc="white", mec="black", ms=7, label=name)
        )
    class_handles = [
        Line2D([], [], marker="o", ls="", mfc=cmap(c % cmap.N), mec="none", ms=6, label=name)
        for c, name in enumerate(classes)
    ]
    first = ax.legend(
        handles=class_handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
        title="class", title_fontsize=8, frameon=False,
    )  # fmt: skip
    ax.add_artist(first)
    ax.legend(
        handles=[
            Line2D([], [], marker=".", ls="", color="grey", ms=5, label="real test"),
            *set_handles,
        ],
        fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0), title="images",
        title_fontsize=8, frameon=False,
    )  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
