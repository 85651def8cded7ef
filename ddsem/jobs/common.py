"""What several jobs share: request validation, the data source, the set a request means, and
the words for a configuration that differs from a stored one.

Light imports only (no torch): requests are built and validated before any heavy work.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Union

from ddsem.errors import UserError

if TYPE_CHECKING:
    from ddsem.data import ImageData
    from ddsem.db import Database
    from ddsem.db.sets import SetSummary

# Where real images come from: a path (torchvision folder, image folder, .tar.gz), an ImageData
# already in memory (tests, notebooks), or None ($DDSEM_DATA, then the usual places).
DataSource = Union[str, os.PathLike, "ImageData", None]  # noqa: UP007  (a forward reference)


# -- validation: one clear line, raised where a request is built ----------------------------------


def check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


# ours: no count, size or step of ddsem needs more (torch takes sizes as int64, numpy draws
# as int32 in places); beyond it an option is a typo, and refusing it beats an overflow deep
# inside torch. Floats are held to float32's range, where they end up (learning rates, images).
INT_LIMIT = 2**31 - 1
FLOAT_LIMIT = 3.4e38


def _number(value: object, what: str) -> float | int:
    """``value`` as a number, refused unless it is a real, finite one (not a bool, NaN or inf)
    within ``INT_LIMIT`` (integers) or ``FLOAT_LIMIT`` (floats) in magnitude."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UserError(f"{what} must be a number, got {clip(repr(value))}")
    if isinstance(value, Integral):
        if abs(int(value)) > INT_LIMIT:
            raise UserError(f"{what} must be at most {INT_LIMIT} in size, got {clip(str(value))}")
        return int(value)
    if not math.isfinite(float(value)):
        raise UserError(f"{what} must be a finite number, got {float(value)}")
    if abs(float(value)) > FLOAT_LIMIT:
        raise UserError(f"{what} must be at most {FLOAT_LIMIT:g} in size, got {float(value):g}")
    return float(value)


def finite(value: int | float | None, what: str) -> None:
    """``value`` is None (not given) or a finite number."""
    if value is not None:
        _number(value, what)


def positive(value: int | float | None, what: str) -> None:
    """``value`` is None (not given) or a finite number > 0."""
    if value is not None and _number(value, what) <= 0:
        raise UserError(f"{what} must be positive, got {value}")


def at_least(value: int | float | None, least: int | float, what: str) -> None:
    """``value`` is None (not given) or a finite number >= ``least``."""
    if value is not None and _number(value, what) < least:
        raise UserError(f"{what} must be at least {least}, got {value}")


