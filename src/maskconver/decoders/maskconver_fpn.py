"""MaskConver FPN (reference section 1.4, ``MC/modeling/fpn.py``): the decoder after ResNet-UNet.

The shared ``TopDownPyramid`` with the reference's choices: separable convs (7x7 smoothing),
sum or concatenation fusion, and a final norm per level (LayerNorm by default), no activation.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

from torch import nn

from maskconver.decoders.pyramid import PLAIN_SMOOTH_KERNEL, TopDownPyramid
from maskconver.layers.norm import LayerNorm2d
from maskconver.layers.types import ActLayer, NormLayer

LN_EPS = 1e-6
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class MaskConverFPN(TopDownPyramid):
    """Feature pyramid at levels ``min_level``..``max_level`` with equal width ``channels``.

    Args:
        in_channels: backbone channels, fine to coarse.
        in_strides: backbone strides (powers of two).
        channels: output width of every level.
        min_level: finest output level (3 = stride 8).
        max_level: coarsest output level; levels above the backbone's come from stride-2 convs.
        fusion: ``"sum"`` or ``"concat"`` of the upsampled top-down map and the lateral.
        separable: every conv (laterals, smoothing, extra levels) is depthwise-separable.
        kernel_size: smoothing kernel when separable (3 otherwise).
        norm: final per-level norm, ``"ln"`` (channel LayerNorm) or ``"bn"``.
        act_layer: activation applied before the second and later extra levels.
        bn_layer: norm constructor used when ``norm == "bn"`` (default: BatchNorm2d with the
            reference's Keras eps 1e-3 / momentum 0.99).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        *,
        channels: int = 256,
        min_level: int = 3,
        max_level: int = 7,
        fusion: Literal["sum", "concat"] = "concat",
        separable: bool = True,
        kernel_size: int = 7,
        norm: Literal["ln", "bn"] = "ln",
        act_layer: ActLayer,
        bn_layer: NormLayer | None = None,
    ) -> None:
        if norm not in ("ln", "bn"):
            raise ValueError(f"MaskConverFPN: norm must be 'ln' or 'bn', got {norm!r}")
        if norm == "ln":
            norm_layer: NormLayer = partial(LayerNorm2d, eps=LN_EPS)
        else:
            norm_layer = bn_layer or partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
        super().__init__(
            in_channels,
            in_strides,
            channels=channels,
            min_level=min_level,
            max_level=max_level,
            fusion=fusion,
            separable=separable,
            smooth_kernel=kernel_size if separable else PLAIN_SMOOTH_KERNEL,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
