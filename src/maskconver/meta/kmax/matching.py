"""Hungarian matching of kMaX queries to ground-truth masks (deeplab2 ``MaXDeepLabLoss``).

The cost of assigning query ``q`` to ground-truth mask ``j`` is
``-(dice(g_j, p_q) * P_q(c_j))``: the Dice similarity of the mask probabilities ``p_q`` with the
ground-truth mask ``g_j`` (``p_q`` zeroed on ignored pixels; every ``(q, j)`` pair from one
batched matmul) times the predicted probability of ``g_j``'s class (softmax over the ``C + 1``
columns, void included, then read at ``c_j``). The mask probabilities are a per-query sigmoid
or a softmax over the queries at every pixel (``mask_probabilities``; ReMaX Table 2).
``hungarian_match`` solves each image's assignment on the CPU with
``scipy.optimize.linear_sum_assignment``, without gradient.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

MaskActivation = Literal["sigmoid", "softmax"]
MASK_ACTIVATIONS = ("sigmoid", "softmax")
SIMILARITY_EPS = 1e-5  # deeplab2's Dice-similarity denominator epsilon


def mask_probabilities(mask_logits: Tensor, activation: MaskActivation) -> Tensor:
    """``[B, N, H, W]`` logits -> per-query sigmoid, or softmax over the N queries per pixel."""
    if activation == "sigmoid":
        return mask_logits.sigmoid()
    if activation == "softmax":
        return mask_logits.softmax(dim=1)
    raise ValueError(f"mask_probabilities: activation must be one of {MASK_ACTIVATIONS}")


def dice_score(
    intersection: Tensor, pred_sum: Tensor, gt_sum: Tensor, *, smooth: float, eps: float = 0.0
) -> Tensor:
    """``(2 I + smooth) / (P + G + smooth + eps)`` elementwise (the one Dice formula of kMaX).

    The matching similarity uses ``smooth = 0, eps = 1e-5``; the PQ-style Dice term
    ``smooth = 1`` (deeplab2's ``compute_mask_dice_loss``).
    """
    return (2.0 * intersection + smooth) / (pred_sum + gt_sum + smooth + eps)


def pairwise_dice(mask_probs: Tensor, gt_masks: Tensor, labelled: Tensor) -> Tensor:
    """Dice similarity of every (query, ground-truth mask) pair: ``[B, N, M]``.

    Args:
        mask_probs: ``[B, N, H, W]`` mask probabilities.
        gt_masks: ``[B, M, H, W]`` binary ground-truth masks.
        labelled: ``[B, H, W]`` bool; the probabilities of other pixels are zeroed.
    """
    pred = (mask_probs * labelled[:, None].to(mask_probs.dtype)).flatten(2)  # [B, N, P]
    gt = gt_masks.to(pred.dtype).flatten(2)  # [B, M, P]
    intersection = torch.bmm(pred, gt.transpose(1, 2))  # [B, N, M]
    return dice_score(
        intersection,
        pred.sum(-1)[:, :, None],
        gt.sum(-1)[:, None, :],
        smooth=0.0,
        eps=SIMILARITY_EPS,
    )


def class_probability_of(class_logits: Tensor, gt_classes: Tensor) -> Tensor:
    """Each query's predicted probability of each ground-truth mask's class: ``[B, N, M]``.

    Args:
        class_logits: ``[B, N, C + 1]`` (softmax over all ``C + 1`` columns, void last).
        gt_classes: ``[B, M]`` int64 (-1 for empty slots, which read class 0).
    """
    probs = class_logits.softmax(dim=-1)
    batch, queries, _ = probs.shape
    index = gt_classes.clamp(min=0)[:, None, :].expand(batch, queries, -1)
    return probs.gather(2, index)


def matching_cost(dice: Tensor, class_prob: Tensor) -> Tensor:
    """``-(dice * class probability)``: ``[B, N, M]`` (lower is better)."""
    return -(dice * class_prob)


@torch.no_grad()
def hungarian_match(cost: Tensor, num_gt: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Minimum-cost one-to-one assignment of queries to the first ``num_gt[b]`` masks per image.

    Args:
        cost: ``[B, N, M]`` cost of query ``n`` for ground-truth slot ``m``.
        num_gt: ``[B]`` filled ground-truth slots per image (the rest is padding).

    Returns:
        ``(query_index, gt_index)``: per image an int64 tensor each (on ``cost``'s device), the
        matched pairs sorted by ground-truth index; ``min(N, num_gt[b])`` pairs. NaN/inf costs
        are replaced by finite values (the loss itself then reports the non-finite prediction).
    """
    values = np.nan_to_num(cost.detach().float().cpu().numpy(), nan=0.0, posinf=1e4, neginf=-1e4)
    counts = [int(n) for n in num_gt.tolist()]
    queries: list[Tensor] = []
    gts: list[Tensor] = []
    for b, count in enumerate(counts):
        rows, cols = linear_sum_assignment(values[b, :, :count])
        order = np.argsort(cols)
        queries.append(torch.as_tensor(rows[order], dtype=torch.int64, device=cost.device))
        gts.append(torch.as_tensor(cols[order], dtype=torch.int64, device=cost.device))
    return queries, gts


def gt_of_queries(query_index: list[Tensor], gt_index: list[Tensor], num_queries: int) -> Tensor:
    """The matched ground-truth slot of every query, -1 for unmatched queries: ``[B, N]``."""
    batch = len(query_index)
    device = query_index[0].device if batch else torch.device("cpu")
    assigned = torch.full((batch, num_queries), -1, dtype=torch.int64, device=device)
    for b, (queries, gts) in enumerate(zip(query_index, gt_index)):
        assigned[b, queries] = gts
    return assigned
