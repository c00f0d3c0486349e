"""The terms of kMaX-DeepLab's loss (deeplab2 ``MaXDeepLabLoss``) and ReMaX's relaxations.

Every term works on ONE prediction (final or auxiliary) after its Hungarian matching, with the
targets in query order (``query_targets``): query ``q`` matched to ground-truth slot ``j`` has
target mask ``g_j`` and class ``c_j``; an unmatched query has an empty mask and the void class
``C``. ``labelled`` ``[B, H, W]`` marks the pixels of the ground-truth masks (void, padding,
crowd and capped segments excluded). Per-image values are averaged over the images of the batch.

* ``pq_class_loss``: the PQ-style class term. Softmax cross-entropy over ``C + 1`` columns,
  times ``alpha`` for matched queries and ``1 - alpha`` for unmatched ones (read from the void
  column of the target, so a ReClass soft target keeps the same split), times a stop-gradient
  per-query weight (``class_weights``: the matched Dice for matched queries, the share of the
  query's mask on ignored pixels for unmatched ones, both floored at 1e-5); summed over the N
  queries and divided by N.
* ``pq_dice_loss``: the PQ-style Dice term. ``1 - dice`` (smoothing 1) of each matched query's
  mask probabilities (zeroed on ignored pixels) with its ground-truth mask, times the
  stop-gradient probability of its ground-truth class (floored at 1e-5); summed over the queries
  and scaled by ``alpha / N`` (deeplab2's balance with the class term).
* ``sigmoid_mask_ce`` / ``sigmoid_mask_id_loss``: per-query sigmoid cross-entropy against the
  matched mask (0 for unmatched queries) on the labelled pixels covered by a matched mask,
  summed over the queries and divided by the number of those pixels (the per-pixel shape of the
  softmax mask-ID cross-entropy, so each logit's gradient has the same scale under either
  activation); split into its false-positive (target 0) and false-negative (target 1) parts
  (ReMaX Fig. 1 / App. A).
* ``instance_discrimination_loss``: CMT-DeepLab's pixel-contrastive loss on the pixel features.
* ``sample_pixels``: Gumbel-top-k sampling of labelled pixels, favouring small masks.
* ``remask_logits``: ReMaX Eq. 1-2 (both factors detached).
* ``reclass_targets``: ReMaX Eq. 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.losses.remax import relax_mask_logits, relaxation_factor
from maskconver.meta.kmax.matching import MaskActivation, dice_score

WEIGHT_FLOOR = 1e-5  # deeplab2's lower bound of the class- and Dice-term weights
VOID_RATIO_EPS = 1e-5  # denominator epsilon of the unmatched queries' void ratio
DICE_SMOOTH = 1.0  # deeplab2's compute_mask_dice_loss smoothing
MASKED_LOGIT = -1e4  # logit that removes an entry from a softmax or a top-k
GUMBEL_EPS = 1e-10  # keeps the uniform draw of the Gumbel noise inside (0, 1)


def query_targets(
    gt_masks: Tensor, gt_classes: Tensor, assigned: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Ground truth in query order.

    Args:
        gt_masks: ``[B, M, H, W]`` binary masks.
        gt_classes: ``[B, M]`` int64 classes.
        assigned: ``[B, N]`` matched ground-truth slot of each query, -1 unmatched.
        num_classes: C (the void class index).

    Returns:
        ``masks`` ``[B, N, H, W]`` float (all 0 for unmatched queries) and ``classes`` ``[B, N]``
        int64 (``C`` for unmatched queries).
    """
    matched = assigned >= 0
    index = assigned.clamp(min=0)
    batch = torch.arange(gt_masks.shape[0], device=gt_masks.device)[:, None]
    masks = gt_masks[batch, index].float() * matched[:, :, None, None].float()
    classes = torch.where(matched, gt_classes.gather(1, index), num_classes)
    return masks, classes


