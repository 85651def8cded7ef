"""The offline colour annotator: names the colours of the object and the background from pixels.

Deterministic and instant on any CPU, so the whole attribute pipeline works without LLaVA. Each
pixel is named from a small palette by its hue, saturation and value (HSV); a region's colours
are the palette names that cover at least a quarter of it. The object is the centre of the
image (CIFAR objects are centred) less the pixels of the background's main colour (a plane
against blue sky is not blue); the background is the outer frame. Scene cues follow from where
colours sit: a blue top edge suggests sky, a green bottom edge grass, a dark frame a dark
background.

Answers are short sentences, the same shape as LLaVA's, so everything downstream is one path.
Thresholds were chosen by looking at CIFAR-10 test images; changing them changes the answers,
so bump ``PALETTE_VERSION`` (stored as the annotation's model) when you do.
"""

from __future__ import annotations

import numpy as np

from ddsem.annotate.prompts import Prompt

PALETTE_VERSION = "palette-v1"

# What each prompt of this annotator reports (stored as the annotation's prompt text).
COLOR_PROMPTS: dict[str, str] = {
    "object": "palette-v1: the main colours of the centre of the image (the object)",
    "background": (
        "palette-v1: the main colours of the border of the image (the background), with sky, "
        "grass and dark-background cues"
    ),
}

CHROMATIC = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
ACHROMATIC = ("white", "gray", "black")
PALETTE = CHROMATIC + ACHROMATIC

# Hue bins in degrees [start, end) -> name; red wraps around 0.
_HUE_BINS = (
    (0.0, 22.0, "red"),
    (22.0, 40.0, "orange"),
    (40.0, 62.0, "yellow"),
    (62.0, 165.0, "green"),
    (165.0, 255.0, "blue"),
    (255.0, 315.0, "purple"),
    (315.0, 335.0, "pink"),
    (335.0, 360.0, "red"),
)
_GRAY_SATURATION = 0.2  # below: no hue worth naming (white, gray or black by brightness)
_BLACK_VALUE = 0.22  # below: black whatever the hue
_WHITE_VALUE = 0.75  # unsaturated and above: white
_MIN_SHARE = 0.25  # a colour must cover this share of a region to be named
_CUE_SHARE = 0.5  # a scene cue needs this share of its edge
_GROUND_SHARE = 0.4  # a background colour this common is discounted in the centre
_FIGURE_SHARE = 0.25  # ... unless less than this share of the centre would remain
_EDGE = 5  # pixels of the frame that count as background (of 32)


def hsv(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (..., 3) RGB -> hue in degrees [0, 360), saturation and value in [0, 1]."""
    x = images.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    top = x.max(-1)
    chroma = top - x.min(-1)
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(
        top == r,
        ((g - b) / safe) % 6.0,
        np.where(top == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = np.where(chroma > 0, hue * 60.0, 0.0) % 360.0
    saturation = np.where(top > 0, chroma / np.maximum(top, 1e-6), 0.0)
    return hue, saturation, top


def pixel_names(images: np.ndarray) -> np.ndarray:
    """The palette index (into ``PALETTE``) of every pixel: uint8 (..., 3) -> int (...)."""
    hue, sat, val = hsv(images)
    names = np.empty(hue.shape, dtype=np.int64)
    for start, end, name in _HUE_BINS:
        names[(hue >= start) & (hue < end)] = PALETTE.index(name)
    # Dark oranges, and muted oranges and yellows (khaki, olive), are brown; pale reds are pink.
    dark = (hue >= 15.0) & (hue < 50.0) & (val < 0.6)
    muted = (hue >= 15.0) & (hue < 60.0) & (val < 0.7) & (sat < 0.45)
    names[dark | muted] = PALETTE.index("brown")
    red = names == PALETTE.index("red")
    names[red & (sat < 0.35) & (val > 0.8)] = PALETTE.index("pink")
    gray = sat < _GRAY_SATURATION
    names[gray] = PALETTE.index("gray")
    names[gray & (val >= _WHITE_VALUE)] = PALETTE.index("white")
    names[val < _BLACK_VALUE] = PALETTE.index("black")
    return names


def shares(names: np.ndarray) -> dict[str, float]:
    """Share of each palette colour among the given pixel names."""
    counts = np.bincount(names.ravel(), minlength=len(PALETTE)) / max(names.size, 1)
    return {PALETTE[k]: float(c) for k, c in enumerate(counts)}


def main_colors(names: np.ndarray, limit: int = 2) -> list[str]:
    """The colours that cover at least a quarter of a region, most first; chromatic colours lead
    (a yellow car on grey tarmac is a yellow car); at least the most common colour."""
    share = shares(names)
    named = sorted(
        (c for c in PALETTE if share[c] >= _MIN_SHARE),
        key=lambda c: (c not in CHROMATIC, -share[c]),
    )
    return named[:limit] or [max(share, key=lambda c: share[c])]


def _join(colors: list[str]) -> str:
    # "yellow, with some black": the comma keeps "yellow black" from reading as one term.
    return colors[0] if len(colors) == 1 else f"{colors[0]}, with some {colors[1]}"


def _figure(centre: np.ndarray, border: np.ndarray) -> np.ndarray:
    """The centre pixels that differ from the background's main colour (a plane against blue
    sky, a frog on grass), when they are enough to judge; else the whole centre."""
    share = shares(border)
    ground = max(share, key=lambda c: share[c])
    if share[ground] < _GROUND_SHARE:
        return centre
    rest = centre[centre != PALETTE.index(ground)]
    return rest if rest.size >= _FIGURE_SHARE * centre.size else centre


def describe(image: np.ndarray) -> dict[str, str]:
    """One uint8 HxWx3 image -> {"object": sentence, "background": sentence}."""
    names = pixel_names(image)
    h, w = names.shape
    edge = max(1, round(_EDGE * min(h, w) / 32))
    centre = names[h // 4 : h - h // 4, w // 4 : w - w // 4]
    frame = np.ones((h, w), dtype=bool)
    frame[edge : h - edge, edge : w - edge] = False
    border = names[frame]
    top_share = shares(names[:edge])
    bottom_share = shares(names[h - edge :])
    border_share = shares(border)

    obj = f"The object is {_join(main_colors(_figure(centre, border)))}."
    background = f"The background is {_join(main_colors(border))}."
    cues = []
    top_value = float(hsv(image[:edge])[2].mean())
    if top_share["blue"] >= _CUE_SHARE and top_value >= 0.45:
        cues.append("There is blue sky above.")
    if bottom_share["green"] >= _CUE_SHARE:
        cues.append("There is green grass below.")
    if border_share["black"] >= _CUE_SHARE:
        cues.append("It is a dark background.")
    return {"object": obj, "background": " ".join([background, *cues])}


class ColorAnnotator:
    """The palette annotator behind ``ddsem annotate --annotator color``."""

    name = "color"
    model = PALETTE_VERSION

    def answer(self, images: np.ndarray, prompts: list[Prompt]) -> list[str]:
        """Answer ``prompts[i]`` about ``images[i]`` (uint8 B x H x W x 3)."""
        if len(images) != len(prompts):
            raise ValueError("one prompt per image")
        out = []
        for image, prompt in zip(images, prompts, strict=True):
            answers = describe(np.asarray(image))
            if prompt.name not in answers:
                raise ValueError(f"the colour annotator has no prompt {prompt.name!r}")
            out.append(answers[prompt.name])
        return out