def in_range(
    value: int | float | None,
    low: float,
    high: float,
    what: str,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``value`` is None (not given) or a finite number in [low, high] (an open end excluded)."""
    if value is None:
        return
    v = _number(value, what)
    if (v <= low if low_open else v < low) or (v >= high if high_open else v > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UserError(f"{what} must lie in {bounds}, got {value}")


MAX_WIDTH = 8192  # ours: 64x the papers' 128; a wider ConvNet does not fit one GPU


def convnet_fits(width: int, depth: int, image_size: int = 32) -> None:
    """A ConvNet of ``depth`` blocks halves the image ``depth`` times: it needs
    ``image_size / 2**depth >= 1`` (depth 5 at most for 32x32 images), and width >= 1."""
    positive(width, "--width")
    positive(depth, "--depth")
    if int(width) > MAX_WIDTH:
        raise UserError(f"--width must be at most {MAX_WIDTH}, got {clip(str(width))}")
    deepest = max(int(image_size).bit_length() - 1, 0)  # floor(log2(image_size))
    if int(depth) > deepest:
        raise UserError(
            f"--depth {depth} is too deep for {image_size}x{image_size} images: each ConvNet "
            f"block halves the image, so --depth must be at most {deepest}"
        )


SEED_LIMIT = 2**32  # seeds are stored, offset (seed * 100003 + i) and passed to numpy and torch


def seed_number(value: int | None, what: str = "--seed") -> None:
    """``value`` is None (not given) or an integer from 0 to SEED_LIMIT - 1."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= value < SEED_LIMIT:
        raise UserError(
            f"{what} must be a non-negative integer below {SEED_LIMIT}, got {clip(repr(value))}"
        )


def clip(text: str, limit: int = 80) -> str:
    """User text as echoed in a message: at most ``limit`` characters, cut with "..."."""
    text = str(text)
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def not_empty(text: str | None, what: str) -> None:
    """``text`` is None (not given) or has more than white space."""
    if text is not None and not str(text).strip():
        raise UserError(f"{what} is empty: give a name, or leave the option out")


def one_of(value: str, allowed: tuple[str, ...] | list[str], what: str) -> str:
    if value not in allowed:
        raise UserError(f"unknown {what} {clip(repr(value))}: use {', '.join(allowed)}")
    return value


def unique_ints(values: tuple[int, ...], what: str) -> tuple[int, ...]:
    """A non-empty tuple of distinct integers (seeds, iterations)."""
    if not values:
        raise UserError(f"{what} is empty")
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise UserError(f"{what} lists {', '.join(map(str, dupes))} more than once")
    return tuple(int(v) for v in values)


# -- inputs ---------------------------------------------------------------------------------------


def load_data(source: DataSource, dataset: str = "cifar10") -> ImageData:
    """The real data set of a job: ``source`` as given in memory, or loaded (cached) from disk."""
    from ddsem.data import ImageData, load_dataset

    if isinstance(source, ImageData):
        if source.name != dataset:
            raise UserError(f"the data given is {source.name}, the job needs {dataset}")
        return source
    return load_dataset(source, dataset)


def resolve_set(db: Database, set_name: str | None, method: str | None) -> SetSummary:
    """The set a request means: by name, else the newest of ``method``, else the only set."""
    from ddsem.db.sets import find_set, list_sets

    not_empty(set_name, "--set")
    not_empty(method, "--method")

    if set_name or method:
        return find_set(db, set_name, method)
    sets = list_sets(db)
    if len(sets) == 1:
        return sets[0]
    if not sets:
        raise UserError(
            "no distilled set yet: `ddsem distill --method bptt` or `ddsem sets import FILE`"
        )
    names = ", ".join(f"{s.name} ({s.method})" for s in sets)
    raise UserError(f"several distilled sets: choose one with --method or --set ({names})")


# -- stored configurations ------------------------------------------------------------------------


def config_diff(old: dict[str, Any], new: dict[str, Any], limit: int | None = 4) -> str:
    """ "train.steps 300 -> 20, ..." for the keys that differ (nested dicts flattened; long
    lists are summarised, not printed)."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    def show(v: Any, other: Any) -> str:
        if isinstance(v, list) and len(v) > 6:
            return f"(a list of {len(v)})" if v != other else "(the same list)"
        return repr(v) if isinstance(v, str) else str(v)

    a, b = flat(old), flat(new)
    diffs = [
        f"{k} {show(a.get(k), b.get(k))} -> {show(b.get(k), a.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    if not diffs:
        return "same values"
    if limit is not None and len(diffs) > limit:
        return ", ".join(diffs[:limit]) + ", ..."
    return ", ".join(diffs)


# -- ZCA space (MTT's --zca) ------------------------------------------------------------------------


def fit_zca(
    db: Database,
    data: ImageData,
    *,
    eps: float | None = None,
    device: Any = None,
    note: Any = None,
) -> Any:
    """The ZCA transform of ``data``'s training split (``ddsem.db.sets.ZCAArrays``): the stored
    one fitted on exactly these pixels with ``eps``, else fitted now with kornia (MTT's
    ``ZCAWhitening(eps=0.1, compute_inv=True)`` on [0, 1] pixels) and stored. ``note``: a
    callable told before a fit (it takes minutes on a CPU)."""
    from ddsem.data import zca as Z
    from ddsem.db.sets import add_zca, find_zca

    eps = Z.EPS if eps is None else float(eps)
    key = Z.fingerprint(data.train_x)
    stored = find_zca(db, data.name, eps, key)
    if stored is not None:
        return stored
    db.require_writable()
    if note is not None:
        note(
            f"fitting ZCA (eps {eps:g}) on {len(data.train_x)} {data.name} training images "
            "(once; stored for every later command)"
        )
    import kornia

    fitted = Z.fit(data.train_x, eps, device=device)
    return add_zca(
        db, data.name, eps, key, len(data.train_x),
        f"{Z.FITTED_ON}; kornia {kornia.__version__}", fitted.arrays(),
    )  # fmt: skip


def zca_compute(arrays: Any) -> Any:
    """A stored transform (``ZCAArrays``) as the compute object ``ddsem.data.zca.ZCA``."""
    from ddsem.data.zca import ZCA

    d = arrays.mean.size
    side = int(round((d / 3) ** 0.5))
    return ZCA(arrays.mean, arrays.transform, arrays.inverse, arrays.eps, (3, side, side))


def real_space(db: Database, summary: SetSummary) -> Any:
    """The transform every job that trains on this set must apply to the real images it sees:
    a ``ddsem.data.zca.ZCA`` for a set in ZCA space, None for a normalised set. Call it once
    per set and pass the real images through ``whiten``."""
    if summary.zca is None:
        return None
    from ddsem.db.sets import set_zca

    arrays = set_zca(db, summary.id)
    return None if arrays is None else zca_compute(arrays)


def whiten(zca: Any, x: Any) -> Any:
    """A normalised N x C x H x W tensor in the set's space: ``zca.forward(x)``, or ``x`` itself
    when ``zca`` is None (a normalised set)."""
    return x if zca is None else zca.forward(x)