def void_ratio(mask_probs: Tensor, labelled: Tensor) -> Tensor:
    """Share of each query's mask on ignored pixels: ``[B, N]`` (deeplab2's ``mask_void_ratio``).

    ``sum_x p_q(x) [x ignored] / (sum_x p_q(x) + eps)``.
    """
    ignored = (~labelled)[:, None].to(mask_probs.dtype)
    return (mask_probs * ignored).sum(dim=(2, 3)) / (mask_probs.sum(dim=(2, 3)) + VOID_RATIO_EPS)


def class_weights(matched: Tensor, matched_dice: Tensor, void_share: Tensor) -> Tensor:
    """Stop-gradient per-query weights of the class term: ``[B, N]``."""
    weights = torch.where(
        matched, matched_dice.clamp(min=WEIGHT_FLOOR), void_share.clamp(min=WEIGHT_FLOOR)
    )
    return weights.detach()


def remask_logits(
    mask_logits: Tensor,
    class_logits: Tensor,
    semantic_logits: Tensor,
    *,
    activation: MaskActivation,
    identity: bool = True,
) -> Tensor:
    """ReMask: ``m * (1 + S)`` (or ``m * S``), ``S = act(m_sem) act(p)^T`` with both detached.

    ``act`` is the sigmoid of the semantic logits and of the class logits' C real columns
    (ReMaX Eq. 1) or, for ``"softmax"``, the softmax over the C semantic channels and the C
    real columns of the softmax over all ``C + 1`` class columns (ReMaX Table 2's arm).

    Args:
        mask_logits: ``[B, N, H, W]``.
        class_logits: ``[B, N, C + 1]`` (void last).
        semantic_logits: ``[B, C, H, W]``.
        activation: ``"sigmoid"`` or ``"softmax"``.
        identity: ``m * (1 + S)`` (the paper's) or ``m * S`` (Table 5's control).
    """
    num_classes = semantic_logits.shape[1]
    if activation == "sigmoid":
        semantic_probs = semantic_logits.sigmoid()
        class_probs = class_logits[:, :, :num_classes].sigmoid()
    else:
        semantic_probs = semantic_logits.softmax(dim=1)
        class_probs = class_logits.softmax(dim=-1)[:, :, :num_classes]
    factor = relaxation_factor(semantic_probs.detach(), class_probs.detach())
    return relax_mask_logits(mask_logits, factor, identity=identity)


def reclass_targets(one_hot: Tensor, overlap: Tensor, eta: float) -> Tensor:
    """ReMaX Eq. 4: ``y_hat = eta * y_m + (1 - eta * y_m) * y``.

    ``y_m`` has the ``C`` real classes only (Eq. 3's S has ``N_C`` columns, no void); its void
    column is 0, so the void column of ``y_hat`` equals ``y``'s. The labelled class keeps 1
    exactly; every other class ``c`` gets ``eta * y_m[c]``. Not renormalised (the paper's form).

    Args:
        one_hot: ``[B, N, C + 1]`` one-hot class targets (void last).
        overlap: ``[B, N, C]`` ReClass overlap ``y_m`` (``class_overlap``, detached).
        eta: smoothing factor.
    """
    y_m = F.pad(overlap, (0, 1))
    return eta * y_m + (1.0 - eta * y_m) * one_hot


def pq_class_loss(class_logits: Tensor, target: Tensor, weights: Tensor, *, alpha: float) -> Tensor:
    """The PQ-style class term (see the module docstring).

    Args:
        class_logits: ``[B, N, C + 1]``.
        target: ``[B, N, C + 1]`` one-hot or ReClass soft target (void last).
        weights: ``[B, N]`` stop-gradient per-query weights (``class_weights``).
        alpha: weight of matched queries (``1 - alpha`` for unmatched ones).
    """
    cross_entropy = -(target * F.log_softmax(class_logits, dim=-1)).sum(-1)  # [B, N]
    void = target[..., -1]
    alpha_weights = alpha * (1.0 - void) + (1.0 - alpha) * void
    per_image = (alpha_weights * weights * cross_entropy).sum(1) / class_logits.shape[1]
    return per_image.mean()


