"""Figures of the semantic analysis (paper Fig. 9 and Fig. 10), written as PNG with Agg."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddsem.plots import _pyplot


def pr_curves(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
    chance_ap: float,
    title: str,
    path: str | Path,
) -> Path:
    """Precision-recall curves (label, recall, precision) drawn as the step function whose area
    is the average precision, with the chance level dashed (Fig. 9): the expected AP of a random
    ranking (``ddsem.significance.chance_ap``), the baseline a curve's AP is compared with."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for label, recall, precision in curves:
        ax.step(recall, precision, where="pre", label=label, linewidth=1.4)
    ax.axhline(
        chance_ap, color="grey", linestyle="--", linewidth=1.0, label=f"chance AP {chance_ap:.3f}"
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def influence_grid(
    distilled: np.ndarray,
    distilled_title: str,
    test_images: Sequence[np.ndarray | None],
    test_titles: Sequence[str],
    path: str | Path,
) -> Path:
    """A distilled image beside the 3x3 grid of its most influenced test images (Fig. 10).

    Images are HWC uint8; None leaves a grey tile; a title may have two lines. Composed with
    Pillow (pixels scaled by whole factors, nearest neighbour), which is about a hundred times
    faster than a matplotlib figure: a report draws one of these per distilled image.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    pad, scale, big, text_h = 8, 3, 6, 28
    tile = 32 * scale
    cell_w, cell_h = tile + 14, tile + text_h
    left = 32 * big + 2 * pad
    width = left + 3 * cell_w + pad
    height = max(3 * cell_h + 2 * pad, 32 * big + text_h + 2 * pad)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)

    def paste(pixels: np.ndarray | None, x: int, y: int, factor: int) -> None:
        size = 32 * factor
        if pixels is None:
            draw.rectangle([x, y, x + size - 1, y + size - 1], fill=(200, 200, 200))
            return
        img = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
        canvas.paste(img.resize((img.width * factor, img.height * factor), Image.NEAREST), (x, y))

    draw.text((pad, pad), distilled_title, fill="black", font=font)
    paste(distilled, pad, pad + 16, big)
    for i in range(min(9, len(test_images))):
        x = left + (i % 3) * cell_w
        y = pad + (i // 3) * cell_h
        paste(test_images[i], x, y, scale)
        draw.multiline_text((x, y + tile + 1), test_titles[i], fill="black", font=font, spacing=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
