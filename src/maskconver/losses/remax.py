"""ReMaX's training relaxations and their losses, shared by every meta-architecture that uses them.

ReMaX (arXiv 2306.17319) section 3; design note ``remax-and-dr1mask.md`` sections 1.2, 2, 3.
Every function here is architecture-neutral: a "slot" is a MaskConver ground-truth center or a
kMaX query, and the callers decide which slots are valid and where the class probabilities of a
slot come from.

* **ReMask** (``relaxation_factor``, ``relax_mask_logits``): ``S[k, x] = sum_c s_c(x) q_kc`` with
  ``s`` the per-pixel semantic probabilities and ``q_k`` slot k's class probabilities; the mask
  logits in the loss become ``m * (1 + S)`` (ReMaX Eq. 1-2, identity mapping) or ``m * S``
  (Table 5's control). The callers detach both factors (Table 7; pitfall 6.1.8).
* **ReClass overlap** (``class_overlap``): ReMaX Eq. 3, ``y_kc = sum_x p_k(x) gt_c(x) /
  (sum_x gt_c(x) + eps)`` over the ``C`` real classes (no void column, as in the paper).
* **Semantic cross-entropy** (``semantic_loss``) and the **softmax mask-ID cross-entropy**
  (``mask_id_loss``, kMaX's loss and ReMaX Table 2's softmax arm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_CLASS = -1  # label of ignored pixels (void, crowd, padding, capped segments)
AREA_EPS = 1e-5  # ReClass per-class area normaliser (the ReMaX re-implementation's epsilon)
MASKED_LOGIT = -1e4  # logit of an invalid slot inside the mask-ID softmax


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

    The mean over every labelled pixel of the batch. Pixels labelled -1 (void, crowd, padding,
    slot-capped segments, or not sampled) are ignored; a batch with no labelled pixel gives 0
    (and no gradient), not NaN.
    """
    if not bool((semantic >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), semantic, ignore_index=IGNORE_CLASS)


def mask_id_loss(
    mask_logits: Tensor, masks: Tensor, slot_valid: Tensor, pixel_weights: Tensor
) -> Tensor:
    """Per-pixel softmax cross-entropy over the K slots (kMaX's mask-ID loss).

    At pixel x the target is uniform over the valid slots whose mask covers x (one slot for a
    thing; the several island centers of one MaskConver stuff class share its mask). Invalid
    slots take no part in the softmax. Pixels covered by no valid slot, or with pixel weight 0,
    are ignored. Per image: mean over its labelled pixels; the result is the mean over images
    with at least one labelled pixel.

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
        mask_logits.float().masked_fill(~slot_valid[:, :, None, None].bool(), MASKED_LOGIT),
        dim=1,
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


__all__ = [
    "AREA_EPS",
    "IGNORE_CLASS",
    "class_overlap",
    "mask_id_loss",
    "relax_mask_logits",
    "relaxation_factor",
    "semantic_loss",
    "semantic_one_hot",
]
