"""Atrous spatial pyramid pooling on the coarsest backbone map (reference section 1.4).

DeepLabv3 ``spp_layer_version v1`` with the efficient depthwise branches of the MobileNet
MaskConver configs. The DeepLabv3+ low-level merge lives in each head's ``SumToMerge`` fusion.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.decoders.base import Decoder
from maskconver.layers.conv import ConvNormAct
from maskconver.layers.init import variance_scaling_init
from maskconver.layers.types import ActLayer, NormLayer

ATROUS_KERNEL = 3


class _DepthwiseAtrous(nn.Sequential):
    """3x3 depthwise dilated conv (no norm/act) -> 1x1 conv + norm + act."""

    def __init__(
        self, in_channels: int, channels: int, rate: int, norm_layer: NormLayer, act_layer: ActLayer
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                ATROUS_KERNEL,
                padding=rate,
                dilation=rate,
                groups=in_channels,
                bias=False,
            ),
            ConvNormAct(in_channels, channels, 1, norm_layer=norm_layer, act_layer=act_layer),
        )


class _ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv + norm + act -> resize back (a broadcast).

    The pooled map is broadcast to ``H x W`` BEFORE the norm: batch statistics are unchanged (every
    value is replicated equally), but batch norm then also trains with a batch of one image. The
    broadcast is a nearest resize of the ``1 x 1`` map (an exact copy, the same values as
    ``expand``): ``expand`` exports to TFLite's BROADCAST_TO, whose kernel refuses the shapes.
    """

    def __init__(
        self, in_channels: int, channels: int, norm_layer: NormLayer, act_layer: ActLayer
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.norm = norm_layer(channels)
        self.act = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, channels, H, W]`` (constant per image)."""
        pooled = self.conv(x.mean(dim=(2, 3), keepdim=True))
        tiled = F.interpolate(pooled, size=x.shape[-2:], mode="nearest")
        return self.act(self.norm(tiled))


class ASPP(Decoder):
    """ASPP applied to the LAST (coarsest) backbone map.

    Branches (concatenated): 1x1 conv; one atrous branch per rate (depthwise: 3x3 depthwise
    dilated conv with no norm/act, then 1x1 + norm + act; dense: 3x3 dilated conv + norm + act);
    image pooling. Then a 1x1 projection + norm + act + dropout.

    ``min_train_batch`` is 2 when the image-pooling branch uses batch norm: with one image per
    forward its pooled channel is constant, so the normalised branch is zero.

    Args:
        in_channels: channels of the coarsest backbone map.
        in_stride: its stride (reported as ``strides``).
        channels: branch and output width (256 in the reference).
        dilation_rates: atrous rates (6, 12, 18 in the reference).
        depthwise: depthwise-separable atrous branches (reference MobileNet configs).
        dropout: dropout after the projection.
        norm_layer: ``norm_layer(C)`` builds a norm module.
        act_layer: ``act_layer()`` builds an activation module.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        in_stride: int = 16,
        channels: int = 256,
        dilation_rates: Sequence[int] = (6, 12, 18),
        depthwise: bool = True,
        dropout: float = 0.0,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        if any(r < 1 for r in dilation_rates):
            raise ValueError(f"ASPP: dilation rates must be >= 1, got {list(dilation_rates)}")
        self.channels = (channels,)
        self.strides = (in_stride,)
        branches: list[nn.Module] = [
            ConvNormAct(in_channels, channels, 1, norm_layer=norm_layer, act_layer=act_layer)
        ]
        for rate in dilation_rates:
            if depthwise:
                branches.append(
                    _DepthwiseAtrous(in_channels, channels, rate, norm_layer, act_layer)
                )
            else:
                branches.append(
                    ConvNormAct(
                        in_channels,
                        channels,
                        ATROUS_KERNEL,
                        dilation=rate,
                        norm_layer=norm_layer,
                        act_layer=act_layer,
                    )
                )
        pooling = _ImagePooling(in_channels, channels, norm_layer, act_layer)
        branches.append(pooling)
        self.branches = nn.ModuleList(branches)
        self.project = ConvNormAct(
            channels * len(branches), channels, 1, norm_layer=norm_layer, act_layer=act_layer
        )
        self.dropout = nn.Dropout(dropout)
        variance_scaling_init(self)
        batch_norm = isinstance(pooling.norm, nn.modules.batchnorm._BatchNorm)
        self.min_train_batch = 2 if batch_norm else 1

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Args: backbone maps, fine to coarse; only ``features[-1]`` ``[B, C, h, w]`` is used.

        Returns:
            ``[[B, channels, h, w]]``.
        """
        x = features[-1]
        out = torch.cat([branch(x) for branch in self.branches], dim=1)
        return [self.dropout(self.project(out))]
