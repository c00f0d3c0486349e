"""Box utilities: areas, IoU, FCOS distance coding, GIoU loss, centerness, mask boxes.

Boxes are ``(x0, y0, x1, y1)`` in continuous input coordinates: pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)``, so the tight box of a mask is ``(min_x, min_y, max_x + 1,
max_y + 1)``. FCOS codes a box at a location ``(x, y)`` by its distances
``(l, t, r, b) = (x - x0, y - y0, x1 - x, y1 - y)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-7  # guards the GIoU and centerness divisions


def box_area(boxes: Tensor) -> Tensor:
    """``[..., 4]`` boxes -> ``[...]`` areas (0 for empty boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` boxes -> ``[N, M]`` (0 where the union is 0)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=EPS), torch.zeros_like(inter))


def decode_distances(locations: Tensor, distances: Tensor) -> Tensor:
    """Boxes from FCOS distances.

    Args:
        locations: ``[L, 2]`` ``(x, y)`` of every location.
        distances: ``[..., L, 4]`` ``(l, t, r, b)`` >= 0.

    Returns:
        ``[..., L, 4]`` boxes ``(x - l, y - t, x + r, y + b)``.
    """
    x, y = locations[:, 0], locations[:, 1]
    return torch.stack(
        [
            x - distances[..., 0],
            y - distances[..., 1],
            x + distances[..., 2],
            y + distances[..., 3],
        ],
        dim=-1,
    )


def encode_distances(locations: Tensor, boxes: Tensor) -> Tensor:
    """``(l, t, r, b)`` of every ``[L, 2]`` location to every ``[N, 4]`` box -> ``[L, N, 4]``."""
    x, y = locations[:, 0, None], locations[:, 1, None]
    return torch.stack(
        [
            x - boxes[None, :, 0],
            y - boxes[None, :, 1],
            boxes[None, :, 2] - x,
            boxes[None, :, 3] - y,
        ],
        dim=-1,
    )


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - GIoU`` of boxes given as distances from the same location.

    With both boxes coded at one location, ``intersection = (min(l) + min(r)) x (min(t) +
    min(b))`` and the smallest enclosing box is ``(max(l) + max(r)) x (max(t) + max(b))``;
    ``GIoU = IoU - (enclosing - union) / enclosing`` (Rezatofighi et al. 2019).

    Args:
        pred: ``[P, 4]`` predicted ``(l, t, r, b)`` >= 0.
        target: ``[P, 4]`` target ``(l, t, r, b)`` > 0.

    Returns:
        ``[P]`` losses in ``[0, 2]``.
    """
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    pred_area = (pl + pr) * (pt + pb)
    target_area = (tl + tr) * (tt + tb)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (
        torch.minimum(pt, tt) + torch.minimum(pb, tb)
    )
    union = pred_area + target_area - inter
    enclosing = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (
        torch.maximum(pt, tt) + torch.maximum(pb, tb)
    )
    iou = inter / union.clamp(min=EPS)
    giou = iou - (enclosing - union) / enclosing.clamp(min=EPS)
    return 1.0 - giou


def centerness_target(distances: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.

    Args:
        distances: ``[..., 4]`` ``(l, t, r, b)`` > 0 (inside the box).

    Returns:
        ``[...]`` in ``[0, 1]``: 1 at the box centre, towards 0 at its edges.
    """
    left, top, right, bottom = distances.clamp(min=0).unbind(-1)
    horizontal = torch.minimum(left, right) / torch.maximum(left, right).clamp(min=EPS)
    vertical = torch.minimum(top, bottom) / torch.maximum(top, bottom).clamp(min=EPS)
    return torch.sqrt(horizontal * vertical)


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of ``[N, H, W]`` bool masks -> ``[N, 4]`` float (zeros for empty masks)."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4)
    rows = masks.any(dim=2)  # [N, H]
    cols = masks.any(dim=1)  # [N, W]
    height, width = masks.shape[1:]
    ys = torch.arange(height, dtype=torch.float32)
    xs = torch.arange(width, dtype=torch.float32)
    big = float(max(height, width) + 1)
    y0 = torch.where(rows, ys, big).amin(1)
    y1 = torch.where(rows, ys, -1.0).amax(1) + 1
    x0 = torch.where(cols, xs, big).amin(1)
    x1 = torch.where(cols, xs, -1.0).amax(1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(rows.any(1)[:, None], boxes, torch.zeros_like(boxes))


def clip_boxes(boxes: Tensor, height: Tensor | int, width: Tensor | int) -> Tensor:
    """Clip ``[..., 4]`` boxes to ``[0, width] x [0, height]``."""
    x0 = boxes[..., 0].clamp(min=0)
    y0 = boxes[..., 1].clamp(min=0)
    x1 = boxes[..., 2].clamp(min=0)
    y1 = boxes[..., 3].clamp(min=0)
    w = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    h = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    return torch.stack(
        [torch.minimum(x0, w), torch.minimum(y0, h), torch.minimum(x1, w), torch.minimum(y1, h)],
        dim=-1,
    )
