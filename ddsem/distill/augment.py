"""Differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021), written for ddsem.

One call picks ONE transform family at random from the strategy (the reference code's
``aug_mode='S'``) and draws its parameters from a private generator. Parameters are either
per-sample, or shared by the whole batch (``shared=True``): the siamese case, where the same
``AugParams`` is applied to a real batch and a synthetic batch of any sizes so that matching
compares like with like. Every transform is differentiable in the pixels.

Magnitudes are the reference ``ParamDiffAug``: flip p 0.5, scale in [1/1.2, 1.2], rotation
within +-15 degrees, translation up to 1/8 of the side (zero fill), a cutout of half the side,
brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5]. Images are in normalised space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ddsem.errors import UserError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")

PROB_FLIP = 0.5
RATIO_SCALE = 1.2
RATIO_ROTATE_DEGREES = 15.0
RATIO_CROP_PAD = 0.125
RATIO_CUTOUT = 0.5
BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """ "color_crop_flip" -> ("color", "crop", "flip"); "none" or "" -> (); unknown -> UserError."""
    if strategy.strip().lower() in ("", "none"):
        return ()
    parts = tuple(p for p in strategy.strip().lower().split("_") if p)
    unknown = [p for p in parts if p not in FAMILIES]
    if unknown:
        raise UserError(
            f"unknown augmentation {', '.join(unknown)!s} in strategy {strategy!r}: "
            f"use families joined by '_' from {', '.join(FAMILIES)}, or 'none'"
        )
    return parts


@dataclass
class AugParams:
    """One drawn augmentation: a family and its parameters, each of leading size 1 (shared by
    the batch) or the batch size (one value per sample)."""

    family: str
    values: dict[str, torch.Tensor]

    def expanded(self, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in self.values.items():
            v = v.to(device)
            out[k] = v.expand(n, *v.shape[1:]) if v.shape[0] == 1 else v
        return out


def sample(
    strategy: str | tuple[str, ...],
    n: int,
    generator: torch.Generator,
    size: tuple[int, int] = (32, 32),
    *,
    shared: bool = False,
) -> AugParams:
    """Draw one augmentation for a batch of ``n`` images of ``size`` (H, W)."""
    families = parse_strategy(strategy) if isinstance(strategy, str) else strategy
    if not families:
        return AugParams("none", {})
    family = families[int(torch.randint(len(families), (1,), generator=generator))]
    m = 1 if shared else n
    height, width = size

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(m, *shape, generator=generator)

    if family == "color":
        return AugParams(
            family,
            {
                "brightness": uniform(1, 1, 1),
                "saturation": uniform(1, 1, 1),
                "contrast": uniform(1, 1, 1),
            },
        )
    if family == "crop":
        sx, sy = int(height * RATIO_CROP_PAD + 0.5), int(width * RATIO_CROP_PAD + 0.5)
        tx = torch.randint(-sx, sx + 1, (m,), generator=generator)
        ty = torch.randint(-sy, sy + 1, (m,), generator=generator)
        return AugParams(family, {"tx": tx, "ty": ty})
    if family == "cutout":
        ch, cw = int(height * RATIO_CUTOUT + 0.5), int(width * RATIO_CUTOUT + 0.5)
        ox = torch.randint(0, height + (1 - ch % 2), (m,), generator=generator)
        oy = torch.randint(0, width + (1 - cw % 2), (m,), generator=generator)
        return AugParams(family, {"ox": ox, "oy": oy})
    if family == "flip":
        return AugParams(family, {"flip": uniform() < PROB_FLIP})
    if family == "scale":
        low, high = 1.0 / RATIO_SCALE, RATIO_SCALE
        return AugParams(
            family, {"sx": uniform() * (high - low) + low, "sy": uniform() * (high - low) + low}
        )
    # rotate
    angle = (uniform() - 0.5) * 2 * RATIO_ROTATE_DEGREES / 180 * math.pi
    return AugParams("rotate", {"angle": angle})


def apply(x: torch.Tensor, params: AugParams) -> torch.Tensor:
    """Apply a drawn augmentation to x (N, C, H, W); differentiable in x."""
    if params.family == "none":
        return x
    n, _, height, width = x.shape
    v = params.expanded(n, x.device)
    if params.family == "color":
        x = x + (v["brightness"].to(x.dtype) - 0.5) * BRIGHTNESS
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (v["saturation"].to(x.dtype) * SATURATION) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (v["contrast"].to(x.dtype) + CONTRAST) + mean
    if params.family == "crop":
        # Shift by (tx, ty) pixels; what comes in from outside the image is zero.
        padded = F.pad(x, (1, 1, 1, 1))
        rows = torch.clamp(
            torch.arange(height, device=x.device) + v["tx"][:, None] + 1, 0, height + 1
        )
        cols = torch.clamp(
            torch.arange(width, device=x.device) + v["ty"][:, None] + 1, 0, width + 1
        )
        batch = torch.arange(n, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2)
    if params.family == "cutout":
        ch, cw = int(height * RATIO_CUTOUT + 0.5), int(width * RATIO_CUTOUT + 0.5)
        i = torch.arange(height, device=x.device)[None, :]
        j = torch.arange(width, device=x.device)[None, :]
        row_in = (i >= v["ox"][:, None] - ch // 2) & (i < v["ox"][:, None] - ch // 2 + ch)
        col_in = (j >= v["oy"][:, None] - cw // 2) & (j < v["oy"][:, None] - cw // 2 + cw)
        mask = ~(row_in[:, :, None] & col_in[:, None, :])
        return x * mask[:, None].to(x.dtype)
    if params.family == "flip":
        return torch.where(v["flip"][:, None, None, None], x.flip(3), x)
    if params.family == "scale":
        zeros = torch.zeros_like(v["sx"])
        theta = torch.stack(
            [torch.stack([v["sx"], zeros, zeros], 1), torch.stack([zeros, v["sy"], zeros], 1)], 1
        )
        return _warp(x, theta)
    if params.family == "rotate":
        a = v["angle"]
        zeros = torch.zeros_like(a)
        theta = torch.stack(
            [
                torch.stack([torch.cos(a), -torch.sin(a), zeros], 1),
                torch.stack([torch.sin(a), torch.cos(a), zeros], 1),
            ],
            1,
        )
        return _warp(x, theta)
    raise UserError(f"unknown augmentation family {params.family!r}")


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def augment(
    x: torch.Tensor,
    strategy: str | tuple[str, ...],
    generator: torch.Generator,
    *,
    shared: bool = False,
) -> torch.Tensor:
    """Draw and apply in one call (per-sample parameters unless ``shared``)."""
    params = sample(strategy, x.shape[0], generator, (x.shape[2], x.shape[3]), shared=shared)
    return apply(x, params)
