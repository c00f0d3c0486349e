"""Panoptic sample -> DR1Mask training targets.

Per augmented sample (fixed training size ``H x W``):

* **instances**: every non-crowd thing segment, in ``sample.segments`` order, up to
  ``max_instances`` slots: tight box, class, and the mask cropped to the box by aligned RoIAlign
  (``mask_size`` square, thresholded at 0.5: BlendMask's mask target). Segments beyond the slots
  are dropped: their locations are background and their pixels are ignored;
* **FCOS targets** per location (``assign.assign_locations``): class (-1 background), the slot
  it is assigned to, the distances to that box and the centerness target;
* **unified target** at ``target_stride`` (pixel ``i`` = input pixel ``stride * i``): the stuff
  class index on stuff pixels, ``num_classes + slot`` on the pixels of an instance that has at
  least one positive location (the others have no column), -1 (ignored) on void, padding,
  crowd and dropped or column-less instances;
* ``static_valid``: which class indices have a static column (stuff classes).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from maskconver.batching import StackedFields
from maskconver.data.types import PanopticSample
from maskconver.meta.dr1mask.assign import (
    assign_locations,
    interest_ranges,
    level_sizes,
    make_locations,
)
from maskconver.meta.dr1mask.boxes import mask_boxes
from maskconver.meta.dr1mask.roi_align import roi_align
from maskconver.meta.dr1mask.unified import IGNORE

MASK_THRESHOLD = 0.5  # a resized mask-target bin is foreground at >= 0.5


@dataclass
class DR1MaskTargetBatch(StackedFields):
    """``DR1MaskTargets`` stacked over a batch (each field gains a leading ``B``).

    Attributes:
        labels: ``[B, L]`` int64 class per location, -1 background.
        gt_index: ``[B, L]`` int64 slot per location, -1 background.
        distances: ``[B, L, 4]`` ``(l, t, r, b)`` targets.
        centerness: ``[B, L]`` centerness targets.
        boxes: ``[B, K, 4]`` instance boxes.
        classes: ``[B, K]`` int64 instance classes, -1 for empty slots.
        instance_valid: ``[B, K]`` bool: the slot is an instance with positive locations.
        mask_crops: ``[B, K, M, M]`` uint8 box-cropped masks.
        panoptic: ``[B, hs, ws]`` int64 unified target (-1 ignored).
        static_valid: ``[B, C]`` bool (the same row for every image).
        num_instances: ``[B]`` int64 filled slots.
    """

    labels: Tensor
    gt_index: Tensor
    distances: Tensor
    centerness: Tensor
    boxes: Tensor
    classes: Tensor
    instance_valid: Tensor
    mask_crops: Tensor
    panoptic: Tensor
    static_valid: Tensor
    num_instances: Tensor


@dataclass
class DR1MaskTargets:
    """Targets of one image (see ``DR1MaskTargetBatch`` for the fields, without ``B``)."""

    labels: Tensor
    gt_index: Tensor
    distances: Tensor
    centerness: Tensor
    boxes: Tensor
    classes: Tensor
    instance_valid: Tensor
    mask_crops: Tensor
    panoptic: Tensor
    static_valid: Tensor
    num_instances: int

    batch_type: ClassVar[type] = DR1MaskTargetBatch  # how the loader stacks them


class DR1MaskTargetGenerator:
    """Builds ``DR1MaskTargets`` from an augmented ``PanopticSample``.

    Args:
        num_classes: C.
        category_to_class: dataset category id -> class index in ``[0, C)``.
        thing_category_ids: category ids that are things.
        strides: pyramid strides (P3..P7: 8..128).
        sizes_of_interest: FCOS level boundaries (one fewer than levels).
        center_radius: centre-sampling radius in strides (FCOS: 1.5; 0 = whole box).
        max_instances: instance slots K.
        mask_size: side of the box-cropped mask targets (BlendMask / DR1Mask: 56).
        target_stride: stride of the unified target (a divisor of the basis stride 4).

    Crowd segments are ignored by every DR1Mask loss: their pixels get -1 like void (the unified
    layer has no void channel) and, as in detectron2's FCOS, crowd boxes are not assigned.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        category_to_class: Mapping[int, int],
        thing_category_ids: Collection[int],
        strides: Sequence[int],
        sizes_of_interest: Sequence[float],
        center_radius: float,
        max_instances: int,
        mask_size: int,
        target_stride: int,
    ) -> None:
        bad = {k: v for k, v in category_to_class.items() if not 0 <= v < num_classes}
        if bad:
            raise ValueError(
                f"DR1MaskTargetGenerator: class indices outside [0, {num_classes}): {bad}"
            )
        if max_instances < 1 or mask_size < 1 or target_stride < 1:
            raise ValueError(
                "DR1MaskTargetGenerator: max_instances, mask_size and target_stride must be >= 1"
            )
        self.num_classes = num_classes
        self.category_to_class = dict(category_to_class)
        self.thing_category_ids = frozenset(thing_category_ids)
        self.strides = [int(s) for s in strides]
        self.ranges = interest_ranges(sizes_of_interest, len(self.strides))
        self.center_radius = center_radius
        self.max_instances = max_instances
        self.mask_size = mask_size
        self.target_stride = target_stride
        static = torch.zeros(num_classes, dtype=torch.bool)
        for category, index in self.category_to_class.items():
            static[index] = category not in self.thing_category_ids
        self.static_valid = static

    def locations(self, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, y)`` ``[L, 2]``, stride ``[L]`` and size-of-interest range ``[L, 2]``."""
        sizes = level_sizes(height, width, self.strides)
        points, strides = make_locations(sizes, self.strides)
        ranges = torch.cat(
            [torch.tensor([r]).expand(h * w, 2) for (h, w), r in zip(sizes, self.ranges)]
        )
        return points, strides, ranges

    def _class_of(self, category_id: int, segment_id: int, image_id: int | str) -> int:
        try:
            return self.category_to_class[category_id]
        except KeyError:
            raise KeyError(
                f"unknown category id {category_id} (segment {segment_id}) in image {image_id!r}"
            ) from None

    def __call__(self, sample: PanopticSample) -> DR1MaskTargets:
        """Targets of one augmented sample (see the module docstring)."""
        panoptic = np.asarray(sample.panoptic)
        height, width = panoptic.shape
        label = np.full((height, width), IGNORE, dtype=np.int64)
        masks: list[np.ndarray] = []
        classes: list[int] = []
        for seg in sample.segments:
            cls = self._class_of(seg.category_id, seg.id, sample.image_id)
            region = panoptic == seg.id
            if not region.any():
                continue
            if seg.category_id not in self.thing_category_ids:
                if not seg.iscrowd:
                    label[region] = cls
            elif not seg.iscrowd and len(masks) < self.max_instances:
                masks.append(region)
                classes.append(cls)
        k = self.max_instances
        count = len(masks)
        mask_tensor = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, height, width)
        boxes = mask_boxes(mask_tensor.bool())
        class_tensor = torch.tensor(classes, dtype=torch.int64)
        points, strides, ranges = self.locations(height, width)
        assignment = assign_locations(
            points, strides, ranges, boxes, class_tensor, radius=self.center_radius
        )
        has_positive = torch.zeros(k, dtype=torch.bool)
        positives = assignment.gt_index[assignment.gt_index >= 0]
        has_positive[positives] = True
        for slot, region in enumerate(masks):
            if has_positive[slot]:
                label[region] = self.num_classes + slot
        crops = torch.zeros(k, self.mask_size, self.mask_size, dtype=torch.uint8)
        if count:
            resized = roi_align(
                mask_tensor.float()[:, None],
                boxes,
                torch.arange(count),
                self.mask_size,
                spatial_scale=1.0,
                aligned=True,
            )[:, 0]
            crops[:count] = (resized >= MASK_THRESHOLD).to(torch.uint8)
        padded_boxes = torch.zeros(k, 4)
        padded_boxes[:count] = boxes
        padded_classes = torch.full((k,), -1, dtype=torch.int64)
        padded_classes[:count] = class_tensor
        s = self.target_stride
        return DR1MaskTargets(
            labels=assignment.labels,
            gt_index=assignment.gt_index,
            distances=assignment.distances,
            centerness=assignment.centerness,
            boxes=padded_boxes,
            classes=padded_classes,
            instance_valid=has_positive,
            mask_crops=crops,
            panoptic=torch.from_numpy(np.ascontiguousarray(label[::s, ::s])),
            static_valid=self.static_valid.clone(),
            num_instances=count,
        )
