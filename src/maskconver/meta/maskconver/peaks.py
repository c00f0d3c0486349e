"""Center peaks: max-pool NMS + joint top-K over (positions x classes), static shapes.

Follows the reference proposal generator (reference section 4.1): sigmoid, 3x3 max-pool with
stride 1 and SAME padding, keep a probability only where it equals the pooled value (plateaus keep
every tied pixel), then top-K over the flattened ``positions x classes`` of all levels jointly.
No ``nonzero`` or boolean indexing, so the function traces and exports with a fixed K.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

PEAK_TOLERANCE = 1e-6  # |p - maxpool(p)| below this counts as a local maximum
NMS_KERNEL = 3  # max-pool window of the peak NMS
HARD_SIGMOID_OFFSET = 3.0  # hard sigmoid = relu6(x + 3) / 6
HARD_SIGMOID_SCALE = 6.0


def hard_sigmoid(x: Tensor) -> Tensor:
    """Piecewise-linear sigmoid ``relu6(x + 3) / 6`` (the reference's hardware path)."""
    return F.relu6(x + HARD_SIGMOID_OFFSET) / HARD_SIGMOID_SCALE


def peak_probabilities(logits: Tensor, *, hard: bool = False) -> Tensor:
    """Heatmap probabilities with everything but local maxima zeroed.

    Args:
        logits: ``[B, C, h, w]`` center heatmap logits.
        hard: use the hard sigmoid instead of the sigmoid.

    Returns:
        ``[B, C, h, w]`` probabilities; a pixel keeps its value iff it is within
        ``PEAK_TOLERANCE`` of the 3x3 maximum around it (borders padded with -inf).
    """
    probs = hard_sigmoid(logits) if hard else logits.sigmoid()
    pooled = F.max_pool2d(probs, NMS_KERNEL, stride=1, padding=NMS_KERNEL // 2)
    keep = ((probs - pooled).abs() < PEAK_TOLERANCE).to(probs.dtype)
    return probs * keep


def flatten_levels(levels: Sequence[Tensor]) -> Tensor:
    """Concatenate per-level maps position-major.

    Args:
        levels: per level ``[B, C, h_l, w_l]``.

    Returns:
        ``[B, N, C]`` with ``N = sum_l h_l * w_l``, levels in order, row-major inside a level.
    """
    return torch.cat([x.flatten(2) for x in levels], dim=2).transpose(1, 2)


def find_peaks(
    center_logits: Sequence[Tensor], k: int, *, hard_sigmoid: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-K center peaks over every level, position and class jointly.

    The flat order is position-major with classes minor: element ``n * C + c`` is class ``c`` at
    flat position ``n`` (level-major, then row-major). There is no per-class or per-position
    limit, so one pixel can yield proposals of several classes.

    Args:
        center_logits: per level ``[B, C, h_l, w_l]`` heatmap logits (same B and C).
        k: number of proposals K; at most ``N * C``.
        hard_sigmoid: score with ``relu6(x + 3) / 6`` instead of the sigmoid.

    Returns:
        ``scores [B, K]`` peak probabilities (0 where fewer than K peaks exist), ``classes
        [B, K]`` int64 class indices and ``indices [B, K]`` int64 flat position indices into the
        level-major concatenation, sorted by descending score.
    """
    if len(center_logits) == 0:
        raise ValueError("find_peaks: center_logits is empty (need at least one level)")
    num_classes = center_logits[0].shape[1]
    peaks = [peak_probabilities(x, hard=hard_sigmoid) for x in center_logits]
    flat = flatten_levels(peaks).flatten(1)  # [B, N * C]
    if k < 1 or k > flat.shape[1]:
        raise ValueError(f"find_peaks: k={k} must be in [1, positions x classes = {flat.shape[1]}]")
    scores, idx = flat.topk(k, dim=1)
    positions = torch.div(idx, num_classes, rounding_mode="floor")
    classes = idx - positions * num_classes  # ONNX-friendly modulo
    return scores, classes, positions


def gather_at_centers(levels: Sequence[Tensor], indices: Tensor) -> Tensor:
    """Gather per-position values (embeddings, heatmap logits, ...) at flat center indices.

    The one helper every per-slot lookup uses: center embeddings for the mask embeddings,
    heatmap logits for teacher-forced scores and ReMask's class factor.

    Args:
        levels: per level ``[B, C, h_l, w_l]`` maps (same B and C).
        indices: ``[B, K]`` int64 flat indices into the level-major, row-major concatenation.

    Returns:
        ``[B, K, C]`` values.
    """
    flat = torch.cat([x.flatten(2) for x in levels], dim=2)  # [B, C, N]
    batch, dim, _ = flat.shape
    index = indices.long()[:, None, :].expand(batch, dim, indices.shape[1])
    return flat.gather(2, index).transpose(1, 2)
