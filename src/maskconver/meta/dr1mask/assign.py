"""FCOS assignment of feature locations to ground-truth boxes (Tian et al. 2019).

Locations: level ``l`` of stride ``s`` has ``ceil(H / s) x ceil(W / s)`` locations; location
``(i, j)`` sits at input coordinate ``(x, y) = (s j + 0.5, s i + 0.5)``, the centre of input
pixel ``(s i, s j)`` on which the strided convs here centre feature pixel ``(i, j)`` (the corner
convention of ``layers/resample.py``; FCOS's ``s j + s // 2`` is detectron2's cell-centre
convention). Levels are concatenated fine to coarse, each row-major.

A location is a positive of box ``g`` when

* it lies inside the box and, with centre sampling (``radius > 0``), strictly inside the
  *centre region*: the square of half-side ``radius * s`` around the box centre, clipped to
  the box;
* its size of interest fits its level: ``lo_l <= max(l, t, r, b) <= hi_l``, with the ranges
  ``[0, m_0], [m_0, m_1], ..., [m_last, inf)`` built from ``sizes_of_interest``;

and among several such boxes it takes the one of smallest area (the first on ties).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from maskconver.meta.dr1mask.boxes import box_area, centerness_target, encode_distances

LOCATION_OFFSET = 0.5  # a location is the centre of the input pixel its feature pixel sits on
BACKGROUND = -1


def level_sizes(height: int, width: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """``(ceil(H / s), ceil(W / s))`` per stride: the sizes of the stride-2 pyramid levels."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def make_locations(
    sizes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Every location's ``(x, y)`` and stride, levels concatenated fine to coarse.

    Returns:
        ``([L, 2] float32 (x, y), [L] float32 stride)``.
    """
    points, location_strides = [], []
    for (h, w), s in zip(sizes, strides, strict=True):
        ys = torch.arange(h, dtype=torch.float32, device=device) * s + LOCATION_OFFSET
        xs = torch.arange(w, dtype=torch.float32, device=device) * s + LOCATION_OFFSET
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1))
        location_strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(location_strides)


def interest_ranges(
    sizes_of_interest: Sequence[float], num_levels: int
) -> list[tuple[float, float]]:
    """``[(0, m_0), (m_0, m_1), ..., (m_last, inf)]``: one range per level.

    Raises:
        ValueError: unless there is one boundary fewer than levels, ascending.
    """
    bounds = [float(m) for m in sizes_of_interest]
    if len(bounds) != num_levels - 1:
        raise ValueError(
            f"sizes_of_interest needs {num_levels - 1} boundaries for {num_levels} levels, "
            f"got {bounds}"
        )
    if any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"sizes_of_interest must be ascending, got {bounds}")
    edges = [0.0, *bounds, math.inf]
    return list(zip(edges[:-1], edges[1:]))


@dataclass
class Assignment:
    """Per-location FCOS targets.

    Attributes:
        labels: ``[L]`` int64 class index of the assigned box, -1 for background.
        gt_index: ``[L]`` int64 index of the assigned box, -1 for background.
        distances: ``[L, 4]`` ``(l, t, r, b)`` to the assigned box (0 on background).
        centerness: ``[L]`` centerness target (0 on background).
    """

    labels: Tensor
    gt_index: Tensor
    distances: Tensor
    centerness: Tensor


def assign_locations(
    locations: Tensor,
    location_strides: Tensor,
    level_ranges: Tensor,
    boxes: Tensor,
    classes: Tensor,
    *,
    radius: float,
) -> Assignment:
    """Assign each location to at most one box (see the module docstring).

    Args:
        locations: ``[L, 2]`` ``(x, y)``.
        location_strides: ``[L]`` stride of each location's level.
        level_ranges: ``[L, 2]`` ``(lo, hi)`` size of interest of each location's level.
        boxes: ``[N, 4]`` ground-truth boxes.
        classes: ``[N]`` int64 class indices.
        radius: centre-sampling radius in strides (0: anywhere inside the box).

    Returns:
        The ``Assignment``.
    """
    num_locations = locations.shape[0]
    if boxes.shape[0] == 0:
        return Assignment(
            labels=torch.full((num_locations,), BACKGROUND, dtype=torch.int64),
            gt_index=torch.full((num_locations,), BACKGROUND, dtype=torch.int64),
            distances=torch.zeros(num_locations, 4),
            centerness=torch.zeros(num_locations),
        )
    distances = encode_distances(locations, boxes)  # [L, N, 4]
    inside = distances.min(dim=2).values > 0
    if radius > 0:
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [N, 2]
        reach = (radius * location_strides)[:, None, None]  # [L, 1, 1]
        region = torch.cat(
            [
                torch.maximum(centre[None] - reach, boxes[None, :, :2]),
                torch.minimum(centre[None] + reach, boxes[None, :, 2:]),
            ],
            dim=2,
        )  # [L, N, 4]
        inside = inside & (_distances_to(locations, region).min(dim=2).values > 0)
    reach_size = distances.max(dim=2).values  # [L, N]
    fits = (reach_size >= level_ranges[:, 0, None]) & (reach_size <= level_ranges[:, 1, None])
    candidate = inside & fits
    area = box_area(boxes)[None, :].expand(num_locations, -1)
    area = torch.where(candidate, area, torch.full_like(area, math.inf))
    best_area, best = area.min(dim=1)
    positive = torch.isfinite(best_area)
    gt_index = torch.where(positive, best, torch.full_like(best, BACKGROUND))
    chosen = distances[torch.arange(num_locations), best]  # [L, 4]
    chosen = torch.where(positive[:, None], chosen, torch.zeros_like(chosen))
    return Assignment(
        labels=torch.where(positive, classes[best], torch.full_like(best, BACKGROUND)),
        gt_index=gt_index,
        distances=chosen,
        centerness=torch.where(positive, centerness_target(chosen), torch.zeros(num_locations)),
    )


def _distances_to(locations: Tensor, regions: Tensor) -> Tensor:
    """``(l, t, r, b)`` of ``[L, 2]`` locations to per-location regions ``[L, N, 4]``."""
    x, y = locations[:, 0, None], locations[:, 1, None]
    return torch.stack(
        [x - regions[..., 0], y - regions[..., 1], regions[..., 2] - x, regions[..., 3] - y],
        dim=-1,
    )
