"""The MaskConver training criterion (reference 3.4) with ReMaX's training-only relaxations.

Center focal + mask BCE + mask Dice, plus (``losses/remax.py``) an auxiliary semantic loss,
ReMask, the mask-ID loss and ReClass.

Everything ReMaX adds lives here, never in the model: the auxiliary semantic head is a
submodule of the criterion (trained and checkpointed with the model, never exported), ReMask
relaxes the mask logits only inside the BCE / Dice / mask-ID terms, ReClass softens only the
heatmap targets.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.meta.maskconver.losses import remax
from maskconver.meta.maskconver.losses.focal import center_focal_loss
from maskconver.meta.maskconver.losses.mask import (
    DICE_MODES,
    DiceMode,
    mask_bce_loss,
    mask_dice_loss,
)
from maskconver.meta.maskconver.outputs import MaskConverOutput
from maskconver.meta.maskconver.targets.types import TargetBatch

RemaskMode = Literal["off", "literal", "literal+maskid"]
RemaskSource = Literal["learned", "ground_truth"]
REMASK_MODES = ("off", "literal", "literal+maskid")
REMASK_SOURCES = ("learned", "ground_truth")


class MaskConverCriterion(nn.Module):
    """``loss = center * focal + bce * BCE + dice * Dice [+ semantic * CE + maskid * mask-ID]``.

    Mask logits ``[B, K, hm, wm]`` (and semantic logits) are bilinearly upsampled
    (``align_corners=False``, the TF half-pixel resize) to the target mask size ``[Hm, Wm]``
    before the mask losses. Everything is computed in float32 with autocast disabled.

    Args:
        center_weight: weight of the center focal loss.
        bce_weight: weight of the mask BCE.
        dice_weight: weight of the mask Dice loss.
        focal_alpha: focal exponent alpha.
        focal_beta: focal penalty-reduction exponent beta.
        dice_mode: ``"adaptive"`` (``1 - d e^(1-d)``, reference) or ``"plain"`` (``1 - d``).
        num_classes: classes C (needed by ReClass and the ground-truth ReMask source).
        semantic_head: training-only head on ``outputs.pixel_embeddings`` (``[B, E, hm, wm]`` ->
            ``[B, C, hm, wm]``); None when the model itself predicts ``semantic_logits`` or no
            semantic loss is used.
        semantic_weight: weight of the semantic cross-entropy (0: no semantic loss).
        remask: ``"off"``, ``"literal"`` (BCE and Dice on ``m * (1 + S)``) or
            ``"literal+maskid"`` (also the softmax mask-ID loss on the relaxed logits).
        remask_detach: stop the gradient through both factors of ``S`` (the paper's setting).
        remask_source: ``"learned"`` semantic probabilities or the ``"ground_truth"`` one-hot
            map (ReMaX Table 7's control).
        remask_identity: ``m * (1 + S)``; False gives ``m * S`` (ReMaX Table 5's control).
        maskid: add the mask-ID loss without relaxation (the ablation's A3).
        maskid_weight: weight of the mask-ID loss when it is on.
        reclass_eta: ReClass smoothing factor (0 = off).
        reclass_splat: splat ReClass soft targets with each slot's Gaussian.
        hard_sigmoid: the heatmap factor of ``S`` uses the hard sigmoid (as the peaks do).
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
        num_classes: int = 1,
        semantic_head: nn.Module | None = None,
        semantic_weight: float = 0.0,
        remask: RemaskMode = "off",
        remask_detach: bool = True,
        remask_source: RemaskSource = "learned",
        remask_identity: bool = True,
        maskid: bool = False,
        maskid_weight: float = 0.3,
        reclass_eta: float = 0.0,
        reclass_splat: bool = False,
        hard_sigmoid: bool = False,
    ) -> None:
        super().__init__()
        if dice_mode not in DICE_MODES:
            raise ValueError(f"MaskConverCriterion: dice_mode must be one of {DICE_MODES}")
        if remask not in REMASK_MODES or remask_source not in REMASK_SOURCES:
            raise ValueError(
                f"MaskConverCriterion: remask must be one of {REMASK_MODES} and remask_source "
                f"one of {REMASK_SOURCES}"
            )
        if not 0.0 <= reclass_eta < 1.0:
            raise ValueError(
                f"MaskConverCriterion: reclass_eta must be in [0, 1), got {reclass_eta}"
            )
        self.center_weight = center_weight
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.focal_alpha = focal_alpha
        self.focal_beta = focal_beta
        self.dice_mode: DiceMode = dice_mode
        self.num_classes = num_classes
        self.semantic_head = semantic_head
        self.semantic_weight = semantic_weight
        self.remask: RemaskMode = remask
        self.remask_detach = remask_detach
        self.remask_source: RemaskSource = remask_source
        self.remask_identity = remask_identity
        self.maskid = maskid or remask == "literal+maskid"
        self.maskid_weight = maskid_weight
        self.reclass_eta = reclass_eta
        self.reclass_splat = reclass_splat
        self.hard_sigmoid = hard_sigmoid

    def forward(self, outputs: MaskConverOutput, targets: TargetBatch) -> dict[str, Tensor]:
        """Loss terms of a batch.

        Args:
            outputs: model output; uses ``center_logits`` (per level ``[B, C, h_l, w_l]``),
                ``mask_logits`` ``[B, K, hm, wm]``, and ``pixel_embeddings`` /
                ``semantic_logits`` when a semantic loss or ReMask is on.
            targets: stacked targets (masks ``[B, K, Hm, Wm]``; ``semantic`` ``[B, Hm, Wm]``
                when a semantic loss, ReMask or ReClass is on).

        Returns:
            ``loss`` (weighted total), the unweighted ``loss_center``, ``loss_bce``,
            ``loss_dice`` (and ``loss_semantic`` / ``loss_maskid`` when on), plus detached
            statistics ``stat_*`` (ReMask's mean ``S`` on the slots' own pixels and elsewhere,
            ReClass's mean soft target); float32 scalars.
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
        result: dict[str, Tensor] = {}
        with torch.autocast(device_type=mask_logits.device.type, enabled=False):
            target_size = tuple(targets.masks.shape[-2:])
            mask_logits = _resize(mask_logits.float(), target_size)
            gt = targets.masks.float()
            slot_valid = targets.mask_valid.float()
            semantic_logits = self._semantic_logits(outputs, target_size)
            heatmaps = list(targets.heatmaps)
            if self.reclass_eta > 0:
                heatmaps = self._reclass(mask_logits, targets, result)
            loss_center = center_focal_loss(
                [x.float() for x in outputs.center_logits],
                heatmaps,
                targets.heatmap_weights,
                targets.num_instances,
                alpha=self.focal_alpha,
                beta=self.focal_beta,
            )
            relaxed = mask_logits
            if self.remask != "off":
                relaxed = self._relaxed(outputs, mask_logits, semantic_logits, targets, result)
            loss_bce = mask_bce_loss(relaxed, gt, slot_valid, targets.pixel_weights)
            loss_dice = mask_dice_loss(
                relaxed, gt, slot_valid, targets.pixel_weights, mode=self.dice_mode
            )
            loss = (
                self.center_weight * loss_center
                + self.bce_weight * loss_bce
                + self.dice_weight * loss_dice
            )
            if semantic_logits is not None and self.semantic_weight > 0:
                loss_semantic = remax.semantic_loss(semantic_logits, _semantic_of(targets))
                loss = loss + self.semantic_weight * loss_semantic
                result["loss_semantic"] = loss_semantic
            if self.maskid:
                loss_maskid = remax.mask_id_loss(relaxed, gt, slot_valid, targets.pixel_weights)
                loss = loss + self.maskid_weight * loss_maskid
                result["loss_maskid"] = loss_maskid
        return {
            "loss": loss,
            "loss_center": loss_center,
            "loss_bce": loss_bce,
            "loss_dice": loss_dice,
            **result,
        }

    def _semantic_logits(self, outputs: MaskConverOutput, size: tuple[int, ...]) -> Tensor | None:
        """``[B, C, Hm, Wm]`` semantic logits (the model's, else the training-only head's)."""
        logits = outputs.semantic_logits
        if logits is None and self.semantic_head is not None:
            if outputs.pixel_embeddings is None:
                raise ValueError("MaskConverCriterion: the semantic head needs pixel_embeddings")
            logits = self.semantic_head(outputs.pixel_embeddings.float())
        return None if logits is None else _resize(logits.float(), size)

    def _relaxed(
        self,
        outputs: MaskConverOutput,
        mask_logits: Tensor,
        semantic_logits: Tensor | None,
        targets: TargetBatch,
        stats: dict[str, Tensor],
    ) -> Tensor:
        """ReMask's relaxed logits ``m * (1 + S)`` (or ``m * S``) at mask resolution."""
        if self.remask_source == "ground_truth":
            semantic_probs = remax.semantic_one_hot(_semantic_of(targets), self.num_classes)
        elif semantic_logits is None:
            raise ValueError(
                "MaskConverCriterion: ReMask with a learned source needs a semantic head"
            )
        else:
            semantic_probs = semantic_logits.sigmoid()
        class_probs = remax.class_probabilities(
            [x.float() for x in outputs.center_logits],
            targets.center_indices,
            hard=self.hard_sigmoid,
        )
        if self.remask_detach:
            semantic_probs, class_probs = semantic_probs.detach(), class_probs.detach()
        factor = remax.relaxation_factor(semantic_probs, class_probs)
        with torch.no_grad():  # how strongly the relaxation acts: on the slot's own pixels vs not
            weight = targets.mask_valid.float()[:, :, None, None] * targets.pixel_weights[:, None]
            own = targets.masks.float() * weight
            other = (1.0 - targets.masks.float()) * weight
            stats["stat_remask_s_own"] = (factor * own).sum() / own.sum().clamp(min=1.0)
            stats["stat_remask_s_other"] = (factor * other).sum() / other.sum().clamp(min=1.0)
        return remax.relax_mask_logits(mask_logits, factor, identity=self.remask_identity)

    def _reclass(
        self, mask_logits: Tensor, targets: TargetBatch, stats: dict[str, Tensor]
    ) -> list[Tensor]:
        """ReClass-softened heatmap targets (from the detached, unrelaxed mask probabilities)."""
        one_hot = remax.semantic_one_hot(_semantic_of(targets), self.num_classes)
        overlap = remax.class_overlap(mask_logits.detach().sigmoid(), one_hot)
        softened = remax.reclass_heatmaps(
            [h.float() for h in targets.heatmaps],
            overlap,
            targets.classes,
            targets.center_indices,
            targets.mask_valid,
            eta=self.reclass_eta,
            center_sigma=targets.center_sigma if self.reclass_splat else None,
        )
        with torch.no_grad():
            changed = sum((s - h.float()).sum() for s, h in zip(softened, targets.heatmaps))
            stats["stat_reclass_added"] = torch.as_tensor(changed, dtype=torch.float32) / max(
                int(targets.mask_valid.sum()), 1
            )
        return softened


def _resize(x: Tensor, size: tuple[int, ...]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _semantic_of(targets: TargetBatch) -> Tensor:
    if targets.semantic is None:
        raise ValueError("MaskConverCriterion: these losses need targets.semantic")
    return targets.semantic
