"""CIFAR-10 / CIFAR-100 loading from every layout a researcher is likely to have.

Accepted sources:
- torchvision's extracted folders (``cifar-10-batches-py`` / ``cifar-100-python``), or their parent;
- an image folder ``{train,test}/<class>/*.jpg|png``, unpacked or as a ``.tar.gz``
  (the layout of the shared ``cifar10-jpeg.tar.gz``);
- torchvision's download, where a network exists (``download=True``).

Decoded pixels are cached as an uncompressed ``.npz`` (uint8, NHWC) keyed by the source's path,
size and modification time, so a second load of all 60,000 images takes well under 2 s.
Within a split, images are ordered class by class and, inside a class, by file number (the
original batch order); the index of an image is its position in that order.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddsem.data.names import CIFAR10_CLASSES
from ddsem.errors import UserError

# Normalisation of the dataset-distillation literature (DC/DM/MTT code and the analysis paper).
MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
SPLITS = ("train", "test")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# CIFAR-100's fine labels in label order (torchvision's ``meta``: alphabetical).
CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
DATASET_CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


@dataclass(frozen=True)
class ImageData:
    """One data set in memory: uint8 pixels (N, 32, 32, 3) and int64 labels per split."""

    name: str
    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str
    cache_path: str | None = None

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class DataNotFound(UserError):
    """No data source was named and none is in the usual places (a download may help)."""


# Where torchvision's download comes from (its CIFAR classes' own URLs); probed before offering it.
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)


def download_root() -> Path:
    """Where ``download=True`` puts torchvision's folders: ``cache_dir()/data``, one of the
    places ``find_data`` looks, so later commands find the data without ``--data``."""
    return cache_dir() / "data"


def download_reachable(timeout: float = 3.0) -> bool:
    """Whether torchvision's download host answers (a single TCP connection, no transfer)."""
    import socket

    try:
        with socket.create_connection(DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def cache_dir() -> Path:
    """Where decoded pixels are kept: ``$DDSEM_CACHE`` or ``~/.cache/ddsem``."""
    root = os.environ.get("DDSEM_CACHE") or os.path.join(Path.home(), ".cache", "ddsem")
    return Path(root)


def find_data(path: str | os.PathLike | None = None) -> Path:
    """The data source to use: ``path``, else ``$DDSEM_DATA``, else the usual folders.

    Raises a UserError saying where to put the data when nothing is found.
    """
    if path:
        p = Path(path).expanduser()
        if not p.exists():
            raise UserError(f"data path does not exist: {p}")
        return p
    env = os.environ.get("DDSEM_DATA")
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise UserError(f"DDSEM_DATA points to a path that does not exist: {p}")
        return p
    candidates = [
        Path.cwd() / "data",
        Path.home() / "data",
        Path.home() / ".torchvision",
        cache_dir() / "data",
    ]
    for c in candidates:
        if (c / "cifar-10-batches-py").is_dir() or (c / "cifar10-jpeg.tar.gz").is_file():
            return c / "cifar10-jpeg.tar.gz" if (c / "cifar10-jpeg.tar.gz").is_file() else c
    raise DataNotFound(
        "CIFAR-10 not found: pass --data PATH or set DDSEM_DATA to torchvision's "
        "cifar-10-batches-py folder, an image folder {train,test}/<class>/*.jpg, or its .tar.gz"
    )


def load_dataset(
    path: str | os.PathLike | None = None,
    name: str = "cifar10",
    *,
    download: bool = False,
    use_cache: bool = True,
) -> ImageData:
    """Load CIFAR-10 or CIFAR-100 from ``path`` (see the module docstring for the layouts)."""
    if name not in ("cifar10", "cifar100"):
        raise UserError(f"unknown dataset {name!r}: use cifar10 or cifar100")
    if download and path is None:
        return _load_torchvision_download(name)
    src = find_data(path)
    key = _cache_key(src, name)
    cache_file = cache_dir() / f"{name}-{key}.npz"
    if use_cache and cache_file.is_file():
        try:
            return _read_cache(cache_file, name, str(src))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    data = _decode(src, name)
    if use_cache:
        _write_cache(cache_file, data)
        data = ImageData(**{**data.__dict__, "cache_path": str(cache_file)})
    return data


def _decode(src: Path, name: str) -> ImageData:
    torchvision_dir = _torchvision_folder(src, name)
    if torchvision_dir is not None:
        return _load_torchvision_folder(torchvision_dir, name, str(src))
    for other in DATASET_CLASSES:
        if other != name and _torchvision_folder(src, other) is not None:
            raise UserError(
                f"{src} is torchvision's {other} folder ({TORCHVISION_FOLDERS[other]}), not "
                f"{name}'s: pass --dataset {other}"
            )
    if src.is_file() and (src.name.endswith(".tar.gz") or src.name.endswith(".tgz")):
        return _load_image_archive(src, name)
    if src.is_dir():
        return _load_image_folder(src, name)
    raise UserError(
        f"{src} is not a CIFAR folder, an image folder {{train,test}}/<class>/ or a .tar.gz of one"
    )


# -- torchvision's pickled batches ---------------------------------------------------------------


def _torchvision_folder(src: Path, name: str) -> Path | None:
    folder = TORCHVISION_FOLDERS[name]
    if src.is_dir() and src.name == folder:
        return src
    if src.is_dir() and (src / folder).is_dir():
        return src / folder
    return None


def _unpickle(path: Path) -> dict:
    # torchvision's own CIFAR reader does the same; these files are the data set's release format.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _load_torchvision_folder(folder: Path, name: str, source: str) -> ImageData:
    if name == "cifar10":
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [folder / "test_batch"]
        meta_file, meta_key, label_key = folder / "batches.meta", "label_names", "labels"
    else:
        train_files, test_files = [folder / "train"], [folder / "test"]
        meta_file, meta_key, label_key = folder / "meta", "fine_label_names", "fine_labels"
    missing = [p.name for p in [*train_files, *test_files, meta_file] if not p.is_file()]
    if missing:
        raise UserError(f"{folder} is missing {', '.join(missing)}")
    classes = tuple(_unpickle(meta_file)[meta_key])

    def read(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            d = _unpickle(f)
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return np.concatenate(xs).transpose(0, 2, 3, 1).copy(), np.concatenate(ys)

    (trx, try_), (tex, tey) = read(train_files), read(test_files)
    return ImageData(name, classes, trx, try_, tex, tey, source)


def _load_torchvision_download(name: str) -> ImageData:
    import torchvision

    root = download_root()
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure becomes one clear line
        raise UserError(
            f"could not download {name} with torchvision ({e.__class__.__name__})"
        ) from e
    return load_dataset(root, name)


# -- image folders and archives ------------------------------------------------------------------


def _expected_classes(name: str, found: set[str]) -> tuple[str, ...]:
    return DATASET_CLASSES[name]


def _check_class_folder(source: str, name: str, cls: str) -> None:
    """Refuse a class folder that is not one of ``name``'s classes, before anything is decoded
    (or the rest of an archive is read): CIFAR-10 read as CIFAR-100 is a wrong label space."""
    if cls in DATASET_CLASSES[name]:
        return
    for other, classes in DATASET_CLASSES.items():
        if other != name and cls in classes:
            raise UserError(
                f"{source} holds {other} classes (a class folder {cls!r}), not {name}'s: "
                f"pass --dataset {other}"
            )
    raise UserError(f"{source}: unknown class folder {cls!r} for {name}")


def _file_order(filename: str) -> tuple[int, str]:
    stem = Path(filename).stem
    digits = re.findall(r"\d+", stem)
    return (int(digits[-1]) if digits else -1, stem)


def _assemble(
    entries: dict[tuple[str, str], list[tuple[str, bytes]]], name: str, source: str
) -> ImageData:
    """Decode {(split, class): [(filename, bytes)]} into an ImageData, checking completeness."""
    from PIL import Image

    for split in SPLITS:
        if not any(s == split for s, _ in entries):
            raise UserError(
                f"{source} has no {split}/ split (expected {{train,test}}/<class>/*.jpg)"
            )
    found = {c for _, c in entries}
    classes = _expected_classes(name, found)
    for split in SPLITS:
        missing = [c for c in classes if not entries.get((split, c))]
        if missing:
            raise UserError(f"{source}: split {split!r} is missing class(es) {', '.join(missing)}")
    unknown = sorted(found - set(classes))
    if unknown:
        raise UserError(f"{source}: unknown class folder(s) {', '.join(unknown)} for {name}")

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        xs, ys = [], []
        for label, cls in enumerate(classes):
            files = sorted(entries[(split, cls)], key=lambda e: _file_order(e[0]))
            for fname, raw in files:
                img = Image.open(io.BytesIO(raw)).convert("RGB")
                if img.size != (32, 32):
                    raise UserError(
                        f"{source}: {split}/{cls}/{fname} is {img.size}, expected 32x32"
                    )
                xs.append(np.asarray(img, dtype=np.uint8))
            ys.append(np.full(len(files), label, dtype=np.int64))
        out[split] = (np.stack(xs), np.concatenate(ys))
    return ImageData(
        name, classes, out["train"][0], out["train"][1], out["test"][0], out["test"][1], source
    )


def _split_member(parts: list[str]) -> tuple[str, str, str] | None:
    """Find (split, class, filename) in a path's parts, ignoring any leading folders."""
    for i in range(len(parts) - 2):
        if parts[i] in SPLITS and len(parts) - i == 3:
            return parts[i], parts[i + 1], parts[i + 2]
    return None


def _load_image_archive(src: Path, name: str) -> ImageData:
    entries: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    try:
        with tarfile.open(src, "r:*") as tar:
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith(_IMAGE_SUFFIXES):
                    continue
                hit = _split_member(member.name.split("/"))
                if hit is None:
                    continue
                _check_class_folder(str(src), name, hit[1])
                f = tar.extractfile(member)
                if f is not None:
                    entries.setdefault((hit[0], hit[1]), []).append((hit[2], f.read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{src} is not a readable .tar.gz archive ({e})") from e
    return _assemble(entries, name, str(src))


def _load_image_folder(src: Path, name: str) -> ImageData:
    entries: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    for split in SPLITS:
        split_dir = src / split
        if not split_dir.is_dir():
            continue
        for cls_dir in split_dir.iterdir():
            if not cls_dir.is_dir():
                continue
            images = [f for f in cls_dir.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES]
            if images:
                _check_class_folder(str(src), name, cls_dir.name)  # before reading a file
            for f in images:
                entries.setdefault((split, cls_dir.name), []).append((f.name, f.read_bytes()))
    return _assemble(entries, name, str(src))


# -- cache ---------------------------------------------------------------------------------------


def _cache_key(src: Path, name: str) -> str:
    st = src.stat()
    text = f"{src.resolve()}|{st.st_size}|{int(st.st_mtime)}|{name}|v1"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _write_cache(path: Path, data: ImageData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        train_x=data.train_x,
        train_y=data.train_y,
        test_x=data.test_x,
        test_y=data.test_y,
        classes=np.array(data.classes),
    )
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache


def _read_cache(path: Path, name: str, source: str) -> ImageData:
    with np.load(path, allow_pickle=False) as z:
        return ImageData(
            name,
            tuple(str(c) for c in z["classes"]),
            z["train_x"],
            z["train_y"],
            z["test_x"],
            z["test_y"],
            source,
            str(path),
        )


# -- tensors -------------------------------------------------------------------------------------


def normalize(pixels: np.ndarray, device: str | None = None):
    """uint8 NHWC pixels -> float32 NCHW torch tensor in the normalised space of DESIGN 3."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.to(device) if device is not None else x


def denormalize(x) -> np.ndarray:
    """Normalised NCHW tensor/array -> float NHWC array in [0, 1]-ish space (NOT clipped)."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    arr = arr.transpose(0, 2, 3, 1)
    return arr * np.asarray(STD, dtype=np.float32) + np.asarray(MEAN, dtype=np.float32)


def stratified_indices(labels: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """A class-stratified subset of ``limit`` indices (sorted), or all indices when limit is None.

    Classes get ``limit // C`` each and the remainder goes to the first classes; the choice
    within a class is a seeded random permutation, so the same limit gives the same subset.
    """
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise UserError("the test limit must be a positive number of images")
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    base, extra = divmod(limit, len(classes))
    chosen = []
    for k, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        take = min(len(idx), base + (1 if k < extra else 0))
        chosen.append(rng.permutation(idx)[:take])
    return np.sort(np.concatenate(chosen))
