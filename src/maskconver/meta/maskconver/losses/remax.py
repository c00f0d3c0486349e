"""ReMaX training relaxations for MaskConver (ReMaX paper section 3; design note section 3).

Both exist only in the loss: the model and its inference are unchanged. The formulas both
MaskConver and kMaX-DeepLab use (``relaxation_factor``, ``relax_mask_logits``,
``semantic_one_hot``, ``class_overlap``, ``mask_id_loss``, ``semantic_loss``) live in the shared
``maskconver.losses.remax`` and are re-exported here; this module adds MaskConver's own mapping
(the heatmap's class probabilities at the centers, ReClass on the heatmap targets).

* **ReMask** (``relaxation_factor``, ``relax_mask_logits``): with ``S_k(x) = sum_c s_c(x) q_kc``,
  where ``s = sigmoid(semantic logits)`` per pixel and ``q_k = sigmoid(p_k)`` of the heatmap logits
  at slot k's ground-truth center, the mask logits in the loss become ``m * (1 + S)`` (ReMaX
  Eq. 1-2, identity mapping) or ``m * S`` (Table 5's control). Both factors are detached by
  default (Table 7: without the stop-gradient training "does not well converge").
* **Mask-ID cross-entropy** (``mask_id_loss``): a softmax over the K slots at every labelled
  pixel (kMaX's loss, ReMaX Table 2's softmax arm).
* **ReClass** (``reclass_heatmaps``): at every ground-truth center the heatmap targets of the
  other classes become ``max(T, eta * y_kc)``, ``y_kc = sum_x sigmoid(m_k)(x) [gt(x) = c] /
  sum_x [gt(x) = c]`` (ReMaX Eq. 3-4 with the design note's C1 mapping onto a heatmap); the
  positive class keeps its peak of exactly 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maskconver.losses.remax import (
    AREA_EPS,
    IGNORE_CLASS,
    class_overlap,
    mask_id_loss,
    relax_mask_logits,
    relaxation_factor,
    semantic_loss,
    semantic_one_hot,
)
from maskconver.meta.maskconver.peaks import gather_at_centers, hard_sigmoid


def class_probabilities(
    center_logits: list[Tensor] | tuple[Tensor, ...],
    center_indices: Tensor,
    *,
    hard: bool = False,
) -> Tensor:
    """``q = sigmoid(p)`` of the heatmap logits at each slot's center: ``[B, K, C]``.

    Args:
        center_logits: per level ``[B, C, h_l, w_l]`` heatmap logits.
        center_indices: ``[B, K]`` flat center indices (level-major).
        hard: the hard sigmoid (when the model scores its peaks with it).
    """
    logits = gather_at_centers(list(center_logits), center_indices)
    return hard_sigmoid(logits) if hard else logits.sigmoid()


def _slot_positions(
    center_indices: Tensor, shapes: list[tuple[int, int]]
) -> tuple[Tensor, Tensor, Tensor]:
    """Flat level-major indices ``[B, K]`` -> ``(level, y, x)`` ``[B, K]`` each."""
    sizes = torch.tensor([h * w for h, w in shapes], device=center_indices.device)
    offsets = torch.cumsum(sizes, 0) - sizes
    level = torch.bucketize(center_indices, offsets[1:], right=True)
    local = center_indices - offsets[level]
    widths = torch.tensor([w for _, w in shapes], device=center_indices.device)[level]
    y = torch.div(local, widths, rounding_mode="floor")
    return level, y, local - y * widths


def reclass_heatmaps(
    heatmaps: list[Tensor],
    overlap: Tensor,
    classes: Tensor,
    center_indices: Tensor,
    slot_valid: Tensor,
    *,
    eta: float,
    center_sigma: Tensor | None = None,
) -> list[Tensor]:
    """Soften the heatmap targets of the classes a ground-truth mask overlaps (ReClass, C1).

    For every valid slot k (class ``c*``, center ``(y, x)`` on its level) and every class
    ``c != c*``: ``T_c(y, x) = max(T_c(y, x), eta * y_kc)``; with ``center_sigma`` the soft value
    is splatted with the slot's Gaussian, ``max(T_c, eta * y_kc * g_k)``. Values never reach 1
    (``eta < 1``), so no new positive appears; the positive class is untouched.

    Args:
        heatmaps: per level ``[B, C, h_l, w_l]`` Gaussian targets.
        overlap: ``[B, K, C]`` from ``class_overlap`` (detached).
        classes: ``[B, K]`` slot classes (-1 for empty slots).
        center_indices: ``[B, K]`` flat center indices.
        slot_valid: ``[B, K]``.
        eta: ReClass smoothing factor in ``[0, 1)``.
        center_sigma: ``[B, K]`` slot Gaussian sigmas, or None for the center pixel only.

    Returns:
        New per-level targets (the inputs are not modified).
    """
    batch, slots, num_classes = overlap.shape
    not_own = torch.ones_like(overlap)
    own = classes.clamp(min=0)
    not_own.scatter_(2, own[:, :, None], 0.0)
    soft = eta * overlap * not_own * slot_valid.float()[:, :, None]  # [B, K, C]
    shapes = [(h.shape[-2], h.shape[-1]) for h in heatmaps]
    level, ys, xs = _slot_positions(center_indices, shapes)
    out = []
    for lv, target in enumerate(heatmaps):
        on_level = (level == lv) & slot_valid.bool()
        values = soft * on_level.float()[:, :, None]  # [B, K, C]
        h, w = shapes[lv]
        if center_sigma is None:
            flat = target.flatten(2)  # [B, C, h*w]
            index = (ys * w + xs).clamp(0, h * w - 1)  # [B, K]
            scattered = flat.scatter_reduce(
                2,
                index[:, None, :].expand(batch, num_classes, slots),
                values.transpose(1, 2),
                reduce="amax",
                include_self=True,
            )
            out.append(scattered.view_as(target))
            continue
        grid_y = torch.arange(h, device=target.device, dtype=target.dtype)
        grid_x = torch.arange(w, device=target.device, dtype=target.dtype)
        result = target.clone()
        for k in range(slots):
            if not bool(on_level[:, k].any()):
                continue
            sigma = center_sigma[:, k].clamp(min=1e-3)[:, None, None]  # [B, 1, 1]
            dy = (grid_y[None, :, None] - ys[:, k, None, None].to(target.dtype)) ** 2
            dx = (grid_x[None, None, :] - xs[:, k, None, None].to(target.dtype)) ** 2
            gauss = torch.exp(-(dy + dx) / (2.0 * sigma * sigma))  # [B, h, w]
            splat = values[:, k, :, None, None] * gauss[:, None]  # [B, C, h, w]
            result = torch.maximum(result, splat)
        out.append(result)
    return out


__all__ = [
    "AREA_EPS",
    "IGNORE_CLASS",
    "class_overlap",
    "class_probabilities",
    "mask_id_loss",
    "reclass_heatmaps",
    "relax_mask_logits",
    "relaxation_factor",
    "semantic_loss",
    "semantic_one_hot",
]
