"""DR1Mask's training losses (FCOS + BlendMask-style masks + the unified panoptic CE).

``loss = cls * focal + box * GIoU + centerness * BCE + mask * mask BCE + unified * CE``:

* **focal**: sigmoid focal loss (alpha 0.25, gamma 2) over every location and class, summed and
  divided by the number of positive locations (at least 1);
* **GIoU**: ``1 - GIoU`` of the predicted vs target distances at the positives, weighted by
  the centerness targets and divided by their sum (AdelaiDet's FCOS);
* **centerness**: BCE of the centerness logits at the positives, over their number;
* **mask**: every positive location predicts its instance's mask inside the *ground-truth* box:
  ``F`` is cropped by aligned RoIAlign (sampling ratio 1) to ``mask_size`` and combined with the
  location's embedding by the model's instance module (``instance_modules.py``; the model
  returns these ``positive_mask_logits`` when the training call gets ``MaskQueries``; without
  them the vector embedding ``sum_d e_d crop_d`` is computed here); BCE against the box-cropped
  mask target, mean per location, weighted by its centerness target and divided by their sum
  (BlendMask). The same loss trains every instance module;
* **unified**: per-pixel CE of ``[W_stuff, mean c_1 .. mean c_N]^T F`` (``unified.py``), the
  dynamic column of an instance being the mean unified column (the embedding for the vector
  module) of its positive locations; skipped (0) when its weight is 0 (the instance task).

All terms are computed in float32. The criterion has no parameters.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.meta.dr1mask.boxes import giou_loss
from maskconver.meta.dr1mask.instance_modules import (
    VectorEmbedding,
    mask_queries,
    positive_mask_logits,
)
from maskconver.meta.dr1mask.model import DR1MaskOutput, flatten_levels
from maskconver.meta.dr1mask.targets import DR1MaskTargetBatch
from maskconver.meta.dr1mask.unified import (
    UnifiedPanopticLayer,
    masked_unified_logits,
    mean_embeddings,
    unified_loss,
)

MIN_NORMALISER = 1e-6  # floor of the centerness-sum normalisers


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float, gamma: float) -> Tensor:
    """Elementwise RetinaNet focal loss ``-alpha_t (1 - p_t)^gamma log(p_t)``.

    Args:
        logits: any shape.
        targets: same shape, in ``{0, 1}``.
        alpha: weight of the positives (``1 - alpha`` for the negatives).
        gamma: focusing exponent.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * ce * (1 - p_t) ** gamma


