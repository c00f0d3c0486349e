"""What the MaskConver network returns (``MaskConverOutput``), in train and eval mode."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


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
