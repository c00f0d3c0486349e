"""kMaX-DeepLab: backbone -> kMaX pixel decoder -> k-means transformer decoder -> predictions.

``KMaXDeepLab`` is built from parts (``meta/kmax/build.py`` reads the config). The forward is
the same in train and eval: ``N`` learned cluster centres pass through the transformer-decoder
blocks (each attends to one pixel-decoder map and emits an auxiliary prediction), and a final
predictor gives the class and mask logits. Panoptic maps come from the post-processor; losses
(Hungarian matching, PQ-style, mask-ID, instance discrimination, the auxiliary semantic head,
ReMaX) live in the criterion.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.layers.image import IMAGENET_MEAN, IMAGENET_STD
from maskconver.layers.types import ActLayer, NormLayer
from maskconver.meta.kmax.outputs import KMaXOutput
from maskconver.meta.kmax.pixel_decoder import KMaXPixelDecoder
from maskconver.meta.kmax.transformer import KMaXBlock, KMaXPredictor

QUERY_INIT_STD = 1.0  # deeplab2 draws the cluster centres from N(0, 1)


class PixelHead(nn.Module):
    """Stride-4 pixel features: depthwise 5x5 + norm + act, 1x1 to ``E`` + norm, unit L2 norm.

    Args:
        in_channels: channels of the finest pixel-decoder map.
        dim: ``E``.
        norm_layer: norm constructor.
        act_layer: activation constructor.
    """

    def __init__(
        self, in_channels: int, dim: int, *, norm_layer: NormLayer, act_layer: ActLayer
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 5, padding=2, groups=in_channels, bias=False),
            norm_layer(in_channels),
            act_layer(),
            nn.Conv2d(in_channels, dim, 1, bias=False),
            norm_layer(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[B, Ci, h4, w4]`` -> ``[B, E, h4, w4]`` with unit norm over ``E`` at every pixel."""
        return F.normalize(self.body(x), dim=1)


class KMaXDeepLab(nn.Module):
    """kMaX-DeepLab (see the module docstring).

    Args:
        backbone: feature extractor (maps fine to coarse).
        pixel_decoder: ``KMaXPixelDecoder`` over the backbone's maps (outputs coarse to fine,
            the last at stride 4).
        pixel_head: ``PixelHead`` on the decoder's finest map.
        blocks: the transformer-decoder blocks, in order.
        block_stages: per block, the index of the pixel-decoder output it attends to.
        predictor: the final ``KMaXPredictor``.
        num_queries: ``N``.
        query_dim: ``D``.
        pixel_mean: RGB mean (0..255 units) subtracted from the input.
        pixel_std: RGB std the input is divided by.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        pixel_decoder: KMaXPixelDecoder,
        pixel_head: PixelHead,
        blocks: Sequence[KMaXBlock],
        block_stages: Sequence[int],
        predictor: KMaXPredictor,
        num_queries: int,
        query_dim: int,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if len(blocks) != len(block_stages):
            raise ValueError(f"KMaXDeepLab: {len(blocks)} blocks, {len(block_stages)} stages")
        stages = len(pixel_decoder.channels)
        if any(not 0 <= s < stages for s in block_stages):
            raise ValueError(f"KMaXDeepLab: block stages {list(block_stages)} not in [0, {stages})")
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.pixel_head = pixel_head
        self.blocks = nn.ModuleList(blocks)
        self.block_stages = tuple(block_stages)
        self.predictor = predictor
        self.queries = nn.Parameter(torch.randn(num_queries, query_dim) * QUERY_INIT_STD)
        self.num_queries = num_queries
        self.min_train_batch = 2  # batch norms over the queries and the mask logits
        self.pixel_mean: Tensor
        self.pixel_std: Tensor
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, images: Tensor) -> KMaXOutput:
        """Run the network.

        Args:
            images: ``[B, 3, H, W]`` float RGB in 0..255 (padding filled with the mean colour).

        Returns:
            ``KMaXOutput``: final class logits ``[B, N, C + 1]`` and mask logits
            ``[B, N, h4, w4]``, the pixel features ``[B, E, h4, w4]``, one auxiliary prediction
            and one attended pixel-decoder map per block, and the backbone maps.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"KMaXDeepLab: images must be [B, 3, H, W], got {tuple(images.shape)}")
        x = (images - self.pixel_mean) / self.pixel_std
        features = self.backbone(x)
        decoded = self.pixel_decoder(features)
        pixel_features = self.pixel_head(decoded[-1])
        queries = self.queries[None].repeat(images.shape[0], 1, 1)  # a copy, not a view
        aux_classes, aux_masks, attended = [], [], []
        for block, stage in zip(self.blocks, self.block_stages):
            queries, class_logits, mask_logits = block(queries, decoded[stage], pixel_features)
            aux_classes.append(class_logits)
            aux_masks.append(mask_logits)
            attended.append(decoded[stage])
        class_logits, mask_logits = self.predictor(queries, pixel_features)
        return KMaXOutput(
            class_logits=class_logits,
            mask_logits=mask_logits,
            pixel_features=pixel_features,
            aux_class_logits=tuple(aux_classes),
            aux_mask_logits=tuple(aux_masks),
            stage_features=tuple(attended),
            backbone_features=tuple(features),
        )