def pq_dice_loss(
    mask_probs: Tensor,
    target_masks: Tensor,
    labelled: Tensor,
    class_prob: Tensor,
    matched: Tensor,
    *,
    alpha: float,
) -> Tensor:
    """The PQ-style Dice term (see the module docstring).

    Args:
        mask_probs: ``[B, N, H, W]`` mask probabilities (relaxed in a ReMask stage).
        target_masks: ``[B, N, H, W]`` matched ground-truth masks in query order.
        labelled: ``[B, H, W]`` bool.
        class_prob: ``[B, N]`` predicted probability of each query's target class.
        matched: ``[B, N]`` bool.
        alpha: deeplab2's ``alpha / N`` balance with the class term.
    """
    pred = mask_probs * labelled[:, None].to(mask_probs.dtype)
    intersection = (pred * target_masks).sum(dim=(2, 3))
    dice = dice_score(
        intersection, pred.sum(dim=(2, 3)), target_masks.sum(dim=(2, 3)), smooth=DICE_SMOOTH
    )
    weights = (class_prob.clamp(min=WEIGHT_FLOOR) * matched.to(class_prob.dtype)).detach()
    per_image = (weights * (1.0 - dice)).sum(1) * alpha / mask_probs.shape[1]
    return per_image.mean()


def covered_pixels(target_masks: Tensor, labelled: Tensor) -> Tensor:
    """``[B, H, W]`` bool: labelled pixels of a matched ground-truth mask."""
    return (target_masks.sum(1) > 0) & labelled


