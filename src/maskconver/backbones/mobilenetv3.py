"""MobileNetV3-Large and -Small feature extractors with torchvision's parameter names.

The module tree mirrors torchvision's ``mobilenet_v3_large().features`` (``features.0`` stem,
``features.1``-``features.15`` inverted residuals with ``block.N`` children and SE ``fc1/fc2``,
``features.16`` the 1x1 conv to 960) and ``mobilenet_v3_small().features`` (``features.1``-
``features.11``, ``features.12`` the 1x1 conv to 576), so their ImageNet weights load without
renaming. The classifiers are not built. 2,971,952 (Large) and 927,008 (Small) parameters at
``width_mult=1.0``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.layers.conv import ConvNormAct, InvertedResidual, make_divisible
from maskconver.layers.se import SqueezeExcitation
from maskconver.layers.types import NormLayer

SUPPORTED_OUTPUT_STRIDES = (16, 32)
BN_EPS = 1e-3  # torchvision's MobileNetV3 batch-norm hyper-parameters
BN_MOMENTUM = 0.01
STEM_CHANNELS = 16
LAST_CONV_EXPANSION = 6  # features.16 widens the last block's 160 channels to 960
SE_SQUEEZE_DIVISOR = 4
DILATION = 2  # dilation of the last stage at output stride 16


class BlockConfig(NamedTuple):
    """One inverted residual of the torchvision table."""

    in_ch: int
    kernel_size: int
    expanded_ch: int
    out_ch: int
    use_se: bool
    use_hardswish: bool
    stride: int


# fmt: off
LARGE_BLOCKS: tuple[BlockConfig, ...] = (
    BlockConfig(16, 3, 16, 16, False, False, 1),     # features.1
    BlockConfig(16, 3, 64, 24, False, False, 2),     # features.2
    BlockConfig(24, 3, 72, 24, False, False, 1),     # features.3  -> stride 4
    BlockConfig(24, 5, 72, 40, True, False, 2),      # features.4
    BlockConfig(40, 5, 120, 40, True, False, 1),     # features.5
    BlockConfig(40, 5, 120, 40, True, False, 1),     # features.6  -> stride 8
    BlockConfig(40, 3, 240, 80, False, True, 2),     # features.7
    BlockConfig(80, 3, 200, 80, False, True, 1),     # features.8
    BlockConfig(80, 3, 184, 80, False, True, 1),     # features.9
    BlockConfig(80, 3, 184, 80, False, True, 1),     # features.10
    BlockConfig(80, 3, 480, 112, True, True, 1),     # features.11
    BlockConfig(112, 3, 672, 112, True, True, 1),    # features.12 -> stride 16
    BlockConfig(112, 5, 672, 160, True, True, 2),    # features.13 (dilated at OS 16)
    BlockConfig(160, 5, 960, 160, True, True, 1),    # features.14
    BlockConfig(160, 5, 960, 160, True, True, 1),    # features.15
)
# fmt: on
OUTPUT_FEATURE_INDICES = (3, 6, 12, 16)  # indices into ``features`` of the returned maps
DILATED_FROM = 13  # first ``features`` index of the last stage

# fmt: off
SMALL_BLOCKS: tuple[BlockConfig, ...] = (
    BlockConfig(16, 3, 16, 16, True, False, 2),      # features.1  -> stride 4
    BlockConfig(16, 3, 72, 24, False, False, 2),     # features.2
    BlockConfig(24, 3, 88, 24, False, False, 1),     # features.3  -> stride 8
    BlockConfig(24, 5, 96, 40, True, True, 2),       # features.4
    BlockConfig(40, 5, 240, 40, True, True, 1),      # features.5
    BlockConfig(40, 5, 240, 40, True, True, 1),      # features.6
    BlockConfig(40, 5, 120, 48, True, True, 1),      # features.7
    BlockConfig(48, 5, 144, 48, True, True, 1),      # features.8  -> stride 16
    BlockConfig(48, 5, 288, 96, True, True, 2),      # features.9  (dilated at OS 16)
    BlockConfig(96, 5, 576, 96, True, True, 1),      # features.10
    BlockConfig(96, 5, 576, 96, True, True, 1),      # features.11
)
# fmt: on
SMALL_OUTPUT_FEATURE_INDICES = (1, 3, 8, 12)
SMALL_DILATED_FROM = 9


class MobileNetV3(Backbone):
    """A MobileNetV3 feature extractor from its class's block table (torchvision's module tree).

    Subclasses declare ``blocks`` (the inverted-residual table, ``features.1`` on),
    ``output_indices`` (indices into ``features`` of the returned maps, fine to coarse) and
    ``dilated_from`` (the first ``features`` index of the last stage). With
    ``output_stride=16`` that stage runs at stride 1 with dilation 2 (torchvision's
    ``dilated=True``).

    Args:
        output_stride: 32 or 16.
        norm_layer: norm constructor (default BN eps 1e-3, momentum 0.01 as torchvision).
        width_mult: channel multiplier (channels rounded with ``make_divisible``).
    """

    blocks: tuple[BlockConfig, ...]
    output_indices: tuple[int, ...]
    dilated_from: int

    def __init__(
        self,
        *,
        output_stride: int = 32,
        norm_layer: NormLayer | None = None,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        blocks, dilated_from = self.blocks, self.dilated_from
        if output_stride not in SUPPORTED_OUTPUT_STRIDES:
            raise ValueError(
                f"{type(self).__name__}: output_stride must be one of "
                f"{SUPPORTED_OUTPUT_STRIDES}, got {output_stride}"
            )
        if norm_layer is None:
            norm_layer = functools.partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)

        def adjust(channels: int) -> int:
            return make_divisible(channels * width_mult)

        def se_layer(channels: int) -> nn.Module:
            squeeze = make_divisible(channels // SE_SQUEEZE_DIVISOR)
            return SqueezeExcitation(channels, squeeze, gate_layer=nn.Hardsigmoid)

        layers: list[nn.Module] = [
            ConvNormAct(
                3,
                adjust(STEM_CHANNELS),
                3,
                stride=2,
                norm_layer=norm_layer,
                act_layer=nn.Hardswish,
            )
        ]
        strides_after = [2]
        dilated = output_stride == 16
        for index, cfg in enumerate(blocks, start=1):
            dilation = DILATION if dilated and index >= dilated_from else 1
            stride = 1 if dilation > 1 else cfg.stride
            layers.append(
                InvertedResidual(
                    adjust(cfg.in_ch),
                    adjust(cfg.out_ch),
                    expanded_ch=adjust(cfg.expanded_ch),
                    kernel_size=cfg.kernel_size,
                    stride=stride,
                    dilation=dilation,
                    norm_layer=norm_layer,
                    act_layer=nn.Hardswish if cfg.use_hardswish else nn.ReLU,
                    se_layer=se_layer if cfg.use_se else None,
                )
            )
            strides_after.append(strides_after[-1] * stride)
        last_in = adjust(blocks[-1].out_ch)
        last_out = LAST_CONV_EXPANSION * last_in
        layers.append(
            ConvNormAct(last_in, last_out, 1, norm_layer=norm_layer, act_layer=nn.Hardswish)
        )
        strides_after.append(strides_after[-1])
        self.features = nn.Sequential(*layers)
        channel_of = [adjust(STEM_CHANNELS)] + [adjust(c.out_ch) for c in blocks] + [last_out]
        self.channels = tuple(channel_of[i] for i in self.output_indices)
        self.strides = tuple(strides_after[i] for i in self.output_indices)
        self._init_weights()

    def _init_weights(self) -> None:
        """Torchvision's MobileNetV3 init: Kaiming-normal (fan-out) convs, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> four maps ``[B, channels[i], ceil(H/s_i), ceil(W/s_i)]``."""
        features = []
        x = images
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.output_indices:
                features.append(x)
        return features


class MobileNetV3Large(MobileNetV3):
    """MobileNetV3-Large returning maps at strides 4, 8, 16, 32 (channels 24, 40, 112, 960).

    With ``output_stride=16`` the last stage (``features.13``-``16``) is dilated, so the strides
    are ``(4, 8, 16, 16)``. Arguments: see ``MobileNetV3``.
    """

    blocks = LARGE_BLOCKS
    output_indices = OUTPUT_FEATURE_INDICES
    dilated_from = DILATED_FROM


class MobileNetV3Small(MobileNetV3):
    """MobileNetV3-Small returning maps at strides 4, 8, 16, 32 (channels 16, 24, 48, 576).

    With ``output_stride=16`` the last stage (``features.9``-``12``) is dilated, so the strides
    are ``(4, 8, 16, 16)``. Arguments: see ``MobileNetV3``.
    """

    blocks = SMALL_BLOCKS
    output_indices = SMALL_OUTPUT_FEATURE_INDICES
    dilated_from = SMALL_DILATED_FROM
