"""Import and export of distilled sets in the formats researchers share.

- ``paper``: the analysis paper's dict {"data": N x 3 x 32 x 32 float (normalised), "label": N}
- ``dc``: DatasetCondensation's ``res_*.pt``: {"data": [[images, labels], ...], ...}; ``exp`` picks one
- ``mtt``: MTT's ``images_best.pt`` (+ ``labels_best.pt``, optional ``lr_best.pt``). A run with
  ``--zca`` saves ``images_*.pt`` in ZCA space (the tensor it trains on) and ``images_zca_*.pt``
  as ``zca_trans.inverse_transform`` of it: [0, 1] pixels, not normalised (MTT distill.py);
  ``space`` says which the file name tells, and ``ddsem.jobs.sets`` decides the rest
- ``npz``: arrays ``images`` (N x C x H x W or N x H x W x C; uint8 pixels are normalised,
  float arrays are taken as already normalised) and ``labels``

Every .pt file goes through ``torch.load(..., weights_only=True)``: a pickle holding anything
but tensors, dicts, lists and numbers is refused without executing it.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ddsem.errors import UserError

FORMATS = ("auto", "paper", "dc", "mtt", "npz")


@dataclass
class LoadedSet:
    images: np.ndarray  # float32 N x C x H x W, normalised space
    labels: np.ndarray  # int64 N, or N x K soft labels until validate takes the argmax
    fmt: str
    synthetic_lr: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file, named in validate's errors
    # What the file says of its images' space: None (nothing: normalised, or MTT's images_*.pt,
    # which is ZCA space after a --zca run), "normalised", "zca" (a ddsem export's "space"
    # key) or "pixels" (MTT's images_zca_*.pt: [0, 1] pixels of a --zca run)
    space: str | None = None


def _printable(text: str) -> str:
    """Control characters escaped: a parser's message may quote the file's raw bytes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _reason(e: BaseException) -> str:
    """The first line of an exception's message (its class name when the message is empty)."""
    text = str(e).strip()
    first = _printable(text.splitlines()[0][:160]) if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _unpickler_reason(message: str) -> str:
    """The line of torch's weights-only refusal that says what was refused (its message opens
    with paragraphs of advice); else the first line."""
    text = message.strip()
    _, marker, rest = text.partition("WeightsUnpickler error:")
    advice = ("Weights only load failed", "Check the documentation", "(1)", "(2)", "Please file")
    lines = [
        line.strip()
        for line in (rest if marker else text).splitlines()
        if line.strip() and not line.strip().startswith(advice)
    ]
    if not lines:
        return "UnpicklingError"
    return _printable(lines[0].split(". Please use")[0][:160])


def safe_torch_load(path: Path) -> Any:
    """torch.load with weights_only=True; any refusal or corruption becomes one clear line."""
    import torch

    if not path.is_file():
        raise UserError(f"file does not exist: {path}")
    try:
        with warnings.catch_warnings():  # torch's notes on odd pickles are no news to the user
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        if "global" not in reason.lower():  # garbage bytes, not a pickle of foreign objects
            raise UserError(f"{path} is not a readable PyTorch file ({reason})") from None
        raise UserError(
            f"{path} holds objects other than plain tensors, dicts, lists and numbers; "
            f"refused without running it ({reason})"
        ) from None
    except Exception as e:  # a parser of untrusted bytes: whatever it trips on means "corrupt"
        raise UserError(f"{path} is not a readable PyTorch file ({_reason(e)})") from None


