"""Plain FPN baseline (Model Garden ``fpn``, reference section 1.4 "Standard FPN").

1x1 laterals on every backbone level from ``min_level`` up, nearest top-down sum, 3x3 smoothing
conv + norm per output level, extra levels by stride-2 3x3 convs (the activation is applied
before the second and later extra levels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.decoders.maskconver_fpn import backbone_level_indices, output_plan
from maskconver.layers.init import variance_scaling_init

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]

SMOOTH_KERNEL = 3
EXTRA_KERNEL = 3


class FPN(nn.Module):
    """Feature pyramid with sum fusion at levels ``min_level``..``max_level``.

    Args:
        in_channels: backbone channels, fine to coarse.
        in_strides: backbone strides (powers of two).
        channels: width of every output level.
        min_level: finest output level.
        max_level: coarsest output level (P6/P7 from stride-2 convs above the backbone).
        norm_layer: ``norm_layer(C)`` builds the per-level output norm.
        act_layer: ``act_layer()`` builds the activation before P7 and later.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        *,
        channels: int = 256,
        min_level: int = 3,
        max_level: int = 7,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        self.input_indices = backbone_level_indices(in_strides, min_level)
        num_smoothed, num_extra = output_plan(len(self.input_indices), min_level, max_level)
        self.laterals = nn.ModuleList(
            nn.Conv2d(in_channels[i], channels, 1) for i in self.input_indices
        )
        self.smooth = nn.ModuleList(
            nn.Conv2d(channels, channels, SMOOTH_KERNEL, padding=SMOOTH_KERNEL // 2)
            for _ in range(num_smoothed)
        )
        self.extra = nn.ModuleList(
            nn.Conv2d(channels, channels, EXTRA_KERNEL, stride=2, padding=EXTRA_KERNEL // 2)
            for _ in range(num_extra)
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
        for j in range(len(laterals) - 2, -1, -1):
            up = F.interpolate(laterals[j + 1], size=laterals[j].shape[-2:], mode="nearest")
            laterals[j] = laterals[j] + up
        outputs = [conv(x) for conv, x in zip(self.smooth, laterals)]
        for j, conv in enumerate(self.extra):
            x = outputs[-1] if j == 0 else self.extra_act(outputs[-1])
            outputs.append(conv(x))
        return [norm(x) for norm, x in zip(self.norms, outputs)]
