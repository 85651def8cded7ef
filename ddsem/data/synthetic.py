"""A small procedural stand-in for CIFAR: learnable, deterministic, made in milliseconds.

Each class has its own object colour, background colour and shape (disc, square, stripes, ...)
at a random position and size, with pixel noise. Jobs run on it exactly as on CIFAR-10, so
resume, idempotence and bad-input tests need no download; it is never a substitute for real
data in a result anyone quotes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddsem.data.cifar import CIFAR10_CLASSES, ImageData

SIZE = 32


def _palette(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(classes, 2, 3) object and background colours, spread over the colour cube."""
    hues = np.linspace(0.0, 1.0, num_classes, endpoint=False)
    objects = np.stack([_hsv(h, 0.9, 0.9) for h in hues])
    backgrounds = np.stack(
        [_hsv((h + 0.5) % 1.0, 0.4, 0.35 + 0.3 * (k % 2)) for k, h in enumerate(hues)]
    )
    return np.stack([objects, backgrounds], axis=1) * 255.0 + rng.normal(0, 2, (num_classes, 2, 3))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _mask(shape: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    dy, dx = y - cy, x - cx
    kind = shape % 5
    if kind == 0:
        return dy**2 + dx**2 <= r**2  # disc
    if kind == 1:
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)  # square
    if kind == 2:
        return (np.abs(dy) <= r) & ((x.astype(int) // 3) % 2 == 0)  # vertical stripes
    if kind == 3:
        return np.abs(dy) + np.abs(dx) <= r  # diamond
    return (np.abs(dy) <= r / 3) | (np.abs(dx) <= r / 3)  # cross


def draw(label: int, rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    """One (32, 32, 3) uint8 image of class ``label``."""
    obj, ground = palette[label]
    image = np.empty((SIZE, SIZE, 3), np.float64)
    image[:] = ground
    r = rng.uniform(6, 11)
    cy, cx = rng.uniform(r, SIZE - r, 2)
    image[_mask(label, cy, cx, r)] = obj
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_data(
    train_per_class: int = 20,
    test_per_class: int = 10,
    *,
    num_classes: int = 10,
    seed: int = 0,
    name: str = "cifar10",
) -> ImageData:
    """An ImageData shaped like CIFAR (uint8 NHWC, class-sorted splits), drawn procedurally."""
    rng = np.random.default_rng(seed)
    palette = _palette(num_classes, rng)
    classes = (
        CIFAR10_CLASSES if num_classes == 10 else tuple(f"class{k}" for k in range(num_classes))
    )

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
        pixels = np.stack([draw(int(c), rng, palette) for c in labels])
        return pixels, labels

    train_x, train_y = split(train_per_class)
    test_x, test_y = split(test_per_class)
    return ImageData(
        name=name,
        classes=classes,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        source=f"synthetic(train={train_per_class}, test={test_per_class}, seed={seed})",
    )


def write_image_folder(data: ImageData, root: str | Path) -> Path:
    """Write ``data`` as ``root/{train,test}/<class>/NNNN.png``, a layout ``--data`` reads."""
    from PIL import Image

    root = Path(root)
    for split in ("train", "test"):
        pixels, labels = data.split(split)
        counts: dict[int, int] = {}
        for image, label in zip(pixels, labels.tolist(), strict=True):
            folder = root / split / data.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            k = counts.get(label, 0)
            counts[label] = k + 1
            Image.fromarray(image).save(folder / f"{k:04d}.png")
    return root
