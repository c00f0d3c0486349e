"""Training targets for one image and for a batch.

Slots: ``K = num_proposals``; things first, then stuff, padded with class ``-1``.
Levels: one entry per center level (one for single-scale, L_min..L_max for multi-scale).
Flat center index: ``offset[level] + y * w_level + x`` into the level-major concatenation of the
row-major flattened heatmaps (the same order ``find_peaks`` uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
    """

    heatmaps: list[Tensor]
    heatmap_weights: list[Tensor]
    center_indices: Tensor
    classes: Tensor
    masks: Tensor
    mask_valid: Tensor
    pixel_weights: Tensor
    num_instances: int


@dataclass
class TargetBatch:
    """``Targets`` stacked over a batch (every field gains a leading ``B`` dimension)."""

    heatmaps: list[Tensor]  # per level [B, C, h_l, w_l]
    heatmap_weights: list[Tensor]  # per level [B, h_l, w_l]
    center_indices: Tensor  # [B, K]
    classes: Tensor  # [B, K]
    masks: Tensor  # [B, K, Hm, Wm] uint8
    mask_valid: Tensor  # [B, K]
    pixel_weights: Tensor  # [B, Hm, Wm]
    num_instances: Tensor  # [B] int64

    @classmethod
    def stack(cls, items: list[Targets]) -> TargetBatch:
        """Stack per-image targets (all must share shapes)."""
        n_levels = len(items[0].heatmaps)
        return cls(
            heatmaps=[torch.stack([t.heatmaps[i] for t in items]) for i in range(n_levels)],
            heatmap_weights=[
                torch.stack([t.heatmap_weights[i] for t in items]) for i in range(n_levels)
            ],
            center_indices=torch.stack([t.center_indices for t in items]),
            classes=torch.stack([t.classes for t in items]),
            masks=torch.stack([t.masks for t in items]),
            mask_valid=torch.stack([t.mask_valid for t in items]),
            pixel_weights=torch.stack([t.pixel_weights for t in items]),
            num_instances=torch.tensor([t.num_instances for t in items], dtype=torch.int64),
        )

    def to(self, device: torch.device | str) -> TargetBatch:
        """Move every tensor to ``device``."""
        return TargetBatch(
            heatmaps=[h.to(device) for h in self.heatmaps],
            heatmap_weights=[w.to(device) for w in self.heatmap_weights],
            center_indices=self.center_indices.to(device),
            classes=self.classes.to(device),
            masks=self.masks.to(device),
            mask_valid=self.mask_valid.to(device),
            pixel_weights=self.pixel_weights.to(device),
            num_instances=self.num_instances.to(device),
        )
