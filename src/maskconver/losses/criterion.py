"""The MaskConver training criterion: center focal + mask BCE + mask Dice (reference 3.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.losses.focal import center_focal_loss
from maskconver.losses.mask import DICE_MODES, DiceMode, mask_bce_loss, mask_dice_loss
from maskconver.outputs import MaskConverOutput
from maskconver.targets.types import TargetBatch


class MaskConverCriterion(nn.Module):
    """``loss = center_weight * focal + bce_weight * bce + dice_weight * dice``.

    Mask logits ``[B, K, hm, wm]`` are bilinearly upsampled (``align_corners=False``, the TF
    half-pixel resize) to the target mask size ``[Hm, Wm]`` before BCE and Dice. Everything is
    computed in float32 with autocast disabled.

    Args:
        center_weight: weight of the center focal loss.
        bce_weight: weight of the mask BCE.
        dice_weight: weight of the mask Dice loss.
        focal_alpha: focal exponent alpha.
        focal_beta: focal penalty-reduction exponent beta.
        dice_mode: ``"adaptive"`` (``1 - d e^(1-d)``, reference) or ``"plain"`` (``1 - d``).
    """

    def __init__(
        self,
        *,
        center_weight: float = 1.0,
        bce_weight: float = 5.0,
        dice_weight: float = 5.0,
        focal_alpha: float = 2.0,
        focal_beta: float = 4.0,
        dice_mode: DiceMode = "adaptive",
    ) -> None:
        super().__init__()
        if dice_mode not in DICE_MODES:
            raise ValueError(f"MaskConverCriterion: dice_mode must be one of {DICE_MODES}")
        self.center_weight = center_weight
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.focal_alpha = focal_alpha
        self.focal_beta = focal_beta
        self.dice_mode: DiceMode = dice_mode

    def forward(self, outputs: MaskConverOutput, targets: TargetBatch) -> dict[str, Tensor]:
        """Loss terms of a batch.

        Args:
            outputs: model output; uses ``center_logits`` (per level ``[B, C, h_l, w_l]``) and
                ``mask_logits`` ``[B, K, hm, wm]``.
            targets: stacked targets (masks ``[B, K, Hm, Wm]``).

        Returns:
            ``loss`` (weighted total) and the unweighted ``loss_center``, ``loss_bce``,
            ``loss_dice``; float32 scalars.
        """
        if len(outputs.center_logits) != len(targets.heatmaps):
            raise ValueError(
                f"MaskConverCriterion: {len(outputs.center_logits)} center levels in the "
                f"output but {len(targets.heatmaps)} in the targets"
            )
        mask_logits = outputs.mask_logits
        if mask_logits.dim() != 4 or mask_logits.shape[:2] != targets.masks.shape[:2]:
            raise ValueError(
                f"MaskConverCriterion: mask_logits {tuple(mask_logits.shape)} and target masks "
                f"{tuple(targets.masks.shape)} must share [B, K]"
            )
        with torch.autocast(device_type=mask_logits.device.type, enabled=False):
            loss_center = center_focal_loss(
                [x.float() for x in outputs.center_logits],
                targets.heatmaps,
                targets.heatmap_weights,
                targets.num_instances,
                alpha=self.focal_alpha,
                beta=self.focal_beta,
            )
            mask_logits = mask_logits.float()
            target_size = tuple(targets.masks.shape[-2:])
            if tuple(mask_logits.shape[-2:]) != target_size:
                mask_logits = F.interpolate(
                    mask_logits, size=target_size, mode="bilinear", align_corners=False
                )
            gt = targets.masks.float()
            slot_valid = targets.mask_valid.float()
            loss_bce = mask_bce_loss(mask_logits, gt, slot_valid, targets.pixel_weights)
            loss_dice = mask_dice_loss(
                mask_logits, gt, slot_valid, targets.pixel_weights, mode=self.dice_mode
            )
            loss = (
                self.center_weight * loss_center
                + self.bce_weight * loss_bce
                + self.dice_weight * loss_dice
            )
        return {
            "loss": loss,
            "loss_center": loss_center,
            "loss_bce": loss_bce,
            "loss_dice": loss_dice,
        }
