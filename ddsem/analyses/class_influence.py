"""Appendix D: does a distilled image hold information outside its labelled class?

From a stored influence matrix alone (no training): each distilled image's mean influence on
the test images of its own class and on those of the other classes, and how many of its most
influenced test images belong to another class. The paper found no strong signal: out-class
influence exists but is small, and the top-10 most influenced test images are all in-class.

What to compare with: the in-class and out-class means of one image are paired, so a set's
claim "in-class influence is larger" is a Wilcoxon signed-rank test over its images; the
out-class share of the top k is compared with the share of other-class test images among all
test images (what k test images drawn at random would give).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddsem.errors import UserError

TOP_K = (10, 100)  # appendix D: the top 10, then the top 100 most influenced test images


@dataclass
class ClassInfluence:
    """Per distilled image and per set, of one set's influence matrix."""

    in_class: np.ndarray  # (N,) mean influence on test images of the image's class
    out_class: np.ndarray  # (N,) mean influence on test images of the other classes
    top_out: dict[
        int, np.ndarray
    ]  # k -> (N,) share of the k most influenced tests of other classes
    chance_out: np.ndarray  # (N,) share of test images of other classes (random-k expectation)
    wilcoxon_p: float | None  # in-class > out-class over the images (one-sided); None: too few
    labels: np.ndarray  # (N,) the distilled images' classes

    def summary(self) -> dict[str, Any]:
        """The set's figures, JSON-ready."""

        def stats(values: np.ndarray) -> dict[str, float]:
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            return {"mean": float(values.mean()), "sd": sd}

        return {
            "images": len(self.labels),
            "in_class": stats(self.in_class),
            "out_class": stats(self.out_class),
            "positive_out_class": int((self.out_class > 0).sum()),
            "in_greater": int((self.in_class > self.out_class).sum()),
            "wilcoxon_p": self.wilcoxon_p,
            "top_out_share": {str(k): float(v.mean()) for k, v in self.top_out.items()},
            "chance_out_share": float(self.chance_out.mean()),
        }

    def per_image(self) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "label": int(self.labels[i]),
                "in_class": float(self.in_class[i]),
                "out_class": float(self.out_class[i]),
                **{f"top{k}_out_share": float(v[i]) for k, v in self.top_out.items()},
            }
            for i in range(len(self.labels))
        ]


def class_influence(
    influence: np.ndarray,
    distilled_labels: np.ndarray,
    test_classes: np.ndarray,
    top_k: tuple[int, ...] = TOP_K,
) -> ClassInfluence:
    """``influence`` (N, T): image i's influence on test image j (positive: i helps j)."""
    from scipy.stats import wilcoxon

    influence = np.asarray(influence, dtype=np.float64)
    labels = np.asarray(distilled_labels, dtype=np.int64)
    classes = np.asarray(test_classes, dtype=np.int64)
    n, t = influence.shape
    same = labels[:, None] == classes[None, :]  # (N, T)
    in_count, out_count = same.sum(1), (~same).sum(1)
    if (in_count == 0).any() or (out_count == 0).any():
        missing = sorted(set(labels[(in_count == 0) | (out_count == 0)].tolist()))
        raise UserError(
            f"the influence run's test images lack classes {missing} (own or other): "
            "class influence needs test images of every distilled image's class and others"
        )
    in_class = np.where(same, influence, 0).sum(1) / in_count
    out_class = np.where(~same, influence, 0).sum(1) / out_count
    order = np.argsort(-influence, axis=1, kind="stable")  # most influenced first
    top_out = {}
    for k in top_k:
        kk = min(k, t)
        top_out[k] = (~np.take_along_axis(same, order[:, :kk], axis=1)).mean(1)
    p = None
    diff = in_class - out_class
    if n >= 2 and np.any(diff != 0):
        p = float(wilcoxon(in_class, out_class, alternative="greater").pvalue)
    return ClassInfluence(in_class, out_class, top_out, out_count / t, p, labels)


def class_influence_figure(results: dict[str, ClassInfluence], path: Path, title: str) -> Path:
    """Left: each image's in-class against out-class mean influence, one colour per set (the
    diagonal: equal); right: the out-class share of each set's top-k most influenced test
    images against what k random test images give."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ["#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    lo, hi = np.inf, -np.inf
    for (name, r), colour in zip(results.items(), colours * 10, strict=False):
        left.scatter(r.in_class, r.out_class, s=14, color=colour, label=name, edgecolor="black",
                     linewidth=0.3)  # fmt: skip
        lo = min(lo, r.in_class.min(), r.out_class.min())
        hi = max(hi, r.in_class.max(), r.out_class.max())
    if np.isfinite(lo):
        left.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--")
    left.axhline(0, color="grey", linewidth=0.5)
    left.set_xlabel("mean influence on test images of its class")
    left.set_ylabel("mean influence on test images of other classes")
    left.legend(fontsize="small")
    names = list(results)
    ks = sorted({k for r in results.values() for k in r.top_out})
    width = 0.8 / max(len(ks), 1)
    x = np.arange(len(names))
    for j, k in enumerate(ks):
        shares = [results[n].top_out[k].mean() for n in names]
        right.bar(x + j * width, shares, width, label=f"top {k}", edgecolor="black")
    chance = [results[n].chance_out.mean() for n in names]
    right.scatter(x + width * (len(ks) - 1) / 2, chance, marker="_", s=600, color="black",
                  label="random test images", zorder=3)  # fmt: skip
    right.set_xticks(x + width * (len(ks) - 1) / 2, names)
    right.set_ylabel("share of other-class test images")
    right.set_ylim(0, 1)
    right.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
