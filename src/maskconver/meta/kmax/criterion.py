"""The kMaX-DeepLab training criterion with ReMaX's relaxations (ReMask, ReClass).

Deep supervision: the final prediction and every auxiliary prediction (one per transformer-
decoder block) are each matched to the ground truth on their own (``matching.py``) and get the
PQ-style class and Dice terms and the mask-ID term; each reported term is the SUM over the
predictions (deeplab2 adds the auxiliary losses). The instance discrimination term reads the
final pixel features only (the auxiliary predictions carry none); kMaX's auxiliary semantic head
reads the backbone maps once.

ReMaX, training only (the model and its inference are unchanged):

* **ReMask** on the first ``remask_stages`` decoder blocks: a semantic head per block
  (``StageSemanticHead`` on ``stage_features[i]``) predicts ``m_sem``; with
  ``S = act(m_sem).detach() @ act(p[:, :, :C]).detach()`` the block's mask logits become
  ``m * (1 + S)`` (``m * S`` without ``remask_identity``) in that block's matching, Dice, class
  weights and mask-ID terms. Both factors are detached (design note 6.1.8), so the panoptic
  losses send no gradient into the semantic heads; each head is trained by its own semantic
  cross-entropy (weight ``remask_semantic_weight`` per block). ``act`` is the sigmoid (ReMaX
  Eq. 1) or, with ``activation="softmax"``, a softmax over the classes (ReMaX Table 2); the class
  factor is the softmax over all ``C + 1`` columns with the void column dropped.
* **ReClass** (every prediction, ``reclass_eta > 0``): the class term's target becomes ReMaX
  Eq. 4's ``eta * y_m + (1 - eta * y_m) * y``, with ``y_m`` the overlap (Eq. 3) of the UNRELAXED,
  detached mask probabilities with the ground-truth semantic one-hot of the C classes.

Diagnostics (not in the loss, detached): ``stat_fp_ce`` and ``stat_fn_ce``, the false-positive and
false-negative parts of the sigmoid mask cross-entropy of the final prediction (ReMaX Fig. 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.layers.types import ActLayer, NormLayer
from maskconver.losses import remax
from maskconver.meta.kmax import losses
from maskconver.meta.kmax.matching import (
    MASK_ACTIVATIONS,
    MaskActivation,
    class_probability_of,
    gt_of_queries,
    hungarian_match,
    mask_probabilities,
    matching_cost,
    pairwise_dice,
)
from maskconver.meta.kmax.outputs import KMaXOutput
from maskconver.meta.kmax.semantic_heads import KMaXSemanticHead, StageSemanticHead
from maskconver.meta.kmax.targets import KMaXTargetBatch

PANOPTIC_TERMS = ("pq_class", "pq_dice", "mask_id")


class MatchedTerms(NamedTuple):
    """The matched terms of one prediction, and (for diagnostics) its query-order targets."""

    pq_class: Tensor
    pq_dice: Tensor
    mask_id: Tensor
    target_masks: Tensor
    pixels: Tensor


class KMaXCriterion(nn.Module):
    """kMaX-DeepLab's loss, summed over the final and auxiliary predictions, with ReMaX.

    ``loss = pq_weight * (pq_class + pq_dice) + mask_id_weight * mask_id + instance_weight *
    instance + semantic_weight * semantic + remask_semantic_weight * remask_semantic``.
    Everything is computed in float32 with autocast disabled, at the mask logits' resolution
    ``h4 x w4`` (the targets' stride-4 grid).

    Args:
        num_classes: C (class logits have ``C + 1`` columns, void last).
        stage_channels: channels of each ``stage_features`` entry (one per decoder block).
        backbone_channels: channels of the backbone maps, fine to coarse.
        backbone_strides: their strides.
        activation: mask activation of the mask-ID term, of the mask probabilities of the
            matching, the Dice term, the class weights and ReClass, and of ReMask's factors:
            ``"sigmoid"`` (ReMaX's baseline) or ``"softmax"`` over the queries (deeplab2).
        pq_weight: weight of the PQ-style loss (class + Dice terms).
        mask_id_weight: weight of the mask-ID cross-entropy.
        instance_weight: weight of the instance discrimination loss (0: not computed).
        semantic_weight: weight of kMaX's auxiliary semantic loss; 0 builds no head.
        focal_alpha: weight of matched queries in the PQ-style terms.
        instance_points: pixels sampled per image for instance discrimination.
        instance_sample_temperature: its sampling temperature (on ``log(1 / mask area)``).
        instance_similarity_temperature: its similarity temperature.
        semantic_points: pixels sampled per image for the semantic losses (0: every labelled).
        semantic_sample_temperature: their sampling temperature.
        remask_stages: ReMask on the first N decoder blocks (0: off, no heads).
        remask_semantic_weight: weight of each ReMask block's semantic loss.
        remask_identity: ``m * (1 + S)`` (True, the paper's) or ``m * S``.
        reclass_eta: ReClass smoothing factor (0: off; the paper's 0.1).
        semantic_channels: width of the semantic heads.
        aspp_rates: atrous rates of the semantic heads' ASPP.
        norm_layer: ``norm_layer(C)`` builds a norm module for the heads.
        act_layer: ``act_layer()`` builds an activation module for the heads.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        stage_channels: Sequence[int],
        backbone_channels: Sequence[int],
        backbone_strides: Sequence[int],
        activation: MaskActivation = "sigmoid",
        pq_weight: float = 3.0,
        mask_id_weight: float = 0.3,
        instance_weight: float = 1.0,
        semantic_weight: float = 1.0,
        focal_alpha: float = 0.75,
        instance_points: int = 4096,
        instance_sample_temperature: float = 1.5,
        instance_similarity_temperature: float = 0.3,
        semantic_points: int = 4096,
        semantic_sample_temperature: float = 2.0,
        remask_stages: int = 0,
        remask_semantic_weight: float = 0.5,
        remask_identity: bool = True,
        reclass_eta: float = 0.0,
        semantic_channels: int = 256,
        aspp_rates: Sequence[int] = (6, 12, 18),
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        if activation not in MASK_ACTIVATIONS:
            raise ValueError(
                f"KMaXCriterion: activation must be one of {MASK_ACTIVATIONS}, got {activation!r}"
            )
        if not 0 <= remask_stages <= len(stage_channels):
            raise ValueError(
                f"KMaXCriterion: remask_stages must be in [0, {len(stage_channels)}] (the "
                f"decoder blocks), got {remask_stages}"
            )
        if not 0.0 <= reclass_eta <= 1.0:
            raise ValueError(f"KMaXCriterion: reclass_eta must be in [0, 1], got {reclass_eta}")
        if instance_points < 1 or semantic_points < 0:
            raise ValueError(
                "KMaXCriterion: instance_points must be >= 1 and semantic_points >= 0, got "
                f"{instance_points} and {semantic_points}"
            )
        self.num_classes = num_classes
        self.num_stages = len(stage_channels)
        self.activation: MaskActivation = activation
        self.pq_weight = pq_weight
        self.mask_id_weight = mask_id_weight
        self.instance_weight = instance_weight
        self.semantic_weight = semantic_weight
        self.focal_alpha = focal_alpha
        self.instance_points = instance_points
        self.instance_sample_temperature = instance_sample_temperature
        self.instance_similarity_temperature = instance_similarity_temperature
        self.semantic_points = semantic_points
        self.semantic_sample_temperature = semantic_sample_temperature
        self.remask_stages = remask_stages
        self.remask_semantic_weight = remask_semantic_weight
        self.remask_identity = remask_identity
        self.reclass_eta = reclass_eta
        self.semantic_head = (
            KMaXSemanticHead(
                backbone_channels=backbone_channels,
                backbone_strides=backbone_strides,
                num_classes=num_classes,
                channels=semantic_channels,
                aspp_rates=aspp_rates,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
            if semantic_weight > 0
            else None
        )
        self.stage_heads = nn.ModuleList(
            StageSemanticHead(
                stage_channels[i],
                num_classes=num_classes,
                channels=semantic_channels,
                aspp_rates=aspp_rates,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
            for i in range(remask_stages)
        )

    def forward(self, outputs: KMaXOutput, targets: KMaXTargetBatch) -> dict[str, Tensor]:
        """Loss terms of a batch.

        Args:
            outputs: the model's ``KMaXOutput`` (mask logits ``[B, N, h4, w4]``).
            targets: stacked targets at the same ``h4 x w4``.

        Returns:
            ``loss`` (the weighted total) and the unweighted float32 scalars ``pq_class``,
            ``pq_dice``, ``mask_id`` (each summed over the final and auxiliary predictions),
            ``instance`` and ``semantic`` (when their weight is > 0), ``remask_semantic``
            (summed over the ReMask blocks, when on), each as ``loss_<name>``, and the detached
            diagnostics ``stat_fp_ce`` / ``stat_fn_ce`` (final prediction) and
            ``stat_fp_ce_first`` / ``stat_fn_ce_first`` (the first block's, relaxed by ReMask),
            ``stat_mask_logit_std`` (the spread of the final mask logits).
        """
        self._check(outputs, targets)
        device_type = outputs.mask_logits.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._losses(outputs, targets)

    def _check(self, outputs: KMaXOutput, targets: KMaXTargetBatch) -> None:
        size = tuple(targets.masks.shape[-2:])
        masks = [outputs.mask_logits, *outputs.aux_mask_logits]
        bad = [tuple(m.shape) for m in masks if tuple(m.shape[-2:]) != size]
        if bad:
            raise ValueError(
                f"KMaXCriterion: mask logits {bad} do not match the targets' {size} (the "
                "targets' mask_stride must be the mask logits' stride)"
            )
        blocks = len(outputs.aux_mask_logits)
        if len(outputs.aux_class_logits) != blocks or len(outputs.stage_features) != blocks:
            raise ValueError(
                f"KMaXCriterion: {len(outputs.aux_class_logits)} auxiliary class logits, "
                f"{blocks} auxiliary mask logits and {len(outputs.stage_features)} stage "
                "features: one of each per decoder block expected"
            )
        if blocks < self.remask_stages:
            raise ValueError(
                f"KMaXCriterion: remask_stages={self.remask_stages} but the model has "
                f"{blocks} decoder blocks"
            )

    def _losses(self, outputs: KMaXOutput, targets: KMaXTargetBatch) -> dict[str, Tensor]:
        size = tuple(targets.masks.shape[-2:])
        num_slots = targets.masks.shape[1]
        semantic_target = None
        if self.semantic_head is not None or self.remask_stages:
            semantic_target = losses.sampled_semantic(
                targets.semantic,
                targets.mask_ids,
                num_slots,
                self.semantic_points,
                self.semantic_sample_temperature,
            )
        one_hot = (
            remax.semantic_one_hot(targets.semantic, self.num_classes)
            if self.reclass_eta > 0
            else None
        )
        result: dict[str, Tensor] = {}
        predictions = [
            *zip(outputs.aux_class_logits, outputs.aux_mask_logits),
            (outputs.class_logits, outputs.mask_logits),
        ]
        sums = {name: outputs.mask_logits.new_zeros(()) for name in PANOPTIC_TERMS}
        remask_semantic = outputs.mask_logits.new_zeros(())
        terms: MatchedTerms | None = None
        first: tuple[Tensor, Tensor, Tensor] | None = None
        for index, (class_logits, mask_logits) in enumerate(predictions):
            class_logits, mask_logits = class_logits.float(), mask_logits.float()
            relaxed = mask_logits
            if index < self.remask_stages:
                stage_logits = self.stage_heads[index](outputs.stage_features[index].float(), size)
                assert semantic_target is not None
                remask_semantic = remask_semantic + remax.semantic_loss(
                    stage_logits, semantic_target
                )
                relaxed = losses.remask_logits(
                    mask_logits,
                    class_logits,
                    stage_logits,
                    activation=self.activation,
                    identity=self.remask_identity,
                )
            terms = self._matched_terms(class_logits, mask_logits, relaxed, targets, one_hot)
            if index == 0:  # the first block's mask CE as its loss sees it (relaxed by ReMask)
                first = (relaxed.detach(), terms.target_masks, terms.pixels)
            for name in PANOPTIC_TERMS:
                sums[name] = sums[name] + getattr(terms, name)
        assert terms is not None and first is not None  # the final and the first predictions
        loss = (
            self.pq_weight * (sums["pq_class"] + sums["pq_dice"])
            + self.mask_id_weight * sums["mask_id"]
        )
        result.update({f"loss_{name}": value for name, value in sums.items()})
        if self.instance_weight > 0:
            instance = losses.instance_discrimination_loss(
                outputs.pixel_features.float(),
                targets.mask_ids,
                num_slots,
                points=self.instance_points,
                sample_temperature=self.instance_sample_temperature,
                similarity_temperature=self.instance_similarity_temperature,
            )
            loss = loss + self.instance_weight * instance
            result["loss_instance"] = instance
        if self.semantic_head is not None:
            assert semantic_target is not None
            logits = self.semantic_head([f.float() for f in outputs.backbone_features], size)
            semantic = remax.semantic_loss(logits, semantic_target)
            loss = loss + self.semantic_weight * semantic
            result["loss_semantic"] = semantic
        if self.remask_stages:
            loss = loss + self.remask_semantic_weight * remask_semantic
            result["loss_remask_semantic"] = remask_semantic
        with torch.no_grad():  # the final prediction is never relaxed
            for suffix, (logits, target, pixels) in (
                ("", (outputs.mask_logits.float(), terms.target_masks, terms.pixels)),
                ("_first", first),
            ):
                fp, fn, has = losses.sigmoid_mask_ce(logits, target, pixels)
                result[f"stat_fp_ce{suffix}"] = losses.mean_over(fp, has).detach()
                result[f"stat_fn_ce{suffix}"] = losses.mean_over(fn, has).detach()
            # the scale of the final mask logits: the sigmoid needs |logit| of a few units to
            # make a confident mask, and the logits start at a tenth of a unit (their BN's gamma)
            result["stat_mask_logit_std"] = outputs.mask_logits.float().std().detach()
        return {"loss": loss, **result}

    def _matched_terms(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        relaxed: Tensor,
        targets: KMaXTargetBatch,
        one_hot: Tensor | None,
    ) -> MatchedTerms:
        """Match one prediction (on its possibly relaxed masks) and compute its terms."""
        labelled = targets.mask_ids >= 0
        probs = mask_probabilities(relaxed, self.activation)
        with torch.no_grad():  # the matching and the stop-gradient weights
            dice = pairwise_dice(probs, targets.masks, labelled)  # [B, N, M]
            class_prob = class_probability_of(class_logits, targets.classes)  # [B, N, M]
        query_index, gt_index = hungarian_match(matching_cost(dice, class_prob), targets.num_masks)
        assigned = gt_of_queries(query_index, gt_index, class_logits.shape[1])
        matched = assigned >= 0
        index = assigned.clamp(min=0)[:, :, None]
        target_masks, target_classes = losses.query_targets(
            targets.masks, targets.classes, assigned, self.num_classes
        )
        target = F.one_hot(target_classes, self.num_classes + 1).float()
        if one_hot is not None:
            unrelaxed = mask_probabilities(mask_logits, self.activation).detach()
            overlap = remax.class_overlap(unrelaxed, one_hot)
            target = losses.reclass_targets(target, overlap, self.reclass_eta)
        weights = losses.class_weights(
            matched, dice.gather(2, index)[..., 0], losses.void_ratio(probs, labelled)
        )
        pq_class = losses.pq_class_loss(class_logits, target, weights, alpha=self.focal_alpha)
        pq_dice = losses.pq_dice_loss(
            probs,
            target_masks,
            labelled,
            class_prob.gather(2, index)[..., 0],
            matched,
            alpha=self.focal_alpha,
        )
        pixels = losses.covered_pixels(target_masks, labelled)
        if self.activation == "softmax":
            slots = torch.ones_like(matched)
            mask_id = remax.mask_id_loss(relaxed, target_masks, slots, pixels.float())
        else:
            mask_id = losses.sigmoid_mask_id_loss(relaxed, target_masks, pixels)
        return MatchedTerms(pq_class, pq_dice, mask_id, target_masks, pixels)
