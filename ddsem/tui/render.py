"""Pixels -> terminal cells: two image rows per character line with the upper half block.

Pure functions over NumPy arrays (no Textual), so the drawing is unit-tested directly. A 32 x 32
CIFAR image becomes 32 columns x 16 lines at its native resolution; ``downsample`` halves it
for thumbnails. Widgets draw ``halfblock_rows`` (plain segments, cheap for Textual to paint);
``render_halfblocks`` is the same picture as a rich ``Text``.
"""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

UPPER_HALF = "\u2580"  # ▀: foreground paints the top pixel, background the bottom one

Rows = list[list[Segment]]  # one list of segments per terminal line


def _color(pixel: np.ndarray) -> Color:
    return Color.from_rgb(int(pixel[0]), int(pixel[1]), int(pixel[2]))


def halfblock_rows(rgb_uint8_hwc: np.ndarray) -> Rows:
    """An H x W x 3 uint8 image -> ceil(H/2) lines of W half-block segments.

    Line k draws image rows 2k (foreground) and 2k+1 (background); an odd last row is drawn
    with no background, so the terminal's own background shows below it. Neighbouring cells of
    the same colours share one segment.
    """
    pixels = np.asarray(rgb_uint8_hwc)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {pixels.dtype} {pixels.shape}")
    height, width, _ = pixels.shape
    styles: dict[tuple[int, ...], Style] = {}
    rows: Rows = []
    for top_row in range(0, height, 2):
        line: list[Segment] = []
        run_key: tuple[int, ...] | None = None
        run_length = 0
        for col in range(width):
            top = pixels[top_row, col]
            bottom = pixels[top_row + 1, col] if top_row + 1 < height else None
            key = tuple(top.tolist()) + (tuple(bottom.tolist()) if bottom is not None else ())
            if key not in styles:
                styles[key] = Style(
                    color=_color(top), bgcolor=_color(bottom) if bottom is not None else None
                )
            if key == run_key:
                run_length += 1
                continue
            if run_key is not None:
                line.append(Segment(UPPER_HALF * run_length, styles[run_key]))
            run_key, run_length = key, 1
        if run_key is not None:
            line.append(Segment(UPPER_HALF * run_length, styles[run_key]))
        rows.append(line)
    return rows


def render_halfblocks(rgb_uint8_hwc: np.ndarray) -> Text:
    """The image as a rich Text (the same cells as ``halfblock_rows``)."""
    text = Text(no_wrap=True, overflow="crop", end="")
    for k, line in enumerate(halfblock_rows(rgb_uint8_hwc)):
        if k:
            text.append("\n")
        for segment in line:
            text.append(segment.text, segment.style)
    return text


def text_rows(text: Text) -> Rows:
    """A rich Text (a caption, a placeholder) -> segment lines, styles resolved."""
    rows: Rows = []
    for line in text.split("\n", allow_blank=True):
        base = Style.parse(line.style) if isinstance(line.style, str) else line.style
        plain = line.plain
        segments: list[Segment] = []
        covered = 0
        for span in sorted(line.spans, key=lambda s: s.start):
            if span.start > covered:
                segments.append(Segment(plain[covered : span.start], base))
            style = Style.parse(span.style) if isinstance(span.style, str) else span.style
            segments.append(Segment(plain[span.start : span.end], base + style))
            covered = span.end
        if covered < len(plain):
            segments.append(Segment(plain[covered:], base))
        rows.append(segments)
    return rows


def downsample(rgb_uint8_hwc: np.ndarray, factor: int) -> np.ndarray:
    """Box-average ``factor`` x ``factor`` blocks (edges that do not fill a block are dropped)."""
    if factor <= 1:
        return np.asarray(rgb_uint8_hwc)
    pixels = np.asarray(rgb_uint8_hwc, dtype=np.float32)
    h = pixels.shape[0] // factor * factor
    w = pixels.shape[1] // factor * factor
    blocks = pixels[:h, :w].reshape(h // factor, factor, w // factor, factor, 3)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)
