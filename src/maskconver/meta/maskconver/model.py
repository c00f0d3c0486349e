"""MaskConver meta-architecture: backbone -> decoder -> three heads -> mask embeddings -> masks.

Reference sections 1.2 (single-scale) and 1.7 (multi-scale). The same forward serves training
(teacher forcing with ground-truth center indices and classes) and inference (top-K peaks), and
returns the same ``MaskConverOutput`` in both modes. Losses and panoptic merging live elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from maskconver.decoders.base import Decoder
from maskconver.layers.image import IMAGENET_MEAN, IMAGENET_STD
from maskconver.meta.maskconver.heads.mask_embedding import MaskEmbeddingGenerator
from maskconver.meta.maskconver.outputs import MaskConverOutput
from maskconver.meta.maskconver.peaks import find_peaks, gather_at_centers, hard_sigmoid


class MaskConver(nn.Module):
    """Panoptic segmentation with pure convolutions.

    Every fusion is called as ``fusion(backbone_features, decoder_features) -> list[Tensor]`` and
    every head as ``head(levels) -> list[Tensor]``.

    Args:
        backbone: ``images -> list[Tensor]`` fine to coarse.
        decoder: ``backbone features -> list[Tensor]``.
        center_fusion: input levels of the center-heatmap head.
        embedding_fusion: input levels of the center-embedding head (same levels as centers).
        pixel_fusion: input of the pixel-embedding head (one level: the mask resolution).
        center_head: -> per level ``[B, C, h_l, w_l]`` heatmap logits.
        embedding_head: -> per level ``[B, E, h_l, w_l]`` center embeddings.
        pixel_head: -> ``[[B, E, hm, wm]]`` pixel embeddings.
        mask_embedding: class-conditioned MLP and mask-logit product.
        num_proposals: K, the number of peaks taken at inference.
        pixel_mean: RGB mean in 0..255 units.
        pixel_std: RGB std in 0..255 units.
        hard_sigmoid: score peaks with ``relu6(x + 3) / 6`` (hardware-friendly) instead of sigmoid.
        semantic_head: optional per-pixel classifier on the pixel embeddings (region-based stuff,
            MaskConver Table 7); its logits are returned as ``semantic_logits``.

    Attributes:
        min_train_batch: the decoder's smallest useful number of images per training forward.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        decoder: Decoder,
        center_fusion: nn.Module,
        embedding_fusion: nn.Module,
        pixel_fusion: nn.Module,
        center_head: nn.Module,
        embedding_head: nn.Module,
        pixel_head: nn.Module,
        mask_embedding: MaskEmbeddingGenerator,
        num_proposals: int,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        hard_sigmoid: bool = False,
        semantic_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if num_proposals < 1:
            raise ValueError(f"MaskConver: num_proposals must be >= 1, got {num_proposals}")
        self.backbone = backbone
        self.decoder = decoder
        self.center_fusion = center_fusion
        self.embedding_fusion = embedding_fusion
        self.pixel_fusion = pixel_fusion
        self.center_head = center_head
        self.embedding_head = embedding_head
        self.pixel_head = pixel_head
        self.mask_embedding = mask_embedding
        self.num_proposals = num_proposals
        self.hard_sigmoid = hard_sigmoid
        self.min_train_batch = decoder.min_train_batch
        self.semantic_head = semantic_head
        self.pixel_mean: Tensor
        self.pixel_std: Tensor
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False
        )

    def forward(
        self,
        images: Tensor,
        center_indices: Tensor | None = None,
        classes: Tensor | None = None,
    ) -> MaskConverOutput:
        """Run the network.

        Args:
            images: ``[B, 3, H, W]`` float RGB in 0..255 (padding filled with the mean colour).
            center_indices: ``[B, K]`` int64 ground-truth flat center indices into the level-major
                concatenation of the heatmaps (teacher forcing); None at inference.
            classes: ``[B, K]`` int64 ground-truth class indices (-1 for empty slots); given
                together with ``center_indices``.

        Returns:
            ``MaskConverOutput`` with ``center_logits`` per level ``[B, C, h_l, w_l]``,
            ``mask_logits [B, K, hm, wm]`` at the pixel head's resolution, ``scores``,
            ``classes`` (clamped >= 0) and ``center_indices`` ``[B, K]``, and the
            ``pixel_embeddings [B, E, hm, wm]`` (mask features).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"MaskConver: images must be [B, 3, H, W], got {tuple(images.shape)}")
        if (center_indices is None) != (classes is None):
            raise ValueError("MaskConver: pass center_indices and classes together (or neither)")
        x = (images - self.pixel_mean) / self.pixel_std
        features = self.backbone(x)
        decoded = self.decoder(features)
        center_logits = self.center_head(self.center_fusion(features, decoded))
        center_embeddings = self.embedding_head(self.embedding_fusion(features, decoded))
        (pixel_embeddings,) = self.pixel_head(self.pixel_fusion(features, decoded))

        if center_indices is None or classes is None:
            scores, classes, center_indices = find_peaks(
                center_logits, self.num_proposals, hard_sigmoid=self.hard_sigmoid
            )
        else:
            center_indices, classes = self._check_teacher(center_logits, center_indices, classes)
            scores = self._scores_at(center_logits, center_indices, classes)

        gathered = gather_at_centers(center_embeddings, center_indices)  # [B, K, E]
        mask_embeddings = self.mask_embedding(gathered, classes)
        mask_logits = self.mask_embedding.mask_logits(mask_embeddings, pixel_embeddings)
        return MaskConverOutput(
            center_logits=tuple(center_logits),
            mask_logits=mask_logits,
            scores=scores,
            classes=classes,
            center_indices=center_indices,
            pixel_embeddings=pixel_embeddings,
            semantic_logits=(
                self.semantic_head(pixel_embeddings) if self.semantic_head is not None else None
            ),
        )

    @staticmethod
    def _check_teacher(
        center_logits: list[Tensor], center_indices: Tensor, classes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Validate ground-truth slots; returns int64 indices and classes clamped at 0."""
        batch = center_logits[0].shape[0]
        if center_indices.shape != classes.shape or center_indices.ndim != 2:
            raise ValueError(
                "MaskConver: center_indices and classes must both be [B, K], got "
                f"{tuple(center_indices.shape)} and {tuple(classes.shape)}"
            )
        if center_indices.shape[0] != batch:
            raise ValueError(
                f"MaskConver: teacher batch {center_indices.shape[0]} != images {batch}"
            )
        num_positions = sum(x.shape[-2] * x.shape[-1] for x in center_logits)
        num_classes = center_logits[0].shape[1]
        if center_indices.numel() > 0:
            if int(center_indices.min()) < 0 or int(center_indices.max()) >= num_positions:
                raise ValueError(
                    f"MaskConver: center_indices must be in [0, {num_positions}) for these heatmaps"
                )
            if int(classes.max()) >= num_classes:
                raise ValueError(f"MaskConver: classes must be < num_classes={num_classes}")
        return center_indices.long(), classes.long().clamp(min=0)

    def _scores_at(self, center_logits: list[Tensor], indices: Tensor, classes: Tensor) -> Tensor:
        """Heatmap probability at each (flat index, class): ``[B, K]``."""
        at_center = gather_at_centers(center_logits, indices)  # [B, K, C]
        logits = at_center.gather(2, classes[:, :, None]).squeeze(2)
        return hard_sigmoid(logits) if self.hard_sigmoid else logits.sigmoid()
