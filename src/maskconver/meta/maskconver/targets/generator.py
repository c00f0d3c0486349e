"""Panoptic sample -> training targets (reference sections 2.3-2.7).

One ``TargetGenerator`` call turns an augmented ``PanopticSample`` into ``Targets``:

* every non-crowd thing segment gives one center (box center or center of mass);
* every stuff category present gives one center per kept island (``"island"``: box center of
  the island, mask target = the WHOLE class mask) or one center of mass (``"mass"``);
* centers are drawn as untruncated CenterNet Gaussians into per-level ``[C, h_l, w_l]``
  heatmaps (all centers, even those whose slot is clipped by ``max_instances``);
* slots hold things first (in ``sample.segments`` order), then stuff (ascending class index,
  islands largest first), capped at ``max_instances`` (the tail, i.e. stuff, is
  dropped first) and padded with class -1, index 0, empty mask, ``mask_valid`` False.

Single-scale: one stride, no level ranges (every center on that level). Multi-scale: one
``(low, high)`` range per stride; a center goes to every level whose inclusive range contains
the half-diagonal ``sqrt(h^2 + w^2) / 2`` of its box in input pixels (overlapping ranges
duplicate it, each copy with the same mask); a center that fits no range is dropped.

Pixel weights: 0 on padding (-1) and, with ``crowd_as_ignore``, on crowd segments; void (0) is a
negative with weight 1.

Semantic map (auxiliary heads, ReMaX): at mask resolution, the class index of every pixel of a
segment that holds a slot; -1 (ignore) on void, crowd, padding and on segments whose every slot
was dropped by ``max_instances``. With ``stuff_centers=False`` (region-based stuff) stuff gets no
centers or slots and all its pixels are labelled.

Downsampling (heatmap weights, mask targets, pixel weights, semantic map) is TF half-pixel
nearest: output pixel ``i`` takes input pixel ``floor((i + 0.5) * s)``, weight 0 where that falls
outside the input. Centers, boxes and islands are computed at input resolution, so an
instance smaller than ``mask_stride`` keeps its slot even if its downsampled mask is empty.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from maskconver.data.types import PADDING, PanopticSample, SegmentInfo
from maskconver.meta.maskconver.targets.centers import Box, mask_box, mass_center, stuff_islands
from maskconver.meta.maskconver.targets.gaussian import (
    draw_gaussian,
    gaussian_radius,
    gaussian_sigma,
)
from maskconver.meta.maskconver.targets.types import Targets

ThingCenter = Literal["box", "mass"]
StuffCenter = Literal["island", "mass"]
THING_CENTERS = ("box", "mass")
IGNORE_CLASS = -1  # semantic-map label of ignored pixels
STUFF_CENTERS = ("island", "mass")


@dataclass(frozen=True)
class _Center:
    """One center in input pixels with the mask it supervises."""

    class_index: int
    cy: float
    cx: float
    box: Box
    mask_key: int  # index into the generator's per-call list of full-resolution masks


def nearest_indices(size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """TF half-pixel nearest sampling positions for a ``1/stride`` resize.

    Returns:
        ``(index, inside)``: ``[ceil(size / stride)]`` int64 source indices ``floor((i + 0.5) *
        stride)`` clipped into range, and bool ``inside`` (False where the index was clipped).
    """
    out_size = math.ceil(size / stride)
    index = np.floor((np.arange(out_size) + 0.5) * stride).astype(np.int64)
    inside = index < size
    return np.minimum(index, size - 1), inside


def downsample_nearest(array: np.ndarray, stride: int, fill: float = 0) -> np.ndarray:
    """Half-pixel nearest downsampling of ``[..., H, W]`` to ``[..., ceil(H/s), ceil(W/s)]``.

    Output pixels whose source falls outside the input get ``fill``. Always returns a new array.
    """
    if stride == 1:
        return array.copy()
    iy, in_y = nearest_indices(array.shape[-2], stride)
    ix, in_x = nearest_indices(array.shape[-1], stride)
    out = array[..., iy[:, None], ix[None, :]]
    if not (in_y.all() and in_x.all()):
        out = out.copy()
        out[..., ~(in_y[:, None] & in_x[None, :])] = fill
    return out


class TargetGenerator:
    """Builds ``Targets`` from an augmented ``PanopticSample``.

    Args:
        num_classes: heatmap channels ``C``.
        category_to_class: dataset category id -> model class index in ``[0, C)``.
        thing_category_ids: category ids that are things (all others are stuff).
        center_strides: stride of each center level (one for single-scale).
        max_instances: slots ``K``.
        mask_stride: mask targets and pixel weights at ``ceil(H / mask_stride)``.
        thing_center: ``"box"`` (reference single-scale) or ``"mass"`` (multi-scale/paper).
        stuff_center: ``"island"`` (reference single-scale) or ``"mass"`` (one center per
            class, no minimum area).
        max_stuff_centers: islands kept per stuff class.
        stuff_dilation: square dilation of the island procedure.
        min_stuff_area: minimum island pixels (input resolution).
        gaussian_iou: ``min_overlap`` of ``gaussian_radius``.
        level_ranges: multi-scale ``(low, high)`` half-diagonal range per stride (input
            pixels, inclusive); None for single-scale.
        crowd_as_ignore: crowd pixels get weight 0 (else they are void negatives).
        stuff_centers: stuff classes get centers and slots (False: region-based stuff, the
            stuff is supervised only through the semantic map).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        category_to_class: Mapping[int, int],
        thing_category_ids: Collection[int],
        center_strides: Sequence[int],
        max_instances: int,
        mask_stride: int = 1,
        thing_center: ThingCenter = "box",
        stuff_center: StuffCenter = "island",
        max_stuff_centers: int = 1,
        stuff_dilation: int = 61,
        min_stuff_area: int = 1024,
        gaussian_iou: float = 0.7,
        level_ranges: Sequence[tuple[float, float]] | None = None,
        crowd_as_ignore: bool = True,
        stuff_centers: bool = True,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"TargetGenerator: num_classes must be >= 1, got {num_classes}")
        bad = {k: v for k, v in category_to_class.items() if not 0 <= v < num_classes}
        if bad:
            raise ValueError(f"TargetGenerator: class indices outside [0, {num_classes}): {bad}")
        if not center_strides or any(int(s) < 1 for s in center_strides):
            raise ValueError(f"TargetGenerator: bad center_strides {list(center_strides)}")
        if level_ranges is None and len(center_strides) != 1:
            raise ValueError("TargetGenerator: several center_strides need level_ranges")
        if level_ranges is not None and len(level_ranges) != len(center_strides):
            raise ValueError(
                f"TargetGenerator: {len(level_ranges)} level_ranges for "
                f"{len(center_strides)} center_strides"
            )
        if max_instances < 1 or mask_stride < 1:
            raise ValueError("TargetGenerator: max_instances and mask_stride must be >= 1")
        if thing_center not in THING_CENTERS:
            raise ValueError(f"TargetGenerator: thing_center must be one of {THING_CENTERS}")
        if stuff_center not in STUFF_CENTERS:
            raise ValueError(f"TargetGenerator: stuff_center must be one of {STUFF_CENTERS}")
        self.num_classes = num_classes
        self.category_to_class = dict(category_to_class)
        self.thing_category_ids = frozenset(thing_category_ids)
        self.center_strides = [int(s) for s in center_strides]
        self.max_instances = max_instances
        self.mask_stride = mask_stride
        self.thing_center = thing_center
        self.stuff_center = stuff_center
        self.max_stuff_centers = max_stuff_centers
        self.stuff_dilation = stuff_dilation
        self.min_stuff_area = min_stuff_area
        self.gaussian_iou = gaussian_iou
        self.level_ranges = (
            [(-math.inf, math.inf)]
            if level_ranges is None
            else [(float(lo), float(hi)) for lo, hi in level_ranges]
        )
        self.crowd_as_ignore = crowd_as_ignore
        self.stuff_centers = stuff_centers
        self._thing_classes = {
            v for k, v in self.category_to_class.items() if k in self.thing_category_ids
        }

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Heatmap ``(h_l, w_l) = (ceil(H / s_l), ceil(W / s_l))`` per level."""
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.center_strides]

    def _class_of(self, segment: SegmentInfo, image_id: int | str) -> int:
        try:
            return self.category_to_class[segment.category_id]
        except KeyError:
            raise KeyError(
                f"unknown category id {segment.category_id} (segment {segment.id}) "
                f"in image {image_id!r}"
            ) from None

    def _collect(
        self, sample: PanopticSample
    ) -> tuple[list[_Center], list[_Center], list[tuple[np.ndarray, int]], np.ndarray]:
        """Thing centers, stuff centers, full-resolution masks with their class, ignore mask.

        Without ``stuff_centers`` the stuff masks are returned but get no centers.
        """
        panoptic = sample.panoptic
        ignore = panoptic == PADDING
        masks: list[tuple[np.ndarray, int]] = []
        things: list[_Center] = []
        stuff_masks: dict[int, np.ndarray] = {}  # class index -> union of its segments
        for seg in sample.segments:
            class_index = self._class_of(seg, sample.image_id)
            mask = panoptic == seg.id
            if seg.iscrowd:
                if self.crowd_as_ignore:
                    ignore |= mask
                continue
            if not mask.any():
                continue
            if seg.category_id in self.thing_category_ids:
                box = mask_box(mask)
                cy, cx = box.center if self.thing_center == "box" else mass_center(mask)
                things.append(_Center(class_index, cy, cx, box, len(masks)))
                masks.append((mask, class_index))
            elif class_index in stuff_masks:
                stuff_masks[class_index] |= mask
            else:
                stuff_masks[class_index] = mask
        stuff: list[_Center] = []
        for class_index in sorted(stuff_masks):
            class_mask = stuff_masks[class_index]
            key = len(masks)
            masks.append((class_mask, class_index))  # its centers all supervise the WHOLE mask
            if not self.stuff_centers:
                continue
            if self.stuff_center == "mass":
                cy, cx = mass_center(class_mask)
                stuff.append(_Center(class_index, cy, cx, mask_box(class_mask), key))
                continue
            for island in stuff_islands(
                class_mask,
                dilation=self.stuff_dilation,
                max_centers=self.max_stuff_centers,
                min_area=self.min_stuff_area,
            ):
                box = mask_box(island)
                stuff.append(_Center(class_index, *box.center, box, key))
        return things, stuff, masks, ignore

    def _levels_of(self, center: _Center) -> list[int]:
        half_diagonal = math.hypot(center.box.height, center.box.width) / 2.0
        return [i for i, (lo, hi) in enumerate(self.level_ranges) if lo <= half_diagonal <= hi]

    def __call__(self, sample: PanopticSample) -> Targets:
        """Targets of one augmented sample (see the module docstring for the rules)."""
        panoptic = sample.panoptic
        if panoptic.ndim != 2:
            raise ValueError(
                f"image {sample.image_id!r}: panoptic must be [H, W], got {panoptic.shape}"
            )
        height, width = panoptic.shape
        things, stuff, full_masks, ignore = self._collect(sample)

        shapes = self.level_shapes(height, width)
        offsets = np.cumsum([0] + [h * w for h, w in shapes]).tolist()
        heatmaps = [np.zeros((self.num_classes, h, w), np.float32) for h, w in shapes]
        slot_class: list[int] = []
        slot_index: list[int] = []
        slot_mask: list[int] = []
        slot_sigma: list[float] = []
        for center in things + stuff:
            for level in self._levels_of(center):
                stride = self.center_strides[level]
                h_l, w_l = shapes[level]
                py, px = math.floor(center.cy / stride), math.floor(center.cx / stride)
                radius = gaussian_radius(
                    center.box.height / stride, center.box.width / stride, self.gaussian_iou
                )
                sigma = gaussian_sigma(radius)
                draw_gaussian(heatmaps[level][center.class_index], (py, px), sigma)
                slot_class.append(center.class_index)
                slot_index.append(offsets[level] + py * w_l + px)
                slot_mask.append(center.mask_key)
                slot_sigma.append(sigma)

        num = min(len(slot_class), self.max_instances)
        weight = (~ignore).astype(np.float32)
        mask_h, mask_w = math.ceil(height / self.mask_stride), math.ceil(width / self.mask_stride)
        masks = np.zeros((self.max_instances, mask_h, mask_w), np.uint8)
        for k in range(num):
            full = full_masks[slot_mask[k]][0]
            masks[k] = full if self.mask_stride == 1 else downsample_nearest(full, self.mask_stride)
        labelled = set(slot_mask[:num])
        if not self.stuff_centers:  # region-based stuff: every stuff mask is labelled
            labelled |= {i for i, (_, c) in enumerate(full_masks) if c not in self._thing_classes}
        semantic = np.full((height, width), IGNORE_CLASS, np.int64)
        for key in sorted(labelled):
            mask, class_index = full_masks[key]
            semantic[mask] = class_index
        sigmas = np.zeros(self.max_instances, np.float32)
        sigmas[:num] = slot_sigma[:num]
        classes = np.full(self.max_instances, -1, np.int64)
        classes[:num] = slot_class[:num]
        indices = np.zeros(self.max_instances, np.int64)
        indices[:num] = slot_index[:num]
        mask_valid = np.zeros(self.max_instances, bool)
        mask_valid[:num] = True
        return Targets(
            heatmaps=[torch.from_numpy(h) for h in heatmaps],
            heatmap_weights=[
                torch.from_numpy(downsample_nearest(weight, s)) for s in self.center_strides
            ],
            center_indices=torch.from_numpy(indices),
            classes=torch.from_numpy(classes),
            masks=torch.from_numpy(masks),
            mask_valid=torch.from_numpy(mask_valid),
            pixel_weights=torch.from_numpy(downsample_nearest(weight, self.mask_stride)),
            num_instances=num,
            semantic=torch.from_numpy(
                downsample_nearest(semantic, self.mask_stride, fill=IGNORE_CLASS)
            ),
            center_sigma=torch.from_numpy(sigmas),
        )
