"""DR1Mask's training losses (FCOS + BlendMask-style masks + the unified panoptic CE).

``loss = cls * focal + box * GIoU + centerness * BCE + mask * mask BCE + unified * CE``:

* **focal**: sigmoid focal loss (alpha 0.25, gamma 2) over every location and class, summed and
  divided by the number of positive locations (at least 1);
* **GIoU**: ``1 - GIoU`` of the predicted vs target distances at the positives, weighted by
  the centerness targets and divided by their sum (AdelaiDet's FCOS);
* **centerness**: BCE of the centerness logits at the positives, over their number;
* **mask**: every positive location predicts its instance's mask inside the *ground-truth* box:
  ``F`` is cropped by aligned RoIAlign (sampling ratio 1) to ``mask_size`` and combined with the
  location's vector embedding (``sum_d e_d crop_d``); BCE against the box-cropped mask target,
  mean per location, weighted by its centerness target and divided by their sum (BlendMask);
* **unified**: per-pixel CE of ``[W_stuff, mean e_1 .. mean e_N]^T F`` (``unified.py``), the
  dynamic column of an instance being the mean embedding of its positive locations.

All terms are computed in float32. The criterion has no parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.meta.dr1mask.boxes import giou_loss
from maskconver.meta.dr1mask.model import DR1MaskOutput, flatten_levels
from maskconver.meta.dr1mask.roi_align import corner_shift, roi_align
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

        embeddings = flatten_levels(outputs.embeddings).float()  # [B, L, D]
        basis = outputs.basis.float()
        loss_mask = self._mask_loss(embeddings, basis, targets, positive) / normaliser
        loss_unified = self._unified_loss(outputs, embeddings, basis, targets)
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
        self, embeddings: Tensor, basis: Tensor, targets: DR1MaskTargetBatch, positive: Tensor
    ) -> Tensor:
        """Centerness-weighted sum over positives of the box-cropped mask BCE."""
        image, slot = torch.nonzero(targets.instance_valid, as_tuple=True)  # [R]
        if image.numel() == 0:
            return basis.sum() * 0.0
        shift = corner_shift(self.basis_stride)
        crops = roi_align(
            basis,
            targets.boxes[image, slot] + shift,
            image,
            self.mask_size,
            spatial_scale=1.0 / self.basis_stride,
            aligned=True,
        ).flatten(2)  # [R, D, M*M]
        masks = targets.mask_crops[image, slot].flatten(1).float()  # [R, M*M]
        total = basis.new_zeros(())
        for r in range(image.numel()):
            b, g = int(image[r]), int(slot[r])
            at = positive[b] & (targets.gt_index[b] == g)
            logits = embeddings[b][at] @ crops[r]  # [n, M*M]
            bce = F.binary_cross_entropy_with_logits(
                logits, masks[r].expand_as(logits), reduction="none"
            ).mean(dim=1)
            total = total + (bce * targets.centerness[b][at]).sum()
        return total

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
