"""Static-shape FCOS inference: scores -> top-k candidates -> class-aware NMS -> K detections.

Per image (no data-dependent shapes on the way; the count ``K`` is fixed and a detection that
is not real has score 0):

1. score of (location, class): ``sqrt(sigmoid(cls) * sigmoid(centerness))`` (FCOS ranks by the
   product; the square root keeps a probability-like scale, as AdelaiDet reports it);
2. the ``pre_nms_topk`` best (location, class) pairs over all levels; a candidate needs a score
   above ``score_threshold`` (FCOS: 0.05);
3. their boxes decoded from the distances and clipped to the input; class-aware NMS at
   ``nms_iou`` (FCOS: 0.6) via ``nms.nms_keep`` (ONNX ``NonMaxSuppression`` in an export);
4. the ``K`` best survivors with their class, score, box and the embedding at their location.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.meta.dr1mask.boxes import clip_boxes, decode_distances
from maskconver.meta.dr1mask.nms import nms_keep


@dataclass(frozen=True)
class DetectionSettings:
    """Inference thresholds of the top-down branch.

    Attributes:
        num_detections: K, detections per image (a fixed count; unused slots score 0).
        pre_nms_topk: candidates kept before NMS.
        score_threshold: candidates need a score above it.
        nms_iou: IoU above which a candidate is suppressed by a better one of its class.
    """

    num_detections: int = 100
    pre_nms_topk: int = 1000
    score_threshold: float = 0.05
    nms_iou: float = 0.6


class Detections(NamedTuple):
    """``K`` detections per image, best first.

    Attributes:
        boxes: ``[B, K, 4]`` ``(x0, y0, x1, y1)`` in input pixels.
        scores: ``[B, K]`` (0 for an empty slot).
        classes: ``[B, K]`` int64 class indices.
        embeddings: ``[B, K, D]`` instance embeddings at the detections' locations.
    """

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    embeddings: Tensor


def select_detections(
    cls_logits: Tensor,
    centerness_logits: Tensor,
    distances: Tensor,
    embeddings: Tensor,
    locations: Tensor,
    image_size: tuple[Tensor | int, Tensor | int],
    settings: DetectionSettings,
) -> Detections:
    """The K detections of every image (see the module docstring).

    Args:
        cls_logits: ``[B, L, C]`` over all locations (levels concatenated).
        centerness_logits: ``[B, L]``.
        distances: ``[B, L, 4]`` ``(l, t, r, b)``.
        embeddings: ``[B, L, D]``.
        locations: ``[L, 2]`` ``(x, y)``.
        image_size: ``(H, W)`` of the network input (boxes are clipped to it).
        settings: the thresholds.

    Returns:
        ``Detections`` with ``K = settings.num_detections`` slots.
    """
    batch, num_locations, num_classes = cls_logits.shape
    scores = torch.sqrt(cls_logits.sigmoid() * centerness_logits.sigmoid()[:, :, None])
    num_candidates = min(settings.pre_nms_topk, num_locations * num_classes)
    top_scores, top_index = scores.flatten(1).topk(num_candidates, dim=1)  # [B, P]
    location = torch.div(top_index, num_classes, rounding_mode="floor")
    classes = top_index - location * num_classes
    boxes = decode_distances(locations, distances)  # [B, L, 4]
    boxes = clip_boxes(boxes, image_size[0], image_size[1])
    top_boxes = boxes.gather(1, location[:, :, None].expand(-1, -1, 4))
    kept_scores = []
    for b in range(batch):
        keep = nms_keep(
            top_boxes[b],
            top_scores[b],
            classes[b],
            iou_threshold=settings.nms_iou,
            score_threshold=settings.score_threshold,
        )
        kept_scores.append(torch.where(keep, top_scores[b], torch.zeros_like(top_scores[b])))
    survivors = torch.stack(kept_scores)
    count = min(settings.num_detections, num_candidates)
    final_scores, pick = survivors.topk(count, dim=1)  # [B, K]
    final_location = location.gather(1, pick)
    dim = embeddings.shape[-1]
    detections = Detections(
        boxes=top_boxes.gather(1, pick[:, :, None].expand(-1, -1, 4)),
        scores=final_scores,
        classes=classes.gather(1, pick),
        embeddings=embeddings.gather(1, final_location[:, :, None].expand(-1, -1, dim)),
    )
    missing = settings.num_detections - count
    if missing > 0:  # fewer candidates than slots (a tiny input): pad with empty slots
        detections = Detections(
            boxes=F.pad(detections.boxes, (0, 0, 0, missing)),
            scores=F.pad(detections.scores, (0, missing)),
            classes=F.pad(detections.classes, (0, missing)),
            embeddings=F.pad(detections.embeddings, (0, 0, 0, missing)),
        )
    return detections
