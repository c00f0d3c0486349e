"""Training targets for one image and for a batch.

Slots: ``K = num_proposals``; things first, then stuff, padded with class ``-1``.
Levels: one entry per center level (one for single-scale, L_min..L_max for multi-scale).
Flat center index: ``offset[level] + y * w_level + x`` into the level-major concatenation of the
row-major flattened heatmaps (the same order ``find_peaks`` uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from maskconver.batching import StackedFields


@dataclass
class TargetBatch(StackedFields):
    """``Targets`` stacked over a batch (every field gains a leading ``B`` dimension).

    Fields are stacked and moved generically (``batching.StackedFields``): a tensor field is
    stacked, a per-level list is stacked level by level, an int becomes an int64 ``[B]`` tensor.
    A new target is therefore one field here and one in ``Targets``.
    """

    heatmaps: list[Tensor]  # per level [B, C, h_l, w_l]
    heatmap_weights: list[Tensor]  # per level [B, h_l, w_l]
    center_indices: Tensor  # [B, K]
    classes: Tensor  # [B, K]
    masks: Tensor  # [B, K, Hm, Wm] uint8
    mask_valid: Tensor  # [B, K]
    pixel_weights: Tensor  # [B, Hm, Wm]
    num_instances: Tensor  # [B] int64
    semantic: Tensor | None = None  # [B, Hm, Wm] int64, -1 ignored
    center_sigma: Tensor | None = None  # [B, K] float32


@dataclass
class Targets:
    """Targets of one image.

    Attributes:
        heatmaps: per level ``[C, h_l, w_l]`` float32 Gaussian center heatmaps (peak 1.0).
        heatmap_weights: per level ``[h_l, w_l]`` float32, 0 on padding/ignored pixels.
        center_indices: ``[K]`` int64 flat center index (0 for empty slots).
        classes: ``[K]`` int64 model class index, -1 for empty slots.
        masks: ``[K, Hm, Wm]`` uint8 binary mask targets at ``input_size / mask_stride``.
        mask_valid: ``[K]`` bool, True for filled slots.
        pixel_weights: ``[Hm, Wm]`` float32, 0 on padding and ignored (crowd) pixels.
        num_instances: number of filled slots.
        semantic: ``[Hm, Wm]`` int64 class index per pixel of a slotted segment, -1 elsewhere
            (void, crowd, padding, segments dropped by the slot cap).
        center_sigma: ``[K]`` float32 Gaussian sigma (heatmap pixels) of each slot's center,
            0 for empty slots.
    """

    heatmaps: list[Tensor]
    heatmap_weights: list[Tensor]
    center_indices: Tensor
    classes: Tensor
    masks: Tensor
    mask_valid: Tensor
    pixel_weights: Tensor
    num_instances: int
    semantic: Tensor | None = None
    center_sigma: Tensor | None = None

    batch_type: ClassVar[type] = TargetBatch  # how the loader stacks them
