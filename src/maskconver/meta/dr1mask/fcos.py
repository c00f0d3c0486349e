"""The FCOS top-down branch (Tian et al. 2019) as DR1Mask uses it (paper section 3.2).

Two towers of ``num_convs`` x (3x3 conv, norm, act), one for classification and one for boxes,
with weights (norms included) shared across pyramid levels; on top, a 3x3 classification conv
(bias at the focal prior), a 3x3 box conv whose output is scaled per level by a learned scalar
(``relu(scale_l x) * stride_l``: distances in input pixels, AdelaiDet's normalised regression)
and a 3x3 centerness conv on the box tower (AdelaiDet's ``CENTERNESS_ON_REG``). The box tower's
output is returned too: DR1Mask's top layer reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.layers.init import init_prior_bias
from maskconver.layers.types import ActLayer, NormLayer

KERNEL = 3
INIT_STD = 0.01  # FCOS: normal(0, 0.01) weights, zero biases


def _conv(in_ch: int, out_ch: int, *, bias: bool = True) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, KERNEL, padding=KERNEL // 2, bias=bias)
    nn.init.normal_(conv.weight, std=INIT_STD)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def tower(
    channels: int, num_convs: int, norm_layer: NormLayer, act_layer: ActLayer
) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, norm, act) at a constant width."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [_conv(channels, channels, bias=False), norm_layer(channels), act_layer()]
    return nn.Sequential(*layers)


class Scale(nn.Module):
    """A learned scalar multiplier (one per pyramid level), initialised to ``init``."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        """``x * scale``."""
        return x * self.scale


class FCOSHead(nn.Module):
    """Class / box towers and the classification, box and centerness predictions.

    Args:
        channels: width of the pyramid (and of both towers).
        num_classes: classification channels C.
        strides: stride of each pyramid level (one learned scale per level).
        num_convs: convs per tower (FCOS: 4).
        norm_layer: tower norm (FCOS: GroupNorm with 32 groups).
        act_layer: tower activation.
        prior_prob: initial foreground probability of the classifier (FCOS: 0.01).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        *,
        strides: Sequence[int],
        num_convs: int = 4,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.cls_tower = tower(channels, num_convs, norm_layer, act_layer)
        self.box_tower = tower(channels, num_convs, norm_layer, act_layer)
        self.cls_logits = _conv(channels, num_classes)
        init_prior_bias(self.cls_logits, prior_prob)
        self.box_pred = _conv(channels, 4)
        self.centerness = _conv(channels, 1)
        self.strides = tuple(int(s) for s in strides)
        self.scales = nn.ModuleList(Scale() for _ in self.strides)

    def forward(
        self, levels: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Predict on every pyramid level.

        Args:
            levels: per level ``[B, channels, h_l, w_l]``, fine to coarse.

        Returns:
            Per level: classification logits ``[B, C, h, w]``, distances ``[B, 4, h, w]``
            ``(l, t, r, b)`` >= 0 in input pixels, centerness logits ``[B, 1, h, w]`` and the
            box tower's features ``[B, channels, h, w]``.
        """
        if len(levels) != len(self.strides):
            raise ValueError(f"FCOSHead: expected {len(self.strides)} levels, got {len(levels)}")
        classes, distances, centerness, box_features = [], [], [], []
        for x, stride, scale in zip(levels, self.strides, self.scales, strict=True):
            box = self.box_tower(x)
            classes.append(self.cls_logits(self.cls_tower(x)))
            distances.append(F.relu(scale(self.box_pred(box))) * stride)
            centerness.append(self.centerness(box))
            box_features.append(box)
        return classes, distances, centerness, box_features
