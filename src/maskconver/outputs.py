"""What the model returns and what post-processing returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from torch import Tensor

from maskconver.data.types import SegmentInfo


class MaskConverOutput(NamedTuple):
    """The model's forward output, identical in train and eval mode.

    Attributes:
        center_logits: per center level ``[B, C, h_l, w_l]`` heatmap logits (pre-sigmoid).
        mask_logits: ``[B, K, hm, wm]`` mask logits at the mask-feature resolution.
        scores: ``[B, K]`` peak probabilities (teacher forcing: probability at the GT
            center and class).
        classes: ``[B, K]`` int64 class indices of the K proposals (GT classes, padding
            clamped to 0, under teacher forcing).
        center_indices: ``[B, K]`` int64 flat indices into the level-major concatenation of
            the flattened heatmaps.
        pixel_embeddings: ``[B, E, hm, wm]`` the mask-feature map the mask logits are computed
            from (training-only parts such as an auxiliary semantic head read it); None when a
            producer has no such map (e.g. an exported graph's outputs).
        semantic_logits: ``[B, C, hs, ws]`` per-pixel class logits of a model variant that
            predicts them (e.g. region-based stuff); None when absent.
    """

    center_logits: tuple[Tensor, ...]
    mask_logits: Tensor
    scores: Tensor
    classes: Tensor
    center_indices: Tensor
    pixel_embeddings: Tensor | None = None
    semantic_logits: Tensor | None = None


@dataclass
class PanopticPrediction:
    """A panoptic result for one image at its original resolution.

    Attributes:
        panoptic: ``[H, W]`` int32 segment ids, 0 = void.
        segments: one ``SegmentInfo`` per id in ``panoptic``: ``category_id`` is the
            dataset's category id, ``score`` the proposal score, ``isthing`` and ``area``
            filled in.
    """

    panoptic: np.ndarray
    segments: list[SegmentInfo]
