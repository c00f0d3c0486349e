"""MobileNet-MH (``MobileNetMultiAVGSeg``), the backbone of the efficient MaskConver models.

Reference section 1.3: blocks 0-17 of TF Model Garden's ``MNMultiAVG_SEG_BLOCK_SPECS`` (the
ImageNet classifier blocks 18-19 are not built). All activations ReLU, no SE. Inverted
bottlenecks expand to ``make_divisible(in * expand, 8)`` and add a residual when the stride is
1 and ``in == out``. With ``output_stride=16`` the stride-2 block 13 runs at stride 1 and every
depthwise conv from block 13 on is dilated by 2 (pitfall 13). About 1.63 M parameters.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.layers.conv import ConvNormAct, InvertedResidual, make_divisible
from maskconver.layers.types import ActLayer, NormLayer

SUPPORTED_OUTPUT_STRIDES = (16, 32)


class BlockSpec(NamedTuple):
    """One row of the reference table."""

    kind: str  # "conv" (conv-bn-act) or "ib" (inverted bottleneck)
    kernel_size: int
    stride: int
    out_channels: int
    expand: int  # expand ratio of an inverted bottleneck (unused for "conv")
    is_output: bool


# fmt: off
BLOCK_SPECS: tuple[BlockSpec, ...] = (
    BlockSpec("conv", 3, 2, 32, 0, False),   # 0
    BlockSpec("ib", 3, 2, 32, 3, False),     # 1
    BlockSpec("ib", 3, 1, 32, 2, True),      # 2  -> L2 (stride 4)
    BlockSpec("ib", 5, 2, 64, 5, False),     # 3
    BlockSpec("ib", 3, 1, 64, 3, False),     # 4
    BlockSpec("ib", 3, 1, 64, 2, False),     # 5
    BlockSpec("ib", 3, 1, 64, 3, True),      # 6  -> L3 (stride 8)
    BlockSpec("ib", 5, 2, 128, 6, False),    # 7
    BlockSpec("ib", 3, 1, 128, 3, False),    # 8
    BlockSpec("ib", 3, 1, 128, 3, False),    # 9
    BlockSpec("ib", 3, 1, 128, 3, False),    # 10
    BlockSpec("ib", 3, 1, 160, 6, False),    # 11
    BlockSpec("ib", 3, 1, 160, 4, False),    # 12 (L4 endpoint of the classifier net)
    BlockSpec("ib", 3, 2, 192, 6, False),    # 13 (dilated instead of strided at OS 16)
    BlockSpec("ib", 5, 1, 96, 2, False),     # 14
    BlockSpec("ib", 5, 1, 96, 4, False),     # 15
    BlockSpec("ib", 5, 1, 96, 4, False),     # 16
    BlockSpec("conv", 1, 1, 448, 0, True),   # 17 -> last endpoint (stride 16 or 32)
)
# fmt: on


class MobileNetMH(Backbone):
    """MobileNet-MH feature extractor returning ``[L2, L3, last]``.

    Channels ``(32, 64, 448)``; strides ``(4, 8, 16)`` at output stride 16, ``(4, 8, 32)`` at 32.
    The last map is the 448-channel 1x1 conv output (not the 160-channel stage output).

    Args:
        output_stride: 16 (dilate the last stage, as the reference) or 32.
        norm_layer: norm constructor (reference: BN eps 1e-3, momentum 0.01).
        act_layer: activation constructor (ReLU in the reference).
    """

    def __init__(
        self,
        *,
        output_stride: int = 16,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        if output_stride not in SUPPORTED_OUTPUT_STRIDES:
            raise ValueError(
                f"MobileNetMH: output_stride must be one of {SUPPORTED_OUTPUT_STRIDES}, "
                f"got {output_stride}"
            )
        blocks: list[nn.Module] = []
        output_indices: list[int] = []
        channels: list[int] = []
        strides: list[int] = []
        in_ch = 3
        current_stride = 1
        dilation = 1
        for index, spec in enumerate(BLOCK_SPECS):
            stride = spec.stride
            if current_stride == output_stride and stride > 1:
                # Replace the stride by dilation, already for this formerly strided block.
                dilation *= stride
                stride = 1
            current_stride *= stride
            if spec.kind == "conv":
                block: nn.Module = ConvNormAct(
                    in_ch,
                    spec.out_channels,
                    spec.kernel_size,
                    stride=stride,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                )
            else:
                block = InvertedResidual(
                    in_ch,
                    spec.out_channels,
                    expanded_ch=make_divisible(in_ch * spec.expand),
                    kernel_size=spec.kernel_size,
                    stride=stride,
                    dilation=dilation,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                )
            blocks.append(block)
            if spec.is_output:
                output_indices.append(index)
                channels.append(spec.out_channels)
                strides.append(current_stride)
            in_ch = spec.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.output_indices = tuple(output_indices)
        self.channels = tuple(channels)
        self.strides = tuple(strides)
        self.output_stride = output_stride

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> ``[L2 [B,32,H/4,W/4], L3 [B,64,H/8,W/8], [B,448,H/os,W/os]]``."""
        features = []
        x = images
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.output_indices:
                features.append(x)
        return features
