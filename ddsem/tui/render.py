"""Pixels -> terminal text: two image rows per character line with the upper half block.

Pure functions over NumPy arrays (no Textual), so the drawing is unit-tested directly. A 32 x 32
CIFAR image becomes 32 columns x 16 lines at its native resolution; ``downsample`` halves it
for thumbnails.
"""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text

UPPER_HALF = "\u2580"  # ▀: foreground paints the top pixel, background the bottom one


def _color(pixel: np.ndarray) -> Color:
    return Color.from_rgb(int(pixel[0]), int(pixel[1]), int(pixel[2]))


def render_halfblocks(rgb_uint8_hwc: np.ndarray) -> Text:
    """An H x W x 3 uint8 image -> ceil(H/2) lines of W half-block characters.

    Line k draws image rows 2k (foreground) and 2k+1 (background); an odd last row is drawn
    with no background, so the terminal's own background shows below it.
    """
    pixels = np.asarray(rgb_uint8_hwc)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {pixels.dtype} {pixels.shape}")
    height, width, _ = pixels.shape
    text = Text(no_wrap=True, overflow="crop", end="")
    styles: dict[tuple[int, ...], Style] = {}
    for top_row in range(0, height, 2):
        if top_row:
            text.append("\n")
        for col in range(width):
            top = pixels[top_row, col]
            bottom = pixels[top_row + 1, col] if top_row + 1 < height else None
            key = tuple(top.tolist()) + (tuple(bottom.tolist()) if bottom is not None else ())
            style = styles.get(key)
            if style is None:
                style = Style(
                    color=_color(top), bgcolor=_color(bottom) if bottom is not None else None
                )
                styles[key] = style
            text.append(UPPER_HALF, style)
    return text


def downsample(rgb_uint8_hwc: np.ndarray, factor: int) -> np.ndarray:
    """Box-average ``factor`` x ``factor`` blocks (edges that do not fill a block are dropped)."""
    if factor <= 1:
        return np.asarray(rgb_uint8_hwc)
    pixels = np.asarray(rgb_uint8_hwc, dtype=np.float32)
    h = pixels.shape[0] // factor * factor
    w = pixels.shape[1] // factor * factor
    blocks = pixels[:h, :w].reshape(h // factor, factor, w // factor, factor, 3)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)