def _np(x: Any, what: str) -> np.ndarray:
    """A tensor, array, list or number as a real numeric numpy array; anything else refused."""
    if hasattr(x, "detach") and hasattr(x, "is_complex"):  # a torch tensor
        import torch

        if x.is_complex():
            raise UserError(f"{what} must be real numbers, not complex-valued")
        try:
            t = x.detach().cpu()
            if t.layout != torch.strided:
                t = t.to_dense()
            if t.is_floating_point() and t.dtype.itemsize < 4:  # bfloat16 has no numpy type
                t = t.float()
            arr = t.numpy()
        except Exception as e:
            raise UserError(f"{what} cannot be read as a numeric array ({_reason(e)})") from None
    elif isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, list | tuple | int | float):
        try:
            arr = np.asarray(x)
        except Exception as e:  # ragged nesting, tensors mixed with numbers
            raise UserError(f"{what} is not a rectangular array ({_reason(e)})") from None
    else:
        raise UserError(f"{what} is a {type(x).__name__}, expected a tensor")
    if arr.dtype.kind == "c":
        raise UserError(f"{what} must be real numbers, not complex-valued")
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{what} must be numbers, got an array of dtype {arr.dtype}")
    return arr


def _images(x: np.ndarray) -> np.ndarray:
    """Images as float32 (a float64 beyond float32's range becomes inf and validate refuses it)."""
    if x.dtype.kind == "b":
        raise UserError("images must be numbers, got an array of booleans")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(x, dtype=np.float32)


def _labels(y: np.ndarray) -> np.ndarray:
    """Integer class indices (N, or N x 1) as int64; N x K soft or one-hot labels are kept as
    float64 for validate, which knows the number of classes."""
    if y.dtype.kind == "b":
        raise UserError("labels must be integer class indices, got booleans")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        soft = y.astype(np.float64)
        if not np.isfinite(soft).all():
            raise UserError("soft labels hold NaN or infinite values")
        return soft
    if y.ndim != 1:
        raise UserError(f"labels must be a vector, got shape {tuple(y.shape)}")
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(y) & (np.mod(y, 1) == 0) & (np.abs(y) < 2.0**62)
        if not integral.all():
            raise UserError("labels must be integer class indices")
    if y.dtype == np.uint64 and y.size and y.max() > np.iinfo(np.int64).max:
        raise UserError(f"labels must be class indices; found {int(y.max())}")
    return y.astype(np.int64)


def load_distilled(
    path: str | Path,
    fmt: str = "auto",
    *,
    exp: int = 0,
    labels_path: str | Path | None = None,
    lr_path: str | Path | None = None,
) -> LoadedSet:
    """Read a distilled set from disk without validating it against a data set (see validate).
    Whatever is wrong with the file (unreadable, corrupt, wrong content) is one UserError."""
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise UserError(f"file does not exist: {path}")
    if not path.is_file():
        raise UserError(f"not a file: {path}")
    if fmt == "auto":
        if path.suffix == ".npz":
            fmt = "npz"
        elif path.name.startswith("images_") or labels_path is not None:
            fmt = "mtt"
        else:
            fmt = "dict"  # paper or dc, decided by content
    try:
        loaded = _load(path, fmt, exp, labels_path, lr_path)
    except UserError as e:
        if str(path) in str(e):
            raise
        raise UserError(f"{path}: {e}") from None
    loaded.source = str(path)
    return loaded


def _load(
    path: Path,
    fmt: str,
    exp: int,
    labels_path: str | Path | None,
    lr_path: str | Path | None,
) -> LoadedSet:
    if fmt == "npz":
        return _load_npz(path)
    if fmt == "mtt":
        return _load_mtt(path, labels_path, lr_path)
    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or "data" not in obj:
        raise UserError(f"{path} is not a dict with a 'data' entry (paper or DC format)")
    data = obj["data"]
    if isinstance(data, list | tuple) and (fmt in ("dict", "dc")):
        return _from_dc(obj, exp, path)
    if fmt == "dc":
        raise UserError(f"{path}: DC format needs 'data' as a list of [images, labels]")
    if "label" not in obj:
        raise UserError(f"{path}: paper format needs a 'label' entry next to 'data'")
    space = obj.get("space")
    if space is not None and space not in ("normalised", "zca"):
        raise UserError(f"{path}: 'space' must be 'normalised' or 'zca', got {str(space)[:40]!r}")
    loaded = LoadedSet(
        _images(_np(data, "images")), _labels(_np(obj["label"], "labels")), "paper", space=space
    )
    if space == "zca" and "zca_eps" in obj:
        loaded.extra["zca_eps"] = float(_np(obj["zca_eps"], "zca_eps").reshape(()))
    return loaded


