"""BiFPN (EfficientDet, Tan et al. 2020): MaskConver Table 2's strong decoder baseline.

Inputs: 1x1 conv + norm laterals of the backbone levels ``min_level`` and up; levels above the
backbone by a 1x1 conv (when the width differs) and 3x3 stride-2 max-pooling. Then
``num_repeats`` bidirectional layers: a top-down pass
``td_l = conv(act(w1 P_l + w2 up(td_{l+1})) / (w1 + w2 + eps))`` and a bottom-up pass
``out_l = conv(act(w1 P_l + w2 td_l + w3 down(out_{l-1})) / (sum w + eps))`` (two inputs at the
ends), with fast normalised fusion weights ``w = relu(param)`` and separable 3x3 conv + norm.
Upsampling is nearest to the finer level's size, downsampling a 3x3 stride-2 max-pool, so any
input size works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.decoders.base import Decoder
from maskconver.decoders.pyramid import backbone_level_indices, output_plan
from maskconver.layers.conv import SeparableConv2d
from maskconver.layers.types import ActLayer, NormLayer

FUSION_EPS = 1e-4  # EfficientDet's epsilon of the fast normalised fusion
POOL_KERNEL = 3


def _down(x: Tensor) -> Tensor:
    return F.max_pool2d(x, POOL_KERNEL, stride=2, padding=POOL_KERNEL // 2)


class _Fusion(nn.Module):
    """Fast normalised fusion of ``n`` same-shape maps, then act, separable conv and norm."""

    def __init__(self, n: int, channels: int, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n))
        self.act = act_layer()
        self.conv = SeparableConv2d(channels, channels, 3, bias=False)
        self.norm = norm_layer(channels)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        """``sum_i w_i x_i / (sum w + eps)`` -> act -> conv -> norm, each ``[B, C, h, w]``."""
        w = F.relu(self.weights)
        fused = sum(wi * x for wi, x in zip(w, inputs, strict=True)) / (w.sum() + FUSION_EPS)
        return self.norm(self.conv(self.act(fused)))


class BiFPNLayer(nn.Module):
    """One bidirectional pass over ``num_levels`` maps of equal width.

    ``outputs`` (default all) returns only the finest levels; the bottom-up fusions of the
    levels above are then not built (a single-scale model reads one level of the last layer).
    """

    def __init__(
        self,
        num_levels: int,
        channels: int,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        outputs: int | None = None,
    ) -> None:
        super().__init__()
        self.outputs = num_levels if outputs is None else outputs
        self.top_down = nn.ModuleList(
            _Fusion(2, channels, norm_layer, act_layer) for _ in range(num_levels - 1)
        )
        self.bottom_up = nn.ModuleList(
            _Fusion(2 if i == num_levels - 1 else 3, channels, norm_layer, act_layer)
            for i in range(1, self.outputs)
        )

    def forward(self, levels: list[Tensor]) -> list[Tensor]:
        """Per level ``[B, C, h_l, w_l]`` fine to coarse -> the first ``outputs`` of them."""
        n = len(levels)
        td = [levels[-1]]  # coarse first while building
        for i in range(n - 2, -1, -1):
            up = F.interpolate(td[0], size=levels[i].shape[-2:], mode="nearest")
            td.insert(0, self.top_down[i]([levels[i], up]))
        out = [td[0]]
        for i in range(1, self.outputs):
            down = _down(out[-1])
            inputs = [levels[i], down] if i == n - 1 else [levels[i], td[i], down]
            out.append(self.bottom_up[i - 1](inputs))
        return out


class BiFPN(Decoder):
    """BiFPN at levels ``min_level``..``max_level``, width ``channels``.

    Args:
        in_channels: backbone channels, fine to coarse.
        in_strides: backbone strides (powers of two).
        channels: width of every level.
        min_level: finest level.
        max_level: coarsest level (levels above the backbone by max-pooling).
        num_repeats: bidirectional layers (EfficientDet-D0: 3).
        num_outputs: levels returned, finest first (default all; a single-scale model reads
            only ``min_level``, while the fusion still spans ``min_level..max_level``).
        norm_layer: ``norm_layer(C)`` builds a norm module.
        act_layer: ``act_layer()`` builds the activation before each fusion conv.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        *,
        channels: int = 64,
        min_level: int = 3,
        max_level: int = 7,
        num_repeats: int = 3,
        num_outputs: int | None = None,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        if num_repeats < 1:
            raise ValueError(f"BiFPN: num_repeats must be >= 1, got {num_repeats}")
        self.input_indices = backbone_level_indices(in_strides, min_level)
        num_inputs, num_extra = output_plan(len(self.input_indices), min_level, max_level)
        self.input_indices = self.input_indices[:num_inputs]
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels[i], channels, 1), norm_layer(channels))
            for i in self.input_indices
        )
        top = in_channels[self.input_indices[-1]]
        self.extra_project: nn.Module = (
            nn.Identity()
            if num_extra == 0 or top == channels
            else nn.Sequential(nn.Conv2d(top, channels, 1), norm_layer(channels))
        )
        self.num_extra = num_extra
        num_levels = num_inputs + num_extra
        if num_levels < 2:
            raise ValueError("BiFPN needs at least two levels (min_level < max_level)")
        outputs = num_levels if num_outputs is None else num_outputs
        if not 1 <= outputs <= num_levels:
            raise ValueError(f"BiFPN: num_outputs must be in [1, {num_levels}], got {num_outputs}")
        self.layers = nn.ModuleList(
            BiFPNLayer(
                num_levels,
                channels,
                norm_layer,
                act_layer,
                outputs=outputs if i == num_repeats - 1 else None,
            )
            for i in range(num_repeats)
        )
        num_levels = outputs
        self.channels = (channels,) * num_levels
        self.strides = tuple(2**lv for lv in range(min_level, min_level + num_levels))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Backbone maps, fine to coarse -> per level ``[B, channels, h_l, w_l]``."""
        levels = [
            lat(features[i]) for lat, i in zip(self.laterals, self.input_indices, strict=True)
        ]
        if self.num_extra:
            x = self.extra_project(features[self.input_indices[-1]])
            for _ in range(self.num_extra):
                x = _down(x)
                levels.append(x)
        for layer in self.layers:
            levels = layer(levels)
        return levels
