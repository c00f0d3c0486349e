"""Training-only semantic heads owned by ``KMaXCriterion`` (never in the model or its export).

* ``KMaXSemanticHead``: kMaX-DeepLab's auxiliary semantic head, a Panoptic-DeepLab single
  decoder: ASPP on the coarsest backbone map, fused top-down with the two finest backbone maps
  of stride >= 4 (projected to 64 and 32 channels, deeplab2's res3 / res2), then a head to C
  logits. Each fusion and the head use a 5x5 depthwise-separable conv (norm + activation after
  the depthwise and the pointwise conv), as Panoptic-DeepLab's decoder does.
* ``StageSemanticHead``: ReMaX's per-stage semantic head, "an ASPP module and a 1x1 convolution"
  (ReMaX section 3.1) on the feature map one transformer-decoder block cross-attends to.

Upsampling is corner-aligned (``layers.resample``), like the strided-slicing targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from maskconver.decoders.aspp import ASPP
from maskconver.layers.conv import ConvNormAct
from maskconver.layers.resample import upsample_to
from maskconver.layers.types import ActLayer, NormLayer

LOW_LEVEL_CHANNELS = (64, 32)  # projections of the fused maps, coarse to fine (deeplab2)
SEPARABLE_KERNEL = 5  # Panoptic-DeepLab's fusion / head depthwise kernel
MASK_STRIDE = 4  # the semantic logits end at the mask logits' stride


def separable_block(
    in_channels: int, out_channels: int, norm_layer: NormLayer, act_layer: ActLayer
) -> nn.Sequential:
    """5x5 depthwise conv + norm + act, then 1x1 conv + norm + act."""
    return nn.Sequential(
        ConvNormAct(
            in_channels,
            in_channels,
            SEPARABLE_KERNEL,
            groups=in_channels,
            norm_layer=norm_layer,
            act_layer=act_layer,
        ),
        ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer, act_layer=act_layer),
    )


def upsample_to_size(x: Tensor, size: Sequence[int]) -> Tensor:
    """Corner-aligned upsampling of ``[B, C, h, w]`` to ``[B, C, *size]`` by a power of two.

    The factor is the smallest power of two that covers ``size`` (then the right and bottom are
    cropped); for maps of ``ceil(H / s)`` pixels from an input of ``H >= s`` pixels this is
    ``s / 4`` exactly.
    """
    h, w = x.shape[-2:]
    factor = 1
    while factor * h < size[0] or factor * w < size[1]:
        factor *= 2
    return upsample_to(x, size, factor=factor)


class KMaXSemanticHead(nn.Module):
    """kMaX's auxiliary semantic head on the backbone maps (see the module docstring).

    Args:
        backbone_channels: channels of the backbone maps, fine to coarse.
        backbone_strides: their strides (the fused ones must be multiples of 4).
        num_classes: C.
        channels: ASPP, fusion and head width (256 in deeplab2).
        aspp_rates: ASPP atrous rates.
        norm_layer: ``norm_layer(C)`` builds a norm module.
        act_layer: ``act_layer()`` builds an activation module.
    """

    def __init__(
        self,
        *,
        backbone_channels: Sequence[int],
        backbone_strides: Sequence[int],
        num_classes: int,
        channels: int,
        aspp_rates: Sequence[int],
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        strides = [int(s) for s in backbone_strides]
        if not strides or len(strides) != len(backbone_channels):
            raise ValueError(
                f"KMaXSemanticHead: backbone_channels {list(backbone_channels)} and "
                f"backbone_strides {strides} must be non-empty and of equal length"
            )
        self.coarsest = max(range(len(strides)), key=lambda i: strides[i])
        finer = [i for i in range(len(strides)) if i != self.coarsest and strides[i] >= MASK_STRIDE]
        finest = sorted(finer, key=lambda i: strides[i])[: len(LOW_LEVEL_CHANNELS)]
        self.low_level = sorted(finest, key=lambda i: -strides[i])  # coarse to fine
        used = [self.coarsest, *self.low_level]
        if any(strides[i] % MASK_STRIDE for i in used):
            raise ValueError(
                f"KMaXSemanticHead: backbone strides {strides} must be multiples of "
                f"{MASK_STRIDE} for the maps it fuses"
            )
        self.strides = strides
        self.aspp = ASPP(
            backbone_channels[self.coarsest],
            in_stride=strides[self.coarsest],
            channels=channels,
            dilation_rates=aspp_rates,
            depthwise=False,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        self.project = nn.ModuleList(
            ConvNormAct(backbone_channels[i], c, 1, norm_layer=norm_layer, act_layer=act_layer)
            for i, c in zip(self.low_level, LOW_LEVEL_CHANNELS)
        )
        self.fuse = nn.ModuleList(
            separable_block(channels + c, channels, norm_layer, act_layer)
            for c in LOW_LEVEL_CHANNELS[: len(self.low_level)]
        )
        self.head = nn.Sequential(
            separable_block(channels, channels, norm_layer, act_layer),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Backbone maps ``[B, C_i, h_i, w_i]`` (fine to coarse) -> ``[B, C, *size]`` logits."""
        x = self.aspp([features[self.coarsest]])[0]
        stride = self.strides[self.coarsest]
        for index, project, fuse in zip(self.low_level, self.project, self.fuse):
            low = project(features[index])
            x = upsample_to(x, low.shape[-2:], factor=stride // self.strides[index])
            x = fuse(torch.cat([x, low], dim=1))
            stride = self.strides[index]
        return upsample_to(self.head(x), size, factor=stride // MASK_STRIDE)


class StageSemanticHead(nn.Module):
    """ReMaX's semantic head of one decoder stage: ASPP then a 1x1 conv to C logits.

    Args:
        in_channels: channels of the stage's feature map.
        num_classes: C.
        channels: ASPP width.
        aspp_rates: ASPP atrous rates.
        norm_layer: ``norm_layer(C)`` builds a norm module.
        act_layer: ``act_layer()`` builds an activation module.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int,
        channels: int,
        aspp_rates: Sequence[int],
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(
            in_channels,
            channels=channels,
            dilation_rates=aspp_rates,
            depthwise=False,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        """``[B, C_i, h_i, w_i]`` -> ``[B, C, *size]`` logits (corner-aligned upsampling)."""
        return upsample_to_size(self.classifier(self.aspp([x])[0]), size)
