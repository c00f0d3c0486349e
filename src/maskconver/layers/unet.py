"""One top-down level of the ConvNeXt-UNet (reference ``resnet_unet``).

Shared by the ResNet-UNet backbone and the ``convnext_unet`` decoder.

lateral: 1x1 conv (no bias) + LayerNorm (eps 1e-6); with a coarser input: 1x1 conv (no bias) +
LayerNorm, nearest upsample to the lateral's size, + lateral; then ``repeats`` ConvNeXt-SE
blocks and the activation.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.layers.convnext import ConvNeXtSEBlock
from maskconver.layers.init import variance_scaling_init
from maskconver.layers.norm import LayerNorm2d
from maskconver.layers.types import ActLayer

LAYER_NORM_EPS = 1e-6


class UNetLevel(nn.Module):
    """One top-down level: lateral (+ upsampled top-down input), ConvNeXt-SE blocks, act.

    Args:
        in_ch: channels of the ResNet map of this level.
        out_ch: output channels of the level.
        top_down_ch: channels of the coarser level's output, ``None`` at the top (L5).
        repeats: number of ConvNeXt-SE blocks.
        kernel_size: depthwise kernel size of the blocks.
        se_ratio: SE ratio of the blocks.
        drop_path: drop-path probability of every block of this level.
        act_layer: activation applied after the blocks.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        top_down_ch: int | None,
        repeats: int,
        kernel_size: int,
        se_ratio: float,
        drop_path: float,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        self.lateral = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, bias=False), LayerNorm2d(out_ch, LAYER_NORM_EPS)
        )
        self.top_down: nn.Module | None = None
        if top_down_ch is not None:
            self.top_down = nn.Sequential(
                nn.Conv2d(top_down_ch, out_ch, 1, bias=False), LayerNorm2d(out_ch, LAYER_NORM_EPS)
            )
        variance_scaling_init(self)
        self.blocks = nn.Sequential(
            *(
                ConvNeXtSEBlock(
                    out_ch, kernel_size=kernel_size, se_ratio=se_ratio, drop_path=drop_path
                )
                for _ in range(repeats)
            )
        )
        self.act = act_layer()

    def forward(self, lateral: Tensor, coarser: Tensor | None = None) -> Tensor:
        """Fuse ``lateral`` ``[B, in_ch, H, W]`` with ``coarser`` ``[B, top_down_ch, h, w]``.

        Returns:
            ``[B, out_ch, H, W]``.
        """
        x = self.lateral(lateral)
        if self.top_down is not None:
            if coarser is None:
                raise ValueError("UNetLevel: this level needs the coarser level's output")
            x = x + F.interpolate(self.top_down(coarser), size=x.shape[-2:], mode="nearest")
        return self.act(self.blocks(x))
