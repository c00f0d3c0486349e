"""Penalty-reduced focal loss on Gaussian center heatmaps (CenterNet eq. 1; reference 3.1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: ``p = sigmoid(logit)`` is clipped to ``[PROB_CLIP, 1 - PROB_CLIP]`` as in the reference.
PROB_CLIP = 1e-4
_LOG_LOW = math.log(PROB_CLIP)
_LOG_HIGH = math.log1p(-PROB_CLIP)


def _check_levels(
    logits: list[Tensor], targets: list[Tensor], weights: list[Tensor], num_instances: Tensor
) -> None:
    if not (len(logits) == len(targets) == len(weights)) or not logits:
        raise ValueError(
            f"center_focal_loss: need the same non-zero number of levels, got {len(logits)} "
            f"logits, {len(targets)} targets, {len(weights)} weights"
        )
    batch = logits[0].shape[0]
    for level, (x, t, w) in enumerate(zip(logits, targets, weights)):
        if x.dim() != 4 or x.shape != t.shape:
            raise ValueError(
                f"center_focal_loss level {level}: logits {tuple(x.shape)} and targets "
                f"{tuple(t.shape)} must both be [B, C, h, w]"
            )
        if w.shape != (x.shape[0], x.shape[2], x.shape[3]) or x.shape[0] != batch:
            raise ValueError(
                f"center_focal_loss level {level}: weights {tuple(w.shape)} must be "
                f"[B, h, w] = {(batch, x.shape[2], x.shape[3])}"
            )
    if num_instances.shape != (batch,):
        raise ValueError(
            f"center_focal_loss: num_instances {tuple(num_instances.shape)} must be [B]={batch}"
        )


def center_focal_loss(
    logits: list[Tensor],
    targets: list[Tensor],
    weights: list[Tensor],
    num_instances: Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 4.0,
) -> Tensor:
    """Penalty-reduced focal loss, normalised per image by ``num_instances + 1``.

    With ``p = clip(sigmoid(x), 1e-4, 1 - 1e-4)`` and target ``t``:

    * positives (``t == 1.0`` exactly): ``-(1 - p)^alpha * log(p)``;
    * everything else: ``-(1 - t)^beta * p^alpha * log(1 - p)``.

    ``log p`` and ``log(1 - p)`` come from ``logsigmoid`` clamped to the logs of the clip bounds,
    which equals the log of the clipped probability (and, like the clip, has zero gradient
    beyond it). Per image: sum over levels, classes and pixels of ``loss * weight`` divided by
    ``num_instances_i + 1``; the result is the mean over images.

    Args:
        logits: per level ``[B, C, h_l, w_l]`` heatmap logits.
        targets: per level ``[B, C, h_l, w_l]`` Gaussian targets in ``[0, 1]``.
        weights: per level ``[B, h_l, w_l]`` pixel weights (broadcast over classes).
        num_instances: ``[B]`` valid slots per image.
        alpha: focusing exponent.
        beta: penalty-reduction exponent on ``1 - t``.

    Returns:
        Scalar loss.
    """
    _check_levels(logits, targets, weights, num_instances)
    per_image = logits[0].new_zeros(logits[0].shape[0], dtype=torch.float32)
    for x, t, w in zip(logits, targets, weights):
        x = x.float()
        t = t.float()
        log_p = F.logsigmoid(x).clamp(_LOG_LOW, _LOG_HIGH)
        log_not_p = F.logsigmoid(-x).clamp(_LOG_LOW, _LOG_HIGH)
        positive = t == 1.0
        pos_loss = -torch.exp(alpha * log_not_p) * log_p
        neg_loss = -torch.pow(1.0 - t, beta) * torch.exp(alpha * log_p) * log_not_p
        loss = torch.where(positive, pos_loss, neg_loss) * w.float().unsqueeze(1)
        per_image = per_image + loss.sum(dim=(1, 2, 3))
    return (per_image / (num_instances.float() + 1.0)).mean()
