"""ReMaX training relaxations for MaskConver (ReMaX paper section 3; design note section 3).

Both exist only in the loss: the model and its inference are unchanged.

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
import torch.nn.functional as F
from torch import Tensor

from maskconver.meta.maskconver.peaks import gather_at_centers, hard_sigmoid

IGNORE_CLASS = -1
AREA_EPS = 1e-5  # ReClass per-class area normaliser (the ReMaX re-implementation's epsilon)


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


def semantic_one_hot(semantic: Tensor, num_classes: int) -> Tensor:
    """``[B, H, W]`` labels (-1 ignored) -> ``[B, C, H, W]`` float one-hot (ignored: all 0)."""
    labelled = semantic >= 0
    one_hot = F.one_hot(semantic.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()
    return one_hot * labelled[:, None].float()


def relaxation_factor(semantic_probs: Tensor, class_probs: Tensor) -> Tensor:
    """``S[b, k, y, x] = sum_c semantic_probs[b, c, y, x] * class_probs[b, k, c]``.

    Args:
        semantic_probs: ``[B, C, H, W]`` per-pixel class probabilities (or a one-hot map).
        class_probs: ``[B, K, C]`` per-slot class probabilities.

    Returns:
        ``[B, K, H, W]``, each value in ``[0, C]``.
    """
    return torch.einsum("bchw,bkc->bkhw", semantic_probs, class_probs)


def relax_mask_logits(mask_logits: Tensor, factor: Tensor, *, identity: bool = True) -> Tensor:
    """ReMask: ``m * (1 + S)`` (identity mapping, the paper's default) or ``m * S``."""
    return mask_logits * (1.0 + factor) if identity else mask_logits * factor


def semantic_loss(logits: Tensor, semantic: Tensor) -> Tensor:
    """Softmax cross-entropy of ``[B, C, H, W]`` logits against ``[B, H, W]`` labels.

    Pixels labelled -1 (void, crowd, padding, slot-capped segments) are ignored; a batch with no
    labelled pixel gives 0 (and no gradient), not NaN.
    """
    if not bool((semantic >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), semantic, ignore_index=IGNORE_CLASS)


def mask_id_loss(
    mask_logits: Tensor, masks: Tensor, slot_valid: Tensor, pixel_weights: Tensor
) -> Tensor:
    """Per-pixel softmax cross-entropy over the K slots (kMaX's mask-ID loss).

    At pixel x the target is uniform over the valid slots whose mask covers x (one slot for a
    thing; the several island centers of one stuff class share its mask). Pixels covered by no
    valid slot, or with pixel weight 0, are ignored. Per image: mean over its labelled pixels;
    the result is the mean over images with at least one labelled pixel.

    Args:
        mask_logits: ``[B, K, H, W]`` (possibly relaxed) mask logits.
        masks: ``[B, K, H, W]`` binary mask targets.
        slot_valid: ``[B, K]``.
        pixel_weights: ``[B, H, W]``.
    """
    covered = masks.float() * slot_valid.float()[:, :, None, None]  # [B, K, H, W]
    count = covered.sum(1)  # [B, H, W]
    labelled = (count > 0) & (pixel_weights > 0)
    log_probs = F.log_softmax(
        mask_logits.float().masked_fill(~slot_valid[:, :, None, None].bool(), -1e4), dim=1
    )
    target = covered / count.clamp(min=1.0)[:, None]
    per_pixel = -(target * log_probs).sum(1)  # [B, H, W]
    weight = labelled.float()
    pixels = weight.sum(dim=(1, 2))
    has = pixels > 0
    if not bool(has.any()):
        return mask_logits.sum() * 0.0
    per_image = (per_pixel * weight).sum(dim=(1, 2)) / pixels.clamp(min=1.0)
    return per_image[has].mean()


def class_overlap(mask_probs: Tensor, semantic_one_hot_map: Tensor) -> Tensor:
    """ReClass ``y[b, k, c]``: the share of class c's ground-truth area that mask k covers.

    ``y_kc = sum_x mask_probs[k](x) * gt_c(x) / (sum_x gt_c(x) + eps)``; 0 for absent classes.

    Args:
        mask_probs: ``[B, K, H, W]`` detached mask probabilities.
        semantic_one_hot_map: ``[B, C, H, W]`` ground-truth one-hot (ignored pixels all 0).

    Returns:
        ``[B, K, C]`` in ``[0, 1]``.
    """
    overlap = torch.einsum("bkhw,bchw->bkc", mask_probs, semantic_one_hot_map)
    area = semantic_one_hot_map.sum(dim=(2, 3))  # [B, C]
    return overlap / (area[:, None, :] + AREA_EPS)


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
    "class_overlap",
    "class_probabilities",
    "mask_id_loss",
    "reclass_heatmaps",
    "relax_mask_logits",
    "relaxation_factor",
    "semantic_loss",
    "semantic_one_hot",
]
