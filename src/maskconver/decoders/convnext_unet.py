"""ConvNeXt-UNet as a decoder over any backbone (MaskConver section 3.2, Table 2).

The top-down path of the reference ``resnet_unet`` (``layers/unet.py``: lateral 1x1 + LayerNorm,
upsampled coarser level + 1x1 + LayerNorm, ConvNeXt-SE blocks, act) on the backbone levels from
the coarsest down to ``min_level``, all at one width; levels above the backbone up to
``max_level`` by stride-2 3x3 convs + LayerNorm. The ResNet-50 + UNet of the headline model is
the ``resnet50_unet`` backbone; this decoder puts the same blocks behind any backbone so the
decoder table can be compared at equal backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import Tensor, nn

from maskconver.decoders.base import Decoder
from maskconver.decoders.pyramid import EXTRA_KERNEL, backbone_level_indices, output_plan
from maskconver.layers.norm import LayerNorm2d
from maskconver.layers.types import ActLayer
from maskconver.layers.unet import LAYER_NORM_EPS, UNetLevel


class ConvNeXtUNet(Decoder):
    """UNet top-down levels ``min_level``..top, then stride-2 extra levels to ``max_level``.

    Args:
        in_channels: backbone channels, fine to coarse.
        in_strides: backbone strides (powers of two).
        channels: width of every level.
        min_level: finest output level.
        max_level: coarsest output level.
        repeats: ConvNeXt-SE blocks per backbone level, coarsest first (reference: 18, 1, 1);
            a shorter list is padded with its last value.
        kernel_size: depthwise kernel of the blocks.
        se_ratio: SE ratio of the blocks.
        drop_path: stochastic depth of every block.
        act_layer: activation after each level's blocks.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        *,
        channels: int = 64,
        min_level: int = 3,
        max_level: int = 5,
        repeats: Sequence[int] = (2, 1, 1),
        kernel_size: int = 7,
        se_ratio: float = 0.0625,
        drop_path: float = 0.0,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        if not repeats:
            raise ValueError("ConvNeXtUNet: repeats needs at least one entry")
        indices = backbone_level_indices(in_strides, min_level)
        num_smoothed, num_extra = output_plan(len(indices), min_level, max_level)
        self.input_indices = indices
        self.num_outputs = num_smoothed
        counts = [repeats[min(i, len(repeats) - 1)] for i in range(len(indices))]
        self.levels = nn.ModuleList(
            UNetLevel(
                in_channels[indices[-1 - i]],
                channels,
                top_down_ch=channels if i > 0 else None,
                repeats=counts[i],
                kernel_size=kernel_size,
                se_ratio=se_ratio,
                drop_path=drop_path,
                act_layer=act_layer,
            )
            for i in range(len(indices))
        )
        norm = partial(LayerNorm2d, eps=LAYER_NORM_EPS)
        self.extra = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, EXTRA_KERNEL, stride=2, padding=EXTRA_KERNEL // 2),
                norm(channels),
            )
            for _ in range(num_extra)
        )
        num_levels = num_smoothed + num_extra
        self.channels = (channels,) * num_levels
        self.strides = tuple(2**lv for lv in range(min_level, min_level + num_levels))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Backbone maps, fine to coarse -> per level ``[B, channels, h_l, w_l]``."""
        outputs: list[Tensor] = []
        coarser: Tensor | None = None
        for level, index in zip(self.levels, reversed(self.input_indices), strict=True):
            coarser = level(features[index], coarser)
            outputs.insert(0, coarser)
        outputs = outputs[: self.num_outputs]
        for conv in self.extra:
            outputs.append(conv(outputs[-1]))
        return outputs
