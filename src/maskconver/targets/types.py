"""Training targets for one image and for a batch.

Slots: ``K = num_proposals``; things first, then stuff, padded with class ``-1``.
Levels: one entry per center level (one for single-scale, L_min..L_max for multi-scale).
Flat center index: ``offset[level] + y * w_level + x`` into the level-major concatenation of the
row-major flattened heatmaps (the same order ``find_peaks`` uses).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

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


@dataclass
class TargetBatch:
    """``Targets`` stacked over a batch (every field gains a leading ``B`` dimension).

    Fields are stacked and moved generically (one loop over the dataclass fields): a tensor field
    is stacked, a per-level list is stacked level by level, an int becomes an int64 ``[B]``
    tensor. A new target is therefore one field here and one in ``Targets``.
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

    @classmethod
    def stack(cls, items: list[Targets]) -> TargetBatch:
        """Stack per-image targets (all must share shapes)."""
        if not items:
            raise ValueError("TargetBatch.stack: no targets to stack")
        return cls(**{f.name: _stack([getattr(t, f.name) for t in items]) for f in fields(cls)})

    def to(self, device: torch.device | str) -> TargetBatch:
        """Move every tensor to ``device``."""
        return type(self)(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})


def _stack(values: list[Any]) -> Any:
    """Stack one field over the batch: tensors, per-level tensor lists, ints, or all None."""
    first = values[0]
    missing = [v is None for v in values]
    if any(missing):
        if not all(missing):
            raise ValueError("TargetBatch.stack: a field is None for some images only")
        return None
    if isinstance(first, Tensor):
        return torch.stack(values)
    if isinstance(first, list):
        return [torch.stack([v[i] for v in values]) for i in range(len(first))]
    if isinstance(first, (int, bool)):
        return torch.tensor(values, dtype=torch.int64)
    raise TypeError(f"TargetBatch.stack: cannot stack a field of type {type(first).__name__}")


def _move(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [v.to(device) for v in value]
    return value
