"""MobileNetV2 feature extractor with torchvision's parameter names.

The module tree mirrors torchvision's ``mobilenet_v2().features`` so its ImageNet file
(``mobilenet_v2-b0353104.pth``, IMAGENET1K_V1) loads without renaming:

* ``features.0``: 3x3 stride-2 stem ``Conv2dNormActivation`` (``.0`` conv, ``.1`` BN, ReLU6);
* ``features.1``-``features.17``: inverted residuals whose children live in ``conv``: for
  ``t = 1`` ``conv.0`` (depthwise conv-BN-ReLU6), ``conv.1`` (1x1 projection) and ``conv.2``
  (its BN); otherwise ``conv.0`` (1x1 expansion), ``conv.1`` (depthwise), ``conv.2``
  (projection) and ``conv.3`` (its BN);
* ``features.18``: the 1x1 conv to 1280 channels.

The classifier (``classifier.1``, ``Linear(1280, 1000)``) is not built. 2,223,872 parameters.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.layers.conv import ConvNormAct
from maskconver.layers.types import ActLayer, NormLayer

SUPPORTED_OUTPUT_STRIDES = (16, 32)
BN_EPS = 1e-5  # torchvision's MobileNetV2 uses PyTorch's BatchNorm2d defaults
BN_MOMENTUM = 0.1
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
DILATION = 2  # dilation of the last stride-32 stages at output stride 16


class StageConfig(NamedTuple):
    """One row of the MobileNetV2 paper's Table 2 (``n`` blocks, the first with stride ``s``)."""

    expand_ratio: int  # t
    out_ch: int  # c
    repeats: int  # n
    stride: int  # s


INVERTED_RESIDUAL_SETTINGS: tuple[StageConfig, ...] = (
    StageConfig(1, 16, 1, 1),  # features.1
    StageConfig(6, 24, 2, 2),  # features.2-3    -> stride 4
    StageConfig(6, 32, 3, 2),  # features.4-6    -> stride 8
    StageConfig(6, 64, 4, 2),  # features.7-10
    StageConfig(6, 96, 3, 1),  # features.11-13  -> stride 16
    StageConfig(6, 160, 3, 2),  # features.14-16 (dilated at OS 16)
    StageConfig(6, 320, 1, 1),  # features.17
)
# indices into ``features`` of the returned maps: 24, 32, 96 and 1280 channels; at output
# stride 16 the 96-channel map shares its stride with the dilated 1280-channel one and is left out
OUTPUT_FEATURE_INDICES = {32: (3, 6, 13, 18), 16: (3, 6, 18)}
DILATED_FROM = 14  # first ``features`` index of the stride-32 stages


class InvertedResidualV2(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> depthwise 3x3 -> linear 1x1 projection -> BN.

    Child names follow torchvision's ``mobilenetv2.InvertedResidual`` (see the module
    docstring); the residual is added when ``stride == 1`` and ``in_ch == out_ch``.
    Input ``[B, in_ch, H, W]`` -> ``[B, out_ch, ceil(H / stride), ceil(W / stride)]``.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        expand_ratio: expanded width ``in_ch * expand_ratio`` (1: no expansion conv).
        stride: depthwise stride.
        dilation: depthwise dilation.
        norm_layer: norm constructor.
        act_layer: activation of the expansion and depthwise convs (ReLU6).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        expand_ratio: int,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU6,
    ) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_ch, hidden, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers += [
            ConvNormAct(
                hidden,
                hidden,
                3,
                stride=stride,
                dilation=dilation,
                groups=hidden,
                norm_layer=norm_layer,
                act_layer=act_layer,
            ),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            norm_layer(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_ch, H, W]`` -> ``[B, out_ch, ceil(H/stride), ceil(W/stride)]``."""
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(Backbone):
    """MobileNetV2 returning maps at strides 4, 8, 16, 32 (channels 24, 32, 96, 1280).

    The maps are the outputs of ``features.3``, ``features.6``, ``features.13`` (the last block
    at each stride) and ``features.18`` (the 1x1 conv to 1280). With ``output_stride=16`` the
    stride-32 stages (``features.14``-``18``) run at stride 1 with dilation 2 (DeepLab's
    atrous MobileNetV2) and three maps are returned, ``features.3``, ``.6`` and ``.18``:
    channels ``(24, 32, 1280)`` at strides ``(4, 8, 16)`` (one map per stride, as MobileNet-MH).

    Args:
        output_stride: 32 or 16.
        norm_layer: norm constructor (default BN eps 1e-5, momentum 0.1, as torchvision).
    """

    def __init__(self, *, output_stride: int = 32, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        if output_stride not in SUPPORTED_OUTPUT_STRIDES:
            raise ValueError(
                f"MobileNetV2: output_stride must be one of {SUPPORTED_OUTPUT_STRIDES}, "
                f"got {output_stride}"
            )
        if norm_layer is None:
            norm_layer = functools.partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
        layers: list[nn.Module] = [
            ConvNormAct(3, STEM_CHANNELS, 3, stride=2, norm_layer=norm_layer, act_layer=nn.ReLU6)
        ]
        channel_of, strides_after = [STEM_CHANNELS], [2]
        dilated = output_stride == 16
        for stage in INVERTED_RESIDUAL_SETTINGS:
            for repeat in range(stage.repeats):
                index = len(layers)
                dilation = DILATION if dilated and index >= DILATED_FROM else 1
                stride = stage.stride if repeat == 0 and dilation == 1 else 1
                layers.append(
                    InvertedResidualV2(
                        channel_of[-1],
                        stage.out_ch,
                        expand_ratio=stage.expand_ratio,
                        stride=stride,
                        dilation=dilation,
                        norm_layer=norm_layer,
                    )
                )
                channel_of.append(stage.out_ch)
                strides_after.append(strides_after[-1] * stride)
        layers.append(
            ConvNormAct(channel_of[-1], LAST_CHANNELS, 1, norm_layer=norm_layer, act_layer=nn.ReLU6)
        )
        channel_of.append(LAST_CHANNELS)
        strides_after.append(strides_after[-1])
        self.features = nn.Sequential(*layers)
        self.output_indices = OUTPUT_FEATURE_INDICES[output_stride]
        self.channels = tuple(channel_of[i] for i in self.output_indices)
        self.strides = tuple(strides_after[i] for i in self.output_indices)
        self._init_weights()

    def _init_weights(self) -> None:
        """Torchvision's MobileNetV2 init: Kaiming-normal (fan-out) convs, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> maps ``[B, channels[i], ceil(H/s_i), ceil(W/s_i)]``, fine first."""
        features = []
        x = images
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.output_indices:
                features.append(x)
        return features