def _from_dc(obj: dict, exp: int, path: Path) -> LoadedSet:
    runs = obj["data"]
    if not runs:
        raise UserError(f"{path}: 'data' holds no experiments")
    if not 0 <= exp < len(runs):
        raise UserError(
            f"{path}: --exp {exp} out of range; the file holds {len(runs)} experiment(s)"
        )
    pair = runs[exp]
    if not isinstance(pair, list | tuple) or len(pair) < 2:
        raise UserError(f"{path}: experiment {exp} is not [images, labels]")
    return LoadedSet(
        _images(_np(pair[0], "images")),
        _labels(_np(pair[1], "labels")),
        "dc",
        extra={"exp": exp, "experiments": len(runs)},
    )


def _tag(path: Path, prefix: str) -> str | None:
    """The run point of an MTT file: "best" of images_best.pt / images_zca_best.pt, "500" of
    labels_500.pt; None for a name not of that form."""
    name = path.name
    if not (name.startswith(prefix) and name.endswith(".pt")):
        return None
    tag = name[len(prefix) : -3]
    return tag.removeprefix("zca_") if prefix == "images_" else tag


def _same_point(images: Path, other: Path, prefix: str, what: str) -> None:
    """MTT saves images, labels and lr of one point as images_X.pt, labels_X.pt, lr_X.pt:
    files of two points are refused (their labels or lr belong to other images)."""
    mine, theirs = _tag(images, "images_"), _tag(other, prefix)
    if mine is not None and theirs is not None and mine != theirs:
        raise UserError(
            f"{images.name} and {other.name} are from different points of an MTT run "
            f"({mine!r} and {theirs!r}): give the {what} file {prefix}{mine}.pt"
        )


def _load_mtt(path: Path, labels_path: str | Path | None, lr_path: str | Path | None) -> LoadedSet:
    images = _images(_np(safe_torch_load(path), "images"))
    space = "pixels" if path.name.startswith("images_zca_") else None
    if labels_path is None:
        tag = _tag(path, "images_")
        guess = path.with_name(f"labels_{tag}.pt" if tag is not None else path.name)
        if guess == path or not guess.is_file():
            raise UserError(f"{path}: MTT images need their labels file (--labels labels_best.pt)")
        labels_path = guess
    labels_path = Path(labels_path).expanduser()
    _same_point(path, labels_path, "labels_", "labels")
    try:
        labels = _labels(_np(safe_torch_load(labels_path), "labels"))
    except UserError as e:
        raise UserError(e if str(labels_path) in str(e) else f"{labels_path}: {e}") from None
    lr = None
    if lr_path is None:
        tag = _tag(path, "images_")
        guess = path.with_name(f"lr_{tag}.pt") if tag is not None else path
        lr_path = guess if guess != path and guess.is_file() else None
    if lr_path is not None:
        lr_path = Path(lr_path).expanduser()
        _same_point(path, lr_path, "lr_", "learning-rate")
        try:
            lr_val = _np(safe_torch_load(lr_path), "the learning rate")
        except UserError as e:
            raise UserError(e if str(lr_path) in str(e) else f"{lr_path}: {e}") from None
        if lr_val.size != 1 or lr_val.dtype.kind == "b":
            raise UserError(f"{lr_path}: the synthetic learning rate must be a single number")
        lr = float(lr_val.reshape(()))
        if not (np.isfinite(lr) and lr > 0):
            raise UserError(f"{lr_path}: the synthetic learning rate must be positive, got {lr}")
    return LoadedSet(images, labels, "mtt", synthetic_lr=lr, space=space)