def sigmoid_mask_ce(
    mask_logits: Tensor, target_masks: Tensor, pixels: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """False-positive and false-negative parts of the per-query sigmoid cross-entropy.

    Args:
        mask_logits: ``[B, N, H, W]``.
        target_masks: ``[B, N, H, W]`` matched masks in query order (0 for unmatched queries).
        pixels: ``[B, H, W]`` bool pixels that count (``covered_pixels``).

    Returns:
        ``(fp, fn, has)``, each ``[B]``: per image the cross-entropy over the entries whose
        target is 0 (``fp``) or 1 (``fn``), divided by the number of (query, pixel) entries
        (the mean binary cross-entropy over every query at every counted pixel, split in its
        two parts); ``has`` marks the images with at least one pixel.
    """
    bce = F.binary_cross_entropy_with_logits(mask_logits, target_masks, reduction="none")
    weight = pixels[:, None].to(bce.dtype)
    count = pixels.sum(dim=(1, 2)).to(bce.dtype) * mask_logits.shape[1]
    fp = (bce * (1.0 - target_masks) * weight).sum(dim=(1, 2, 3)) / count.clamp(min=1.0)
    fn = (bce * target_masks * weight).sum(dim=(1, 2, 3)) / count.clamp(min=1.0)
    return fp, fn, count > 0


def mean_over(values: Tensor, has: Tensor) -> Tensor:
    """Mean of ``values`` ``[B]`` over the images where ``has``; 0 (with gradient) when none."""
    if not bool(has.any()):
        return values.sum() * 0.0
    return values[has].mean()


def sigmoid_mask_id_loss(mask_logits: Tensor, target_masks: Tensor, pixels: Tensor) -> Tensor:
    """ReMaX's sigmoid mask-ID cross-entropy: ``fp + fn`` of ``sigmoid_mask_ce`` per image."""
    fp, fn, has = sigmoid_mask_ce(mask_logits, target_masks, pixels)
    return mean_over(fp + fn, has)


def sample_pixels(
    mask_ids: Tensor, num_slots: int, points: int, temperature: float
) -> tuple[Tensor, Tensor]:
    """Gumbel-top-k sample of ``points`` pixels per image, favouring pixels of small masks.

    The sampling logit of a labelled pixel is ``temperature * log(1 / area)`` with ``area`` the
    pixel count of its ground-truth mask (deeplab2: the temperature multiplies the log inverse
    area; a larger temperature draws more pixels from small masks); ignored pixels are drawn
    only once every labelled pixel is taken.

    Args:
        mask_ids: ``[B, H, W]`` slot per pixel, -1 ignored.
        num_slots: M (slot ids are below it).
        points: pixels to draw per image (at most ``H * W``).
        temperature: sampling temperature.

    Returns:
        ``index`` ``[B, k]`` flat pixel indices and ``valid`` ``[B, k]`` (the pixel is labelled).
    """
    flat = mask_ids.flatten(1)  # [B, P]
    labelled = flat >= 0
    shifted = flat + 1  # -1 -> 0
    areas = torch.zeros(flat.shape[0], num_slots + 1, device=flat.device)
    areas.scatter_add_(1, shifted, torch.ones_like(flat, dtype=areas.dtype))
    pixel_area = areas.gather(1, shifted).clamp(min=1.0)
    logits = torch.where(labelled, -temperature * pixel_area.log(), MASKED_LOGIT)
    uniform = torch.rand_like(logits).clamp(GUMBEL_EPS, 1.0 - GUMBEL_EPS)
    gumbel = -torch.log(-torch.log(uniform))
    k = min(points, flat.shape[1])
    index = torch.topk(logits + gumbel, k, dim=1).indices
    return index, labelled.gather(1, index)


def instance_discrimination_loss(
    pixel_features: Tensor,
    mask_ids: Tensor,
    num_slots: int,
    *,
    points: int,
    sample_temperature: float,
    similarity_temperature: float,
) -> Tensor:
    """CMT-DeepLab's pixel-contrastive instance discrimination on sampled pixels.

    For the sampled labelled pixels ``i, j`` of one image: logits ``f_i . f_j / tau``, soft
    target uniform over the sampled pixels of ``i``'s mask (``i`` itself included); softmax
    cross-entropy per sampled pixel, averaged over them, then over the images with one.

    Args:
        pixel_features: ``[B, D, H, W]`` L2-normalised pixel features.
        mask_ids: ``[B, H, W]`` slot per pixel, -1 ignored.
        num_slots: M.
        points: sampled pixels per image.
        sample_temperature: ``sample_pixels``' temperature.
        similarity_temperature: ``tau``.
    """
    index, valid = sample_pixels(mask_ids, num_slots, points, sample_temperature)
    flat = pixel_features.flatten(2).transpose(1, 2)  # [B, P, D]
    features = flat.gather(1, index[:, :, None].expand(-1, -1, flat.shape[-1]))  # [B, k, D]
    ids = mask_ids.flatten(1).gather(1, index)  # [B, k]
    logits = torch.bmm(features, features.transpose(1, 2)) / similarity_temperature
    logits = logits.masked_fill(~valid[:, None, :], MASKED_LOGIT)
    same = (ids[:, :, None] == ids[:, None, :]) & valid[:, None, :] & valid[:, :, None]
    target = same.float() / same.sum(-1, keepdim=True).clamp(min=1).float()
    per_pixel = -(target * F.log_softmax(logits, dim=-1)).sum(-1)  # [B, k]
    count = valid.sum(1).float()
    per_image = (per_pixel * valid.float()).sum(1) / count.clamp(min=1.0)
    return mean_over(per_image, count > 0)


def sampled_semantic(
    semantic: Tensor, mask_ids: Tensor, num_slots: int, points: int, temperature: float
) -> Tensor:
    """``semantic`` ``[B, H, W]`` with every pixel but ``points`` sampled ones set to -1.

    ``points == 0`` keeps every labelled pixel. Feed the result to ``semantic_loss``.
    """
    if points == 0:
        return semantic
    index, valid = sample_pixels(mask_ids, num_slots, points, temperature)
    flat = torch.full_like(semantic.flatten(1), -1)
    values = semantic.flatten(1).gather(1, index)
    flat.scatter_(1, index, torch.where(valid, values, -1))
    return flat.view_as(semantic)
