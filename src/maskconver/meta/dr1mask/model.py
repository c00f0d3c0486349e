"""DR1Mask: backbone -> FPN (P3-P7) -> FCOS towers -> top layer -> DR1Basis -> unified layer.

Paper section 3 (design note 4): the top-down branch (FCOS) predicts boxes, classes and
centerness per location; a top layer on its box tower predicts the instance embedding and the
DR1 factors of every level; DR1Basis merges the pyramid top-down with DR1Convs driven by those
factors into one shared map ``F`` at stride 4; the unified panoptic layer's static columns read
stuff from ``F``. With ``detect=True`` (inference) the static-shape detection step keeps ``K``
detections and the unified layer adds one column per detection; the training call
(``detect=False``) skips it, the criterion building the columns from ground truth. Both calls
return a ``DR1MaskOutput``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.decoders.base import Decoder
from maskconver.layers.image import IMAGENET_MEAN, IMAGENET_STD
from maskconver.meta.dr1mask.assign import make_locations
from maskconver.meta.dr1mask.basis import DR1MaskBasis
from maskconver.meta.dr1mask.detect import DetectionSettings, select_detections
from maskconver.meta.dr1mask.fcos import FCOSHead
from maskconver.meta.dr1mask.instance_modules import (
    InstanceModule,
    MaskQueries,
    VectorEmbedding,
    positive_mask_logits,
)
from maskconver.meta.dr1mask.roi_align import corner_shift, roi_align
from maskconver.meta.dr1mask.top_layer import TopLayer
from maskconver.meta.dr1mask.unified import UnifiedPanopticLayer


class DR1MaskOutput(NamedTuple):
    """The network's output (the detection fields are None for the training call).

    Attributes:
        cls_logits: per level ``[B, C, h_l, w_l]`` classification logits.
        distances: per level ``[B, 4, h_l, w_l]`` box distances ``(l, t, r, b)`` in pixels.
        centerness: per level ``[B, 1, h_l, w_l]`` centerness logits.
        embeddings: per level ``[B, E, h_l, w_l]`` instance embeddings (E: the instance
            module's ``embedding_dim``; D for the vector embedding).
        basis: ``F`` ``[B, D, h4, w4]`` at the basis stride (4).
        stuff_logits: ``[B, C, h4, w4]`` static-column logits of the unified layer.
        panoptic_logits: ``[B, C + K, h4, w4]`` unified logits (static columns, then one
            column per detection).
        boxes: ``[B, K, 4]`` detection boxes in input pixels.
        scores: ``[B, K]`` detection scores (0 for empty slots).
        classes: ``[B, K]`` int64 detection classes.
        detection_embeddings: ``[B, K, E]`` the detections' embeddings.
        unified_columns: per level ``[B, D, h_l, w_l]`` the unified layer's dynamic column of
            every location (the embeddings themselves for the vector embedding).
        positive_mask_logits: ``[P, M, M]`` the mask logits of every positive location of the
            ``queries`` in its instance's ground-truth box (``MaskQueries`` order); ``P = 0``
            without queries.
        detection_masks: ``[B, K, M, M]`` each detection's mask logits inside its box
            (``[B, K, 0, 0]`` for a model built without them: the argmax panoptic merge).
    """

    cls_logits: tuple[Tensor, ...]
    distances: tuple[Tensor, ...]
    centerness: tuple[Tensor, ...]
    embeddings: tuple[Tensor, ...]
    basis: Tensor
    stuff_logits: Tensor
    panoptic_logits: Tensor | None = None
    boxes: Tensor | None = None
    scores: Tensor | None = None
    classes: Tensor | None = None
    detection_embeddings: Tensor | None = None
    unified_columns: tuple[Tensor, ...] | None = None
    positive_mask_logits: Tensor | None = None
    detection_masks: Tensor | None = None


def flatten_levels(maps: Sequence[Tensor]) -> Tensor:
    """Per level ``[B, X, h_l, w_l]`` -> ``[B, L, X]`` (levels fine to coarse, row-major)."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


class DR1Mask(nn.Module):
    """The DR1Mask network.

    Args:
        backbone: ``images -> list[Tensor]`` fine to coarse (``channels`` / ``strides``).
        pyramid: backbone maps -> P3..P7 (``channels`` / ``strides`` declared).
        head: the FCOS towers and predictions.
        top_layer: embeddings and DR1 factors from the box tower.
        basis: the DR1Basis merge.
        unified: the unified panoptic layer.
        detection: inference thresholds (K, pre-NMS top-k, score threshold, NMS IoU).
        basis_stride: stride of ``F`` (4: one x2 below the finest pyramid level).
        instance_module: embeddings + crops -> masks, and the unified columns (default: the
            vector embedding of the top layer's width).
        mask_size: M, the side of the RoIAlign crops.
        detection_masks: inference also returns each detection's crop mask logits (the paste
            merge and the instance task need them; off for the exported argmax graph).
        pixel_mean: RGB mean in 0..255 units.
        pixel_std: RGB std in 0..255 units.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        pyramid: Decoder,
        head: FCOSHead,
        top_layer: TopLayer,
        basis: DR1MaskBasis,
        unified: UnifiedPanopticLayer,
        detection: DetectionSettings,
        basis_stride: int = 4,
        instance_module: InstanceModule | None = None,
        mask_size: int = 56,
        detection_masks: bool = False,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pyramid = pyramid
        self.head = head
        self.top_layer = top_layer
        self.basis = basis
        self.unified = unified
        self.detection = detection
        self.strides = tuple(int(s) for s in pyramid.strides)
        self.basis_stride = basis_stride
        self.instance_module = (
            instance_module
            if instance_module is not None
            else VectorEmbedding(top_layer.embedding_dim)
        )
        if self.instance_module.embedding_dim != top_layer.embedding_dim:
            raise ValueError(
                f"DR1Mask: the top layer predicts {top_layer.embedding_dim} embedding values, the "
                f"instance module needs {self.instance_module.embedding_dim}"
            )
        self.mask_size = mask_size
        self.detection_masks = detection_masks
        backbone_strides = list(backbone.strides)
        self._basis_index = (
            backbone_strides.index(basis_stride) if basis_stride in backbone_strides else None
        )
        self.pixel_mean: Tensor
        self.pixel_std: Tensor
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False
        )

    def forward(
        self, images: Tensor, detect: bool = True, queries: MaskQueries | None = None
    ) -> DR1MaskOutput:
        """Run the network.

        Args:
            images: ``[B, 3, H, W]`` float RGB in 0..255 (padding filled with the mean colour).
            detect: run the detection step and the detections' unified columns (inference);
                False for the training call.
            queries: training: the ground-truth RoIs and positive locations whose mask logits
                the criterion scores (``instance_modules.mask_queries``).

        Returns:
            ``DR1MaskOutput`` (see its attributes for the shapes).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"DR1Mask: images must be [B, 3, H, W], got {tuple(images.shape)}")
        x = (images - self.pixel_mean) / self.pixel_std
        features = self.backbone(x)
        levels = self.pyramid(features)
        cls_logits, distances, centerness, box_features = self.head(levels)
        embeddings, factors = [], []
        for box in box_features:
            embedding, a_raw, b_raw = self.top_layer(box)
            embeddings.append(embedding)
            factors.append((a_raw, b_raw))
        if self._basis_index is not None:
            out_size = features[self._basis_index].shape[-2:]
        else:
            finest = levels[0].shape[-2:]
            out_size = torch.Size((2 * finest[0], 2 * finest[1]))
        basis = self.basis(levels, factors, out_size)
        stuff_logits = self.unified.stuff_logits(basis)
        out = DR1MaskOutput(
            cls_logits=tuple(cls_logits),
            distances=tuple(distances),
            centerness=tuple(centerness),
            embeddings=tuple(embeddings),
            basis=basis,
            stuff_logits=stuff_logits,
            unified_columns=tuple(embeddings)
            if self.instance_module.columns_are_embeddings
            else tuple(
                self.instance_module.unified_column(e.movedim(1, -1)).movedim(-1, 1)
                for e in embeddings
            ),
            positive_mask_logits=basis.new_zeros(0, self.mask_size, self.mask_size)
            if queries is None
            else positive_mask_logits(
                self.instance_module.mask_logits,
                basis,
                flatten_levels(embeddings),
                queries,
                mask_size=self.mask_size,
                basis_stride=self.basis_stride,
            ),
        )
        if not detect:
            return out
        sizes = [tuple(m.shape[-2:]) for m in cls_logits]
        locations, _ = make_locations(sizes, self.strides, device=images.device)  # type: ignore[arg-type]
        detections = select_detections(
            flatten_levels(cls_logits),
            flatten_levels(centerness)[:, :, 0],
            flatten_levels(distances),
            flatten_levels(embeddings),
            locations,
            (images.shape[-2], images.shape[-1]),
            self.detection,
        )
        columns = self.instance_module.unified_column(detections.embeddings)
        instance_logits = self.unified.instance_logits(columns, basis)
        if self.detection_masks:
            masks = self.crop_masks(basis, detections.boxes, detections.embeddings)
        else:
            masks = basis.new_zeros(*detections.boxes.shape[:2], 0, 0)
        return out._replace(
            detection_masks=masks,
            panoptic_logits=torch.cat([stuff_logits, instance_logits], dim=1),
            boxes=detections.boxes,
            scores=detections.scores,
            classes=detections.classes,
            detection_embeddings=detections.embeddings,
        )

    def crop_masks(self, basis: Tensor, boxes: Tensor, embeddings: Tensor) -> Tensor:
        """Mask logits of instances inside their boxes.

        Args:
            basis: ``[B, D, h, w]`` ``F``.
            boxes: ``[B, K, 4]`` boxes in input pixels.
            embeddings: ``[B, K, E]``.

        Returns:
            ``[B, K, M, M]``.
        """
        batch, k = boxes.shape[:2]
        image = torch.arange(batch, device=boxes.device).repeat_interleave(k)
        crops = roi_align(
            basis,
            boxes.reshape(-1, 4).float() + corner_shift(self.basis_stride),
            image,
            self.mask_size,
            spatial_scale=1.0 / self.basis_stride,
        )
        logits = self.instance_module.mask_logits(embeddings.reshape(batch * k, -1), crops)
        return logits.view(batch, k, self.mask_size, self.mask_size)
