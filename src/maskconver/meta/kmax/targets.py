"""Panoptic sample -> kMaX-DeepLab training targets (one mask per segment, at stride 4).

Per augmented sample (training inputs are padded to one fixed size ``H x W``, so every image of
a batch has the same ``h4 x w4``):

* the panoptic map is brought to the mask resolution by **strided slicing**: target pixel
  ``(i, j)`` is input pixel ``(s i, s j)`` with ``s = mask_stride`` (the top-left pixel of every
  ``s x s`` block, as deeplab2 does; design note pitfall 6.1.5), so ``h4 = ceil(H / s)``;
* **masks**: one per non-crowd thing instance and ONE per stuff class (all segments of a stuff
  class merged), in the order of their first segment in ``sample.segments``, in ``max_masks``
  slots; a segment with no pixel left after the slicing gets no slot (deeplab2 drops masks of
  zero area at the output resolution), and masks beyond the slots are dropped;
* **ignored pixels** (-1 in ``semantic`` and ``mask_ids``): void (0), padding (-1), crowd
  segments (``crowd_as_ignore``), dropped masks and ids that name no segment.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from maskconver.batching import StackedFields
from maskconver.data.types import PanopticSample, SegmentInfo

IGNORE = -1  # semantic class / mask id of an ignored pixel; class of an empty slot


@dataclass
class KMaXTargetBatch(StackedFields):
    """``KMaXTargets`` stacked over a batch (each field gains a leading ``B``).

    Attributes:
        masks: ``[B, M, h4, w4]`` bool ground-truth masks (empty slots all False).
        classes: ``[B, M]`` int64 class of each slot, -1 for empty slots.
        semantic: ``[B, h4, w4]`` int64 class per pixel, -1 ignored.
        mask_ids: ``[B, h4, w4]`` int64 slot per pixel, -1 ignored.
        num_masks: ``[B]`` int64 filled slots (the first ``num_masks`` of each image).
    """

    masks: Tensor
    classes: Tensor
    semantic: Tensor
    mask_ids: Tensor
    num_masks: Tensor


@dataclass
class KMaXTargets:
    """Targets of one image (see ``KMaXTargetBatch`` for the fields, without ``B``)."""

    masks: Tensor
    classes: Tensor
    semantic: Tensor
    mask_ids: Tensor
    num_masks: int

    batch_type: ClassVar[type] = KMaXTargetBatch  # how the loader stacks them


class KMaXTargetGenerator:
    """Builds ``KMaXTargets`` from an augmented ``PanopticSample``.

    Args:
        num_classes: C (class indices ``[0, C)``; the model's void class ``C`` is never a target).
        category_to_class: dataset category id -> class index in ``[0, C)``.
        thing_category_ids: category ids that are things (one mask per instance); every other
            category is stuff (one mask per class).
        max_masks: mask slots M (a cap; segments beyond it are dropped and ignored).
        mask_stride: stride of the targets (4: the mask logits' resolution).
        crowd_as_ignore: crowd segments are ignored (deeplab2). When False a crowd thing segment
            is an instance mask of its own and a crowd stuff segment joins its class's mask.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        category_to_class: Mapping[int, int],
        thing_category_ids: Collection[int],
        max_masks: int,
        mask_stride: int = 4,
        crowd_as_ignore: bool = True,
    ) -> None:
        bad = {k: v for k, v in category_to_class.items() if not 0 <= v < num_classes}
        if bad:
            raise ValueError(
                f"KMaXTargetGenerator: class indices outside [0, {num_classes}): {bad}"
            )
        if max_masks < 1 or mask_stride < 1:
            raise ValueError(
                f"KMaXTargetGenerator: max_masks ({max_masks}) and mask_stride ({mask_stride}) "
                "must be >= 1"
            )
        self.num_classes = num_classes
        self.category_to_class = dict(category_to_class)
        self.thing_category_ids = frozenset(thing_category_ids)
        self.max_masks = max_masks
        self.mask_stride = mask_stride
        self.crowd_as_ignore = crowd_as_ignore

    def _class_of(self, seg: SegmentInfo, image_id: int | str) -> int:
        try:
            return self.category_to_class[seg.category_id]
        except KeyError:
            raise KeyError(
                f"unknown category id {seg.category_id} (segment {seg.id}) in image {image_id!r}"
            ) from None

    def __call__(self, sample: PanopticSample) -> KMaXTargets:
        """Targets of one augmented sample (see the module docstring)."""
        s = self.mask_stride
        ids = np.ascontiguousarray(np.asarray(sample.panoptic)[::s, ::s])
        h4, w4 = ids.shape
        mask_ids = np.full((h4, w4), IGNORE, dtype=np.int64)
        classes: list[int] = []
        stuff_slot: dict[int, int] = {}  # stuff class -> its slot
        for seg in sample.segments:
            cls = self._class_of(seg, sample.image_id)
            if seg.iscrowd and self.crowd_as_ignore:
                continue
            region = ids == seg.id
            if not region.any():
                continue
            is_thing = seg.category_id in self.thing_category_ids
            slot = None if is_thing else stuff_slot.get(cls)
            if slot is None:
                if len(classes) == self.max_masks:
                    continue  # dropped: its pixels stay ignored
                slot = len(classes)
                classes.append(cls)
                if not is_thing:
                    stuff_slot[cls] = slot
            mask_ids[region] = slot
        count = len(classes)
        slot_ids = torch.from_numpy(mask_ids)
        padded_classes = torch.full((self.max_masks,), IGNORE, dtype=torch.int64)
        padded_classes[:count] = torch.tensor(classes, dtype=torch.int64)
        masks = slot_ids[None] == torch.arange(self.max_masks)[:, None, None]  # [M, h4, w4]
        labelled = slot_ids >= 0
        semantic = torch.where(labelled, padded_classes[slot_ids.clamp(min=0)], IGNORE)
        return KMaXTargets(
            masks=masks,
            classes=padded_classes,
            semantic=semantic,
            mask_ids=slot_ids,
            num_masks=count,
        )