def _load_npz(path: Path) -> LoadedSet:
    # The file is opened here, not by np.load, which leaves it open when the zip is corrupt.
    try:
        f = path.open("rb")
    except OSError as e:
        raise UserError(f"{path} cannot be read ({_reason(e)})") from None
    with f:
        try:
            z = np.load(f, allow_pickle=False)
        except Exception as e:  # a parser of untrusted bytes: BadZipFile, EOFError, ...
            raise UserError(
                f"{path} is not a readable .npz of plain arrays ({_reason(e)})"
            ) from None
        if not isinstance(z, np.lib.npyio.NpzFile):  # a bare .npy array under an .npz name
            raise UserError(f"{path} is a single array, not an .npz with images and labels")
        try:
            with z:
                keys = set(z.files)
                ik = next((k for k in ("images", "data", "x") if k in keys), None)
                lk = next((k for k in ("labels", "label", "y") if k in keys), None)
                if ik is None or lk is None:
                    shown = ", ".join(repr(k)[:40] for k in sorted(keys)[:10]) or "none"
                    raise UserError(
                        f"{path}: .npz needs arrays 'images' and 'labels' (has {shown})"
                    )
                images, labels = z[ik], z[lk]
        except UserError:
            raise
        except Exception as e:  # a corrupt member: bad CRC, zlib.error, object arrays, short data
            raise UserError(
                f"{path} is not a readable .npz of plain arrays ({_reason(e)})"
            ) from None
    images = _np(images, "images")
    labels = _np(labels, "labels")
    if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.dtype == np.uint8 and images.ndim == 4 and images.shape[1] == 3:
        from ddsem.data.cifar import MEAN, STD

        images = (
            images.astype(np.float32) / 255.0 - np.asarray(MEAN, np.float32)[:, None, None]
        ) / (np.asarray(STD, np.float32)[:, None, None])
    return LoadedSet(_images(images), _labels(labels), "npz")


def validate(loaded: LoadedSet, num_classes: int, channels: int = 3, size: int = 32) -> LoadedSet:
    """Refuse wrong shapes, non-finite pixels and labels outside the data set's classes; soft
    labels (N x num_classes) become the class of the largest mass. Errors name the file."""
    try:
        return _validate(loaded, num_classes, channels, size)
    except UserError as e:
        if not loaded.source or loaded.source in str(e):
            raise
        raise UserError(f"{loaded.source}: {e}") from None


def _validate(loaded: LoadedSet, num_classes: int, channels: int, size: int) -> LoadedSet:
    x, y = loaded.images, loaded.labels
    if x.ndim != 4:
        raise UserError(f"images must be N x C x H x W, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise UserError(f"images have {x.shape[1]} channels, expected {channels}")
    if x.shape[2:] != (size, size):
        raise UserError(f"images are {x.shape[2]}x{x.shape[3]}, expected {size}x{size}")
    if x.shape[0] == 0:
        raise UserError("the set holds no images")
    if x.shape[0] != y.shape[0]:
        raise UserError(f"{x.shape[0]} images but {y.shape[0]} labels")
    bad = ~np.isfinite(x)
    if bad.any():
        n = int(bad.reshape(len(x), -1).any(1).sum())
        raise UserError(f"{n} image(s) have NaN or infinite pixels")
    if y.ndim == 2:
        if y.shape[1] != num_classes:
            raise UserError(
                f"labels must be a vector of class indices or N x {num_classes} soft labels, "
                f"got shape {tuple(y.shape)}"
            )
        loaded.labels = y = y.argmax(1).astype(np.int64)
        loaded.extra = {**loaded.extra, "soft_labels": True}
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise UserError(f"labels must be a vector of class indices, got shape {tuple(y.shape)}")
    if y.min() < 0 or y.max() >= num_classes:
        raise UserError(
            f"labels must lie in 0..{num_classes - 1}; found {int(y.min())}..{int(y.max())}"
        )
    return loaded


def export_paper(
    path: str | Path, images: np.ndarray, labels: np.ndarray, extra: dict[str, Any] | None = None
) -> None:
    """Write the analysis paper's dict format (bit-exact float32 tensors); ``extra``: more plain
    entries (ddsem writes "space", and "zca_eps" for a set in ZCA space)."""
    import torch

    obj: dict[str, Any] = {
        "data": torch.from_numpy(np.ascontiguousarray(images)),
        "label": torch.from_numpy(labels),
    }
    torch.save({**obj, **(extra or {})}, Path(path))
