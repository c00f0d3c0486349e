"""Mask losses: weighted BCE and (adaptive) global Dice, per image (reference 3.2, 3.3, 3.5).

The reference trained with 1-2 images per TPU replica and normalised BCE and Dice per replica;
pooling them over a large single-GPU batch changes the loss (pitfall 3), so both are computed
per image and then averaged over images. Within an image the Dice is ONE global score over all
valid slots and pixels, not a mean of per-instance scores (pitfall 2).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DiceMode = Literal["adaptive", "plain"]
DICE_MODES = ("adaptive", "plain")


def _check_shapes(
    name: str, logits: Tensor, targets: Tensor, slot_valid: Tensor, pixel_weights: Tensor
) -> None:
    if logits.dim() != 4 or logits.shape != targets.shape:
        raise ValueError(
            f"{name}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
            "must both be [B, K, H, W]"
        )
    batch, slots, height, width = logits.shape
    if slot_valid.shape != (batch, slots):
        raise ValueError(f"{name}: slot_valid {tuple(slot_valid.shape)} must be [B, K]")
    if pixel_weights.shape != (batch, height, width):
        raise ValueError(
            f"{name}: pixel_weights {tuple(pixel_weights.shape)} must be [B, H, W] = "
            f"{(batch, height, width)}"
        )


def _weights(slot_valid: Tensor, pixel_weights: Tensor) -> Tensor:
    """``[B, K, H, W]`` weight = slot_valid[b, k] * pixel_weights[b, y, x]."""
    return slot_valid.float()[:, :, None, None] * pixel_weights.float()[:, None]


def mask_bce_loss(
    logits: Tensor, targets: Tensor, slot_valid: Tensor, pixel_weights: Tensor
) -> Tensor:
    """Weighted sigmoid BCE, normalised per image by its total weight + 1.

    Per image ``i``: ``sum(BCE * w) / (sum(w) + 1)`` with ``w = slot_valid * pixel_weights``;
    the result is the mean over images.

    Args:
        logits: ``[B, K, H, W]`` mask logits (already at target resolution).
        targets: ``[B, K, H, W]`` binary mask targets.
        slot_valid: ``[B, K]`` 1 for filled slots.
        pixel_weights: ``[B, H, W]`` 0 on padding / ignored pixels.

    Returns:
        Scalar loss.
    """
    _check_shapes("mask_bce_loss", logits, targets, slot_valid, pixel_weights)
    w = _weights(slot_valid, pixel_weights)
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    per_image = (bce * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) + 1.0)
    return per_image.mean()


def mask_dice_loss(
    logits: Tensor,
    targets: Tensor,
    slot_valid: Tensor,
    pixel_weights: Tensor,
    *,
    mode: DiceMode = "adaptive",
    eps: float = 1e-7,
) -> Tensor:
    """One global Dice score per image over its valid slots and pixels.

    ``P = sigmoid(logits) * w``, ``G = targets * w``, ``d = 2 sum(P G) / (sum(P) + sum(G) + eps)``
    per image; the loss is ``1 - d * exp(1 - d)`` (``"adaptive"``, the reference's generalised
    Dice with a single score) or ``1 - d`` (``"plain"``), averaged over images. An image with
    no valid slot (or no weighted pixel) has ``d = 0`` and contributes the constant 1.0, as in
    the reference where nothing remains after dropping empty slots.

    Args:
        logits: ``[B, K, H, W]`` mask logits (already at target resolution).
        targets: ``[B, K, H, W]`` binary mask targets.
        slot_valid: ``[B, K]`` 1 for filled slots.
        pixel_weights: ``[B, H, W]`` 0 on padding / ignored pixels.
        mode: ``"adaptive"`` or ``"plain"``.
        eps: denominator stabiliser.

    Returns:
        Scalar loss.
    """
    if mode not in DICE_MODES:
        raise ValueError(f"mask_dice_loss: mode must be one of {DICE_MODES}, got {mode!r}")
    _check_shapes("mask_dice_loss", logits, targets, slot_valid, pixel_weights)
    w = _weights(slot_valid, pixel_weights)
    pred = torch.sigmoid(logits.float()) * w
    gt = targets.float() * w
    intersection = (pred * gt).sum(dim=(1, 2, 3))
    total = pred.sum(dim=(1, 2, 3)) + gt.sum(dim=(1, 2, 3))
    dice = 2.0 * intersection / (total + eps)
    per_image = 1.0 - dice * torch.exp(1.0 - dice) if mode == "adaptive" else 1.0 - dice
    return per_image.mean()
