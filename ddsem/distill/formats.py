"""Import and export of distilled sets in the formats researchers share.

- ``paper``: the analysis paper's dict {"data": N x 3 x 32 x 32 float (normalised), "label": N}
- ``dc``: DatasetCondensation's ``res_*.pt``: {"data": [[images, labels], ...], ...}; ``exp`` picks one
- ``mtt``: MTT's ``images_best.pt`` (+ ``labels_best.pt``, optional ``lr_best.pt``)
- ``npz``: arrays ``images`` (N x C x H x W or N x H x W x C; uint8 pixels are normalised,
  float arrays are taken as already normalised) and ``labels``

Every .pt file goes through ``torch.load(..., weights_only=True)``: a pickle holding anything
but tensors, dicts, lists and numbers is refused without executing it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ddsem.errors import UserError

FORMATS = ("auto", "paper", "dc", "mtt", "npz")


@dataclass
class LoadedSet:
    images: np.ndarray  # float32 N x C x H x W, normalised space
    labels: np.ndarray  # int64 N
    fmt: str
    synthetic_lr: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def safe_torch_load(path: Path) -> Any:
    """torch.load with weights_only=True; any refusal or corruption becomes one clear line."""
    import torch

    if not path.is_file():
        raise UserError(f"file does not exist: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(
            f"{path} holds objects other than plain tensors, dicts, lists and numbers; "
            f"refused without running it ({first[:120]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(
            f"{path} is not a readable PyTorch file ({str(e).splitlines()[0][:160]})"
        ) from None


def _np(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray | list | tuple):
        return np.asarray(x)
    raise UserError(f"{what} is a {type(x).__name__}, expected a tensor")


def _labels(y: np.ndarray) -> np.ndarray:
    if y.ndim == 2:  # soft / one-hot labels: keep the class with the largest mass
        y = y.argmax(1)
    if y.ndim != 1:
        raise UserError(f"labels must be a vector, got shape {tuple(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.equal(np.mod(y, 1), 0)):
        raise UserError("labels must be integer class indices")
    return y.astype(np.int64)


def load_distilled(
    path: str | Path,
    fmt: str = "auto",
    *,
    exp: int = 0,
    labels_path: str | Path | None = None,
    lr_path: str | Path | None = None,
) -> LoadedSet:
    """Read a distilled set from disk without validating it against a data set (see validate)."""
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise UserError(f"file does not exist: {path}")
    if fmt == "auto":
        if path.suffix == ".npz":
            fmt = "npz"
        elif path.name.startswith("images_") or labels_path is not None:
            fmt = "mtt"
        else:
            fmt = "dict"  # paper or dc, decided by content
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
    return LoadedSet(
        _np(data, "data").astype(np.float32, copy=False),
        _labels(_np(obj["label"], "label")),
        "paper",
    )


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
        _np(pair[0], "images").astype(np.float32, copy=False),
        _labels(_np(pair[1], "labels")),
        "dc",
        extra={"exp": exp, "experiments": len(runs)},
    )


def _load_mtt(path: Path, labels_path: str | Path | None, lr_path: str | Path | None) -> LoadedSet:
    images = _np(safe_torch_load(path), "images").astype(np.float32, copy=False)
    if labels_path is None:
        guess = path.with_name(path.name.replace("images_", "labels_"))
        if guess == path or not guess.is_file():
            raise UserError(f"{path}: MTT images need their labels file (--labels labels_best.pt)")
        labels_path = guess
    labels = _labels(_np(safe_torch_load(Path(labels_path).expanduser()), "labels"))
    lr = None
    if lr_path is None:
        guess = path.with_name(path.name.replace("images_", "lr_"))
        lr_path = guess if guess != path and guess.is_file() else None
    if lr_path is not None:
        lr_val = _np(safe_torch_load(Path(lr_path).expanduser()), "learning rate")
        if lr_val.size != 1:
            raise UserError(f"{lr_path}: the synthetic learning rate must be a single number")
        lr = float(lr_val.reshape(()))
    return LoadedSet(images, labels, "mtt", synthetic_lr=lr)


def _load_npz(path: Path) -> LoadedSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            ik = next((k for k in ("images", "data", "x") if k in keys), None)
            lk = next((k for k in ("labels", "label", "y") if k in keys), None)
            if ik is None or lk is None:
                raise UserError(
                    f"{path}: .npz needs arrays 'images' and 'labels' (has {sorted(keys)})"
                )
            images, labels = z[ik], z[lk]
    except (ValueError, OSError) as e:
        raise UserError(f"{path} is not a readable .npz of plain arrays ({e})") from None
    if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.dtype == np.uint8:
        from ddsem.data.cifar import MEAN, STD

        images = (
            images.astype(np.float32) / 255.0 - np.asarray(MEAN, np.float32)[:, None, None]
        ) / (np.asarray(STD, np.float32)[:, None, None])
    return LoadedSet(np.ascontiguousarray(images, dtype=np.float32), _labels(labels), "npz")


def validate(loaded: LoadedSet, num_classes: int, channels: int = 3, size: int = 32) -> LoadedSet:
    """Refuse wrong shapes, non-finite pixels and labels outside the data set's classes."""
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
    if y.min() < 0 or y.max() >= num_classes:
        raise UserError(
            f"labels must lie in 0..{num_classes - 1}; found {int(y.min())}..{int(y.max())}"
        )
    return loaded


def export_paper(path: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write the analysis paper's dict format (bit-exact float32 tensors)."""
    import torch

    torch.save(
        {"data": torch.from_numpy(np.ascontiguousarray(images)), "label": torch.from_numpy(labels)},
        Path(path),
    )
