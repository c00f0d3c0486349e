"""Centers of binary masks and the stuff "island" procedure (reference sections 2.3, 2.4, 2.7).

All coordinates are in input pixels with inclusive integer pixel indices (pixel ``(y, x)`` has
coordinate ``(y, x)``; a 1-pixel mask has a 0x0 box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: 4-connectivity (the cross), scipy's default and the reference's connected components.
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Box:
    """Tight box of a mask with inclusive pixel indices."""

    ymin: int
    xmin: int
    ymax: int
    xmax: int

    @property
    def height(self) -> int:
        """``ymax - ymin`` (0 for a one-row mask, as in the reference)."""
        return self.ymax - self.ymin

    @property
    def width(self) -> int:
        """``xmax - xmin``."""
        return self.xmax - self.xmin

    @property
    def center(self) -> tuple[float, float]:
        """``((ymin + ymax) / 2, (xmin + xmax) / 2)``."""
        return (self.ymin + self.ymax) / 2.0, (self.xmin + self.xmax) / 2.0


def _check_mask(mask: np.ndarray, what: str) -> None:
    if mask.ndim != 2:
        raise ValueError(f"{what}: mask must be [H, W], got shape {mask.shape}")


def mask_box(mask: np.ndarray) -> Box:
    """Tight inclusive box of a non-empty ``[H, W]`` bool mask."""
    _check_mask(mask, "mask_box")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise ValueError("mask_box: empty mask has no box")
    cols = np.flatnonzero(mask.any(axis=0))
    return Box(int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1]))


def box_center(mask: np.ndarray) -> tuple[float, float]:
    """Center ``(cy, cx)`` of the tight box of a ``[H, W]`` mask (reference single-scale).

    It can lie outside a non-convex mask.
    """
    return mask_box(mask).center


def mass_center(mask: np.ndarray) -> tuple[float, float]:
    """Center of mass ``(cy, cx)`` (mean pixel coordinates) of a non-empty ``[H, W]`` mask."""
    _check_mask(mask, "mass_center")
    weights = mask.astype(bool)
    rows = weights.sum(axis=1, dtype=np.int64)
    total = int(rows.sum())
    if total == 0:
        raise ValueError("mass_center: empty mask has no center")
    cols = weights.sum(axis=0, dtype=np.int64)
    cy = float(np.dot(rows, np.arange(rows.size))) / total
    cx = float(np.dot(cols, np.arange(cols.size))) / total
    return cy, cx


def stuff_islands(
    class_mask: np.ndarray, *, dilation: int = 61, max_centers: int, min_area: int
) -> list[np.ndarray]:
    """Split a stuff class mask into "islands" (reference 2.4).

    1. dilate the mask with a ``dilation x dilation`` square (the reference's three 21x21
       stride-1 max-pools);
    2. 4-connected components of the dilated mask;
    3. sort them by dilated pixel count, descending (ties: raster order of first pixel);
    4. keep the first ``max_centers``;
    5. island = component AND mask; drop islands with fewer than ``min_area`` pixels.

    Args:
        class_mask: ``[H, W]`` bool mask of one stuff class (all its segments).
        dilation: odd side of the square structuring element (1 = no dilation).
        max_centers: most islands to keep.
        min_area: minimum island pixel count.

    Returns:
        Kept islands as ``[H, W]`` bool masks, largest dilated component first.
    """
    _check_mask(class_mask, "stuff_islands")
    if dilation < 1 or dilation % 2 == 0:
        raise ValueError(f"stuff_islands: dilation must be a positive odd size, got {dilation}")
    if max_centers < 0:
        raise ValueError(f"stuff_islands: max_centers must be >= 0, got {max_centers}")
    mask = class_mask.astype(bool, copy=False)
    if max_centers == 0 or not mask.any():
        return []
    # Work on the mask's box grown by the dilation half-width: nothing outside it changes.
    half = dilation // 2
    box = mask_box(mask)
    y0, x0 = max(box.ymin - half, 0), max(box.xmin - half, 0)
    y1, x1 = min(box.ymax + half + 1, mask.shape[0]), min(box.xmax + half + 1, mask.shape[1])
    crop = mask[y0:y1, x0:x1]
    dilated = ndimage.maximum_filter(crop, size=dilation, mode="constant", cval=False)
    labels, num = ndimage.label(dilated, structure=FOUR_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=num + 1)[1:]
    order = np.argsort(-sizes, kind="stable")[:max_centers]
    islands = []
    for label_index in order:
        island_crop = (labels == label_index + 1) & crop
        if int(island_crop.sum()) < min_area:
            continue
        island = np.zeros_like(mask)
        island[y0:y1, x0:x1] = island_crop
        islands.append(island)
    return islands
