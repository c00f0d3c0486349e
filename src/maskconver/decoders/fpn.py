"""Plain FPN baseline (Model Garden ``fpn``, reference section 1.4 "Standard FPN").

The shared ``TopDownPyramid`` with dense convs and sum fusion: 1x1 laterals on every backbone
level from ``min_level`` up, nearest top-down sum, 3x3 smoothing conv + norm per output level,
extra levels by stride-2 3x3 convs (the activation is applied before the second and later ones).
"""

from __future__ import annotations

from collections.abc import Sequence

from maskconver.decoders.pyramid import PLAIN_SMOOTH_KERNEL, TopDownPyramid
from maskconver.layers.types import ActLayer, NormLayer


class FPN(TopDownPyramid):
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
        super().__init__(
            in_channels,
            in_strides,
            channels=channels,
            min_level=min_level,
            max_level=max_level,
            fusion="sum",
            separable=False,
            smooth_kernel=PLAIN_SMOOTH_KERNEL,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
