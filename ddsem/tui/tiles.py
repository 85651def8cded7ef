"""Read-layer views -> tiles ready to draw (PNG decode and half-block rendering, in workers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text

from ddsem.tui.render import Rows, downsample, halfblock_rows, text_rows
from ddsem.tui.viewmodel import class_name, format_value

if TYPE_CHECKING:
    from ddsem.jobs.views import ImageView, InfluencedImage, RankedImage, RealImage

COMPACT_FACTOR = 2  # compact tiles draw a 32 x 32 image at 16 x 16


@dataclass(frozen=True)
class TileData:
    """One tile: ``key`` identifies it to the screen (a distilled or a test image index)."""

    key: int
    title: str
    subtitle: str
    picture: Rows


def picture(png: bytes | None, compact: bool) -> Rows:
    """The PNG drawn in half blocks (halved when compact); a placeholder when it is missing."""
    from ddsem.jobs.views import png_to_array  # the read layer: loaded by now, off the UI thread

    if png is None:
        return text_rows(Text("(not stored)", style="dim"))
    pixels = png_to_array(png)
    return halfblock_rows(downsample(pixels, COMPACT_FACTOR) if compact else pixels)


def distilled_tile(image: ImageView, compact: bool) -> TileData:
    return TileData(
        image.index, f"#{image.index} {image.class_name}", "", picture(image.png, compact)
    )


def influenced_tile(image: InfluencedImage, compact: bool) -> TileData:
    return TileData(
        image.test_index,
        image.class_name,
        format_value(image.value),
        picture(image.png, compact),
    )


def evidence_tiles(
    result: RankedImage, images: dict[int, RealImage], classes: list[str], compact: bool = True
) -> list[TileData]:
    """A query answer's most influenced positive test images, with class and influence."""
    out = []
    for hit in result.top_images:
        image = images.get(hit.image_id)
        label = class_name(classes, image.label) if image else "?"
        out.append(
            TileData(
                hit.test_index,
                label,
                format_value(hit.influence),
                picture(image.png if image else None, compact),
            )
        )
    return out
