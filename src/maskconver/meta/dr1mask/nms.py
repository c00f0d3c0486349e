"""Non-maximum suppression in pure torch, and a static-shape form that exports to ONNX.

* ``nms`` / ``batched_nms``: torchvision's semantics (greedy: visit boxes by descending score,
  keep a box unless it overlaps an already kept box by IoU > ``iou_threshold``; ``batched_nms``
  never lets boxes of different classes suppress each other) without torchvision's compiled ops,
  which do not load with the CPU build used here. Ties in score keep their index order.
* ``nms_keep``: the class-aware keep mask ``[P]`` of a fixed-size candidate list, for the
  inference graph. Eagerly it is ``batched_nms``; in an ONNX export it becomes the standard
  ``NonMaxSuppression`` operator (a ``torch.autograd.Function`` with a ``symbolic``), so the
  graph stays static-shape: the selected indices are scattered back into a ``[P]`` mask.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from maskconver.meta.dr1mask.boxes import box_iou

COORDINATE_MARGIN = 1.0  # class offsets exceed the largest coordinate by this much


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of one set of boxes.

    Args:
        boxes: ``[P, 4]`` ``(x0, y0, x1, y1)``.
        scores: ``[P]``.
        iou_threshold: a box is suppressed by a kept box with IoU strictly above this.

    Returns:
        int64 indices of the kept boxes, by descending score.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold  # [P, P] in sorted order
    alive = torch.ones(order.shape[0], dtype=torch.bool, device=boxes.device)
    kept: list[int] = []
    for i in range(order.shape[0]):
        if bool(alive[i]):
            kept.append(i)
            alive &= ~overlaps[i]
    return order[torch.tensor(kept, dtype=torch.int64, device=boxes.device)]


def offset_by_class(boxes: Tensor, classes: Tensor) -> Tensor:
    """Boxes shifted by ``class * (max coordinate + margin)`` so classes never overlap."""
    if boxes.numel() == 0:
        return boxes
    offset = boxes.max() + COORDINATE_MARGIN
    return boxes + (classes.to(boxes.dtype) * offset)[:, None]


def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware greedy NMS (``torchvision.ops.batched_nms``'s contract).

    Args:
        boxes: ``[P, 4]``.
        scores: ``[P]``.
        classes: ``[P]`` int64: boxes of different classes never suppress each other.
        iou_threshold: see ``nms``.

    Returns:
        int64 indices of the kept boxes, by descending score.
    """
    return nms(offset_by_class(boxes, classes), scores, iou_threshold)


class _NmsKeep(torch.autograd.Function):
    """``[P]`` keep mask of boxes already offset by class; ONNX ``NonMaxSuppression``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float
    ) -> Tensor:
        keep = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
        if scores.is_meta:  # shapes only (e.g. counting multiply-adds): the mask's shape is fixed
            return keep
        with warnings.catch_warnings():  # under a trace this runs as one opaque node
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            candidates = torch.nonzero(scores > score_threshold).flatten()
            kept = nms(boxes[candidates], scores[candidates], iou_threshold)
            keep[candidates[kept]] = True
        return keep

    @staticmethod
    def symbolic(
        g: Any, boxes: Any, scores: Any, iou_threshold: float, score_threshold: float
    ) -> Any:
        def const(value: Any, dtype: torch.dtype | None = None) -> Any:
            return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

        batched = g.op("Unsqueeze", boxes, const([0]))  # [1, P, 4]
        per_class = g.op("Unsqueeze", scores, const([0, 1]))  # [1, 1, P]
        count = g.op("Slice", g.op("Shape", boxes), const([0]), const([1]))  # [1] = P
        selected = g.op(
            "NonMaxSuppression",
            batched,
            per_class,
            count,
            const([float(iou_threshold)]),
            const([float(score_threshold)]),
        )  # [M, 3] (batch, class, box index)
        index = g.op("Gather", selected, const(2), axis_i=1)  # [M]
        zeros = g.op("ConstantOfShape", count, value_t=torch.tensor([0], dtype=torch.int64))
        ones = g.op("Expand", const([1], torch.int64), g.op("Shape", index))
        mask = g.op("ScatterElements", zeros, index, ones, axis_i=0)
        return g.op("Cast", mask, to_i=9)  # 9 = BOOL


def nms_keep(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    *,
    iou_threshold: float,
    score_threshold: float,
) -> Tensor:
    """Static-shape class-aware NMS: which of ``P`` candidates survive.

    Candidates with ``score <= score_threshold`` are dropped before the suppression (they
    neither survive nor suppress), as in ONNX ``NonMaxSuppression``.

    Args:
        boxes: ``[P, 4]``.
        scores: ``[P]``.
        classes: ``[P]`` int64.
        iou_threshold: see ``nms``.
        score_threshold: candidates need a score above it.

    Returns:
        ``[P]`` bool keep mask (the same set as ``batched_nms`` on the valid candidates).
    """
    shifted = offset_by_class(boxes, classes)
    keep: Tensor = _NmsKeep.apply(shifted, scores, iou_threshold, score_threshold)
    return keep
