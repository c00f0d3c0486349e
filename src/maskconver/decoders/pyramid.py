"""The top-down feature pyramid skeleton shared by ``FPN`` and ``MaskConverFPN``.

Lateral convs on every backbone level from ``min_level`` up to the coarsest one, a nearest
top-down path fused by sum or concatenation (with concat the fused width grows going down),
smoothing convs on the returned levels, extra levels above the backbone by stride-2 convs (the
activation is applied before the second and later extra levels), and one norm per output level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.decoders.base import Decoder
from maskconver.layers.conv import SeparableConv2d
from maskconver.layers.init import variance_scaling_init
from maskconver.layers.types import ActLayer, NormLayer

PLAIN_SMOOTH_KERNEL = 3  # smoothing kernel of the dense (non-separable) pyramid
EXTRA_KERNEL = 3  # kernel of the stride-2 extra levels


def backbone_level_indices(in_strides: Sequence[int], min_level: int) -> list[int]:
    """Indices of the backbone maps at strides ``2**min_level`` up to the coarsest one.

    Raises:
        ValueError: if a needed level is missing (e.g. stride 8 for ``min_level=3``).
    """
    top = max(in_strides).bit_length() - 1
    indices = []
    for level in range(min_level, top + 1):
        if 2**level not in in_strides:
            raise ValueError(
                f"decoder needs a backbone map at stride {2**level} (level {level}); "
                f"backbone strides are {list(in_strides)}"
            )
        indices.append(list(in_strides).index(2**level))
    if not indices:
        raise ValueError(
            f"no backbone map at level {min_level} or above: strides {list(in_strides)}"
        )
    return indices


def output_plan(input_levels: int, min_level: int, max_level: int) -> tuple[int, int]:
    """``(smoothed, extra)``: outputs taken from backbone levels and from stride-2 convs.

    The top-down path always runs over every backbone level from ``min_level`` up, but only
    levels ``min_level..max_level`` are smoothed and returned, so no parameter is left unused.
    """
    if max_level < min_level:
        raise ValueError(f"decoder: max_level {max_level} < min_level {min_level}")
    top = min_level + input_levels - 1
    return min(max_level, top) - min_level + 1, max(0, max_level - top)


def resize_nearest(x: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest upsample to ``size`` (works for odd sizes, unlike a scale factor)."""
    return F.interpolate(x, size=tuple(size), mode="nearest")


def pyramid_conv(
    in_ch: int, out_ch: int, kernel_size: int, stride: int, separable: bool
) -> nn.Module:
    """A biased conv of the pyramid: dense, or depthwise-separable."""
    if separable:
        return SeparableConv2d(in_ch, out_ch, kernel_size, stride=stride, bias=True)
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=True)


class TopDownPyramid(Decoder):
    """Feature pyramid at levels ``min_level``..``max_level`` with equal width ``channels``.

    Args:
        in_channels: backbone channels, fine to coarse.
        in_strides: backbone strides (powers of two).
        channels: output width of every level.
        min_level: finest output level (3 = stride 8).
        max_level: coarsest output level; levels above the backbone's come from stride-2 convs.
        fusion: ``"sum"`` or ``"concat"`` of the upsampled top-down map and the lateral.
        separable: every conv (laterals, smoothing, extra levels) is depthwise-separable.
        smooth_kernel: kernel of the smoothing convs.
        norm_layer: ``norm_layer(C)`` builds the per-level output norm.
        act_layer: activation applied before the second and later extra levels.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        *,
        channels: int,
        min_level: int,
        max_level: int,
        fusion: Literal["sum", "concat"],
        separable: bool,
        smooth_kernel: int,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        if fusion not in ("sum", "concat"):
            raise ValueError(
                f"{type(self).__name__}: fusion must be 'sum' or 'concat', got {fusion!r}"
            )
        self.input_indices = backbone_level_indices(in_strides, min_level)
        num_smoothed, num_extra = output_plan(len(self.input_indices), min_level, max_level)
        self.fusion = fusion
        self.laterals = nn.ModuleList(
            pyramid_conv(in_channels[i], channels, 1, 1, separable) for i in self.input_indices
        )
        fused = []  # channels of the fused map per input level, coarse levels first
        width = 0
        for _ in reversed(self.input_indices):
            width = channels if (width == 0 or fusion == "sum") else width + channels
            fused.append(width)
        fused.reverse()
        self.smooth = nn.ModuleList(
            pyramid_conv(c, channels, smooth_kernel, 1, separable) for c in fused[:num_smoothed]
        )
        self.extra = nn.ModuleList(
            pyramid_conv(channels, channels, EXTRA_KERNEL, 2, separable) for _ in range(num_extra)
        )
        self.extra_act = act_layer()
        num_levels = num_smoothed + num_extra
        self.norms = nn.ModuleList(norm_layer(channels) for _ in range(num_levels))
        self.channels = (channels,) * num_levels
        self.strides = tuple(2**level for level in range(min_level, min_level + num_levels))
        variance_scaling_init(self)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Args: backbone maps, fine to coarse.

        Returns:
            Per level ``min_level``..``max_level`` a map ``[B, channels, h_l, w_l]``.
        """
        laterals = [conv(features[i]) for conv, i in zip(self.laterals, self.input_indices)]
        fused = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            up = resize_nearest(fused[0], lateral.shape[-2:])
            fused.insert(0, lateral + up if self.fusion == "sum" else torch.cat([lateral, up], 1))
        outputs = [conv(x) for conv, x in zip(self.smooth, fused)]
        for j, conv in enumerate(self.extra):
            x = outputs[-1] if j == 0 else self.extra_act(outputs[-1])
            outputs.append(conv(x))
        return [norm(x) for norm, x in zip(self.norms, outputs)]
