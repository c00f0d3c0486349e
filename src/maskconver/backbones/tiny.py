"""A small, fast CNN for tests, the synthetic preset and CPU experiments (no download)."""

from __future__ import annotations

from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.layers.conv import ConvNormAct, InvertedResidual
from maskconver.layers.types import ActLayer, NormLayer

NUM_STAGES = 4
STAGE_STRIDES = (4, 8, 16, 32)
MAX_CHANNELS = 512  # cap on the widest stage so large ``width`` values stay affordable
STEM_DIVISOR = 2  # the first stem conv has width // 2 channels
EXPANSION = 2  # inverted-residual expansion inside each stage


class TinyBackbone(Backbone):
    """Four stages at strides 4, 8, 16, 32 with channels ``(w, 2w, 4w, 8w)`` (capped at 512).

    Stem: 3x3/2 conv (w/2) -> 3x3/2 conv (w). Each stage: [3x3/2 conv to the stage width
    (stages 1-3)] -> 3x3 conv -> inverted residual (expand 2, depthwise 3x3, residual).
    About 60 M multiply-adds at 128x128 for ``width=32``.

    Args:
        width: channels of the first (stride-4) stage.
        norm_layer: norm constructor, called with the channel count.
        act_layer: activation constructor.
    """

    def __init__(
        self,
        *,
        width: int = 32,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        if width < STEM_DIVISOR:
            raise ValueError(f"TinyBackbone: width must be >= {STEM_DIVISOR}, got {width}")
        widths = tuple(min(width * 2**i, MAX_CHANNELS) for i in range(NUM_STAGES))
        stem_width = width // STEM_DIVISOR
        self.stem = nn.Sequential(
            ConvNormAct(3, stem_width, 3, stride=2, norm_layer=norm_layer, act_layer=act_layer),
            ConvNormAct(stem_width, width, 3, stride=2, norm_layer=norm_layer, act_layer=act_layer),
        )
        stages: list[nn.Module] = []
        in_ch = width
        for i, out_ch in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(
                    ConvNormAct(
                        in_ch, out_ch, 3, stride=2, norm_layer=norm_layer, act_layer=act_layer
                    )
                )
            layers.append(
                ConvNormAct(out_ch, out_ch, 3, norm_layer=norm_layer, act_layer=act_layer)
            )
            layers.append(
                InvertedResidual(
                    out_ch,
                    out_ch,
                    expanded_ch=EXPANSION * out_ch,
                    kernel_size=3,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                )
            )
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.channels = widths
        self.strides = STAGE_STRIDES

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> four maps ``[B, channels[i], ceil(H/s_i), ceil(W/s_i)]``."""
        x = self.stem(images)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