class DR1MaskCriterion(nn.Module):
    """The DR1Mask losses (see the module docstring).

    Args:
        num_classes: C.
        focal_alpha: focal alpha (FCOS: 0.25).
        focal_gamma: focal gamma (FCOS: 2).
        cls_weight: weight of the classification loss.
        box_weight: weight of the GIoU loss.
        centerness_weight: weight of the centerness loss.
        mask_weight: weight of the box-cropped mask BCE.
        unified_weight: weight of the unified panoptic CE.
        mask_size: side of the mask crops (must match the targets').
        basis_stride: stride of ``F``.
        target_stride: stride of the unified target.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        centerness_weight: float = 1.0,
        mask_weight: float = 1.0,
        unified_weight: float = 0.5,
        mask_size: int = 56,
        basis_stride: int = 4,
        target_stride: int = 4,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.weights = {
            "cls": cls_weight,
            "box": box_weight,
            "centerness": centerness_weight,
            "mask": mask_weight,
            "unified": unified_weight,
        }
        self.mask_size = mask_size
        self.basis_stride = basis_stride
        self.target_stride = target_stride

    def forward(self, outputs: DR1MaskOutput, targets: DR1MaskTargetBatch) -> dict[str, Tensor]:
        """Named losses of a batch; ``"loss"`` is the weighted total."""
        cls_logits = flatten_levels(outputs.cls_logits).float()  # [B, L, C]
        if cls_logits.shape[:2] != targets.labels.shape:
            raise ValueError(
                f"DR1MaskCriterion: the network has {cls_logits.shape[1]} locations, the targets "
                f"{targets.labels.shape[1]} (targets built for another input size or strides?)"
            )
        positive = targets.labels >= 0  # [B, L]
        num_positive = positive.sum().clamp(min=1).float()
        onehot = F.one_hot(targets.labels.clamp(min=0), cls_logits.shape[-1]).float()
        onehot = onehot * positive[:, :, None]
        loss_cls = (
            sigmoid_focal_loss(cls_logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma)
        ).sum() / num_positive

        centerness_target = targets.centerness[positive]
        normaliser = centerness_target.sum().clamp(min=MIN_NORMALISER)
        distances = flatten_levels(outputs.distances).float()[positive]
        loss_box = (giou_loss(distances, targets.distances[positive]) * centerness_target).sum()
        loss_box = loss_box / normaliser
        centerness = flatten_levels(outputs.centerness).float()[:, :, 0][positive]
        loss_centerness = (
            F.binary_cross_entropy_with_logits(centerness, centerness_target, reduction="sum")
            / num_positive
        )

        embeddings = flatten_levels(outputs.embeddings).float()  # [B, L, E]
        basis = outputs.basis.float()
        loss_mask = self._mask_loss(outputs, embeddings, basis, targets) / normaliser
        if self.weights["unified"] > 0:
            columns = (
                embeddings
                if not outputs.unified_columns
                else flatten_levels(outputs.unified_columns).float()
            )
            loss_unified = self._unified_loss(outputs, columns, basis, targets)
        else:
            loss_unified = basis.sum() * 0.0
        terms = {
            "cls": loss_cls,
            "box": loss_box,
            "centerness": loss_centerness,
            "mask": loss_mask,
            "unified": loss_unified,
        }
        total = sum(self.weights[k] * v for k, v in terms.items())
        assert isinstance(total, Tensor)
        return {"loss": total, **{f"loss_{k}": v.detach() for k, v in terms.items()}}

    def _mask_loss(
        self,
        outputs: DR1MaskOutput,
        embeddings: Tensor,
        basis: Tensor,
        targets: DR1MaskTargetBatch,
    ) -> Tensor:
        """Centerness-weighted sum over positives of the box-cropped mask BCE."""
        queries = mask_queries(
            targets.boxes, targets.instance_valid, targets.labels, targets.gt_index
        )
        if queries.image.numel() == 0:
            return basis.sum() * 0.0
        logits = outputs.positive_mask_logits
        if logits is None or (logits.shape[0] == 0 and embeddings.shape[-1] == basis.shape[1]):
            # an output without the queries' logits (built by hand): the vector embedding
            logits = positive_mask_logits(
                VectorEmbedding(basis.shape[1]).mask_logits,
                basis,
                embeddings,
                queries,
                mask_size=self.mask_size,
                basis_stride=self.basis_stride,
            )
        if logits.shape[0] != queries.image.numel():
            raise ValueError(
                f"DR1MaskCriterion: {logits.shape[0]} positive mask logits for "
                f"{queries.image.numel()} positives (call the model with these targets' queries)"
            )
        masks = targets.mask_crops[queries.roi_image, queries.roi_slot][queries.roi].float()
        bce = F.binary_cross_entropy_with_logits(
            logits.float().flatten(1), masks.flatten(1), reduction="none"
        ).mean(dim=1)  # [P]
        return (bce * targets.centerness[queries.image, queries.location]).sum()

    def _unified_loss(
        self,
        outputs: DR1MaskOutput,
        embeddings: Tensor,
        basis: Tensor,
        targets: DR1MaskTargetBatch,
    ) -> Tensor:
        """CE of the unified logits with mean-embedding instance columns."""
        columns, _ = mean_embeddings(embeddings, targets.gt_index, targets.instance_valid.shape[1])
        logits = masked_unified_logits(
            outputs.stuff_logits.float(),
            targets.static_valid[0],
            UnifiedPanopticLayer.instance_logits(columns, basis),
            targets.instance_valid,
        )
        return unified_loss(
            logits,
            targets.panoptic,
            basis_stride=self.basis_stride,
            target_stride=self.target_stride,
        )
