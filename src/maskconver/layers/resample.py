"""Resampling between pyramid levels that stays aligned with strided convolutions.

A stride-2 conv (kernel 3, padding 1) or a stride-2 subsample puts coarse pixel ``j`` over fine
pixel ``2j`` (the corner convention). A half-pixel bilinear x2 resize (``align_corners=False``)
assumes coarse pixel ``j`` covers fine pixels ``2j`` and ``2j + 1`` and so shifts content by half a
coarse pixel. ``aligned_upsample`` is the corner-convention x``factor`` bilinear upsample
(AdelaiDet's ``aligned_bilinear``): coarse pixel ``j`` lands exactly on fine pixel ``factor * j``,
values in between are interpolated, and the last ``factor - 1`` rows/columns repeat the edge.
Cropping the right and bottom to the finer level's size (``crop_to``) then lines levels of any
input size up (DR1Mask section 3.3: input divisibility 4 instead of 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def aligned_upsample(x: Tensor, factor: int = 2) -> Tensor:
    """Corner-aligned bilinear upsampling of ``[B, C, h, w]`` to ``[B, C, factor h, factor w]``.

    Output pixel ``factor * j`` equals input pixel ``j``; pixel ``factor * j + i`` interpolates
    linearly between ``j`` and ``j + 1`` (the edge value is repeated past the last pixel).
    """
    if factor == 1:
        return x
    if factor < 1:
        raise ValueError(f"aligned_upsample: factor must be >= 1, got {factor}")
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    return x[..., : factor * h, : factor * w]


def crop_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Crop the right and bottom of ``[..., H, W]`` to ``size`` (no-op when it already fits).

    ``size`` may hold traced sizes (an export keeps them dynamic).
    """
    if not torch.jit.is_tracing() and (x.shape[-2] < size[0] or x.shape[-1] < size[1]):
        raise ValueError(f"crop_to: {tuple(x.shape[-2:])} is smaller than {tuple(size)}")
    return x[..., : size[0], : size[1]]


def upsample_to(x: Tensor, size: Sequence[int], *, factor: int = 2, aligned: bool = True) -> Tensor:
    """x``factor`` to a finer level of ``size``: aligned (then cropped) or a naive resize.

    Levels of a stride-2 pyramid have ``ceil(H / s)`` pixels, so the x2 of a level covers the
    next finer one and the crop removes at most one row and column. The naive arm is a
    half-pixel bilinear resize straight to ``size`` (what a plain FPN does), kept for the
    ablation of DR1Mask's Table 5.
    """
    if aligned:
        return crop_to(aligned_upsample(x, factor), size)
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
