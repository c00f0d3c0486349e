"""DR1Basis as a MaskConver decoder (DR1Mask section 3.2.2; design note 4.3 and 5.1).

Three paths over a feature pyramid ``P_min .. P_max`` (a plain FPN on the backbone):

* **context tower**: ``tower_convs`` x (3x3 conv, norm, act), convs shared across levels, one
  norm per level. The center-embedding head reads it, and with ``factor_source="embedding_tower"``
  so does the DR1 factor generator: DR1Mask's finding (Table 3) is that the factors must come
  from the branch that makes the instance embeddings (from the plain pyramid they were worse than
  none);
* **DR1 top-down merge**: from the coarsest level down,
  ``F_l = act(norm(DR1Conv_{A_l, B_l}(reduce(P_l) + crop(up2(F_{l+1})))))``, then an x2 to
  ``stride(min_level) / 2``; ``reduce`` is a 3x3 conv to the basis width ``D``;
* the pyramid itself feeds the center-heatmap head.

Outputs, in order (``roles`` names them for the build): ``F [B, D, H/s, W/s]`` at
``s = 2**(min_level - 1)`` (the mask features), the pyramid levels, the tower at the
``head_levels`` (the levels the center and embedding heads read).

``factor_source``: ``"embedding_tower"`` (the tower above), ``"local"`` (the generator reads the
DR1Conv's own input, DR1Mask's "FPN outputs" row), ``"none"`` (no factors: the plain top-down
path, the ablation's B1). ``fusion="concat"`` concatenates instead of summing (B2, no factors).
``aligned=False`` replaces the aligned x2 by a half-pixel resize (the Table 5 control).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn

from maskconver.decoders.base import Decoder
from maskconver.decoders.fpn import FPN
from maskconver.layers.dr1conv import DR1Conv, DR1FactorGenerator, FactorParam, Factors
from maskconver.layers.init import he_normal_init
from maskconver.layers.resample import upsample_to
from maskconver.layers.types import ActLayer, NormLayer

FactorSource = Literal["embedding_tower", "local", "none"]
FACTOR_SOURCES = ("embedding_tower", "local", "none")
KERNEL = 3


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, KERNEL, padding=KERNEL // 2, bias=False)
    he_normal_init(conv)
    return conv


class DR1Basis(Decoder):
    """Pyramid + context tower + DR1 top-down merge to ``stride(min_level) / 2``.

    Args:
        in_channels: backbone channels, fine to coarse.
        in_strides: backbone strides (powers of two).
        channels: width of the pyramid and the context tower.
        width: basis width ``D`` of the merged map (DR1Mask: 64 for panoptic, Table 6).
        min_level: finest pyramid level (3: the merge ends at stride 4).
        max_level: coarsest pyramid level (above the backbone: stride-2 convs).
        tower_convs: convs of the context tower (2-4).
        factors: ``"in"``, ``"out"`` or ``"both"`` DR1 factors.
        param: ``"one_plus"`` or ``"two_sigmoid"``.
        factor_source: ``"embedding_tower"``, ``"local"`` or ``"none"``.
        fusion: ``"sum"`` or ``"concat"`` of the reduced level and the upsampled merge.
        aligned: aligned x2 upsampling with a right/bottom crop (else a half-pixel resize).
        head_levels: pyramid levels read by the center / embedding heads (default: all). The
            tower runs on these (and on every level when it also feeds the factors).
        norm_layer: ``norm_layer(C)`` builds a norm module.
        act_layer: ``act_layer()`` builds an activation module.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        *,
        channels: int = 64,
        width: int = 64,
        min_level: int = 3,
        max_level: int = 5,
        tower_convs: int = 2,
        factors: Factors = "both",
        param: FactorParam = "one_plus",
        factor_source: FactorSource = "embedding_tower",
        fusion: Literal["sum", "concat"] = "sum",
        aligned: bool = True,
        head_levels: Sequence[int] | None = None,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        if factor_source not in FACTOR_SOURCES:
            raise ValueError(f"DR1Basis: factor_source must be one of {FACTOR_SOURCES}")
        if fusion not in ("sum", "concat"):
            raise ValueError(f"DR1Basis: fusion must be 'sum' or 'concat', got {fusion!r}")
        if fusion == "concat" and factor_source != "none":
            raise ValueError("DR1Basis: concat fusion is the plain (factor-free) control arm")
        if tower_convs < 1:
            raise ValueError(f"DR1Basis: tower_convs must be >= 1, got {tower_convs}")
        self.pyramid = FPN(
            in_channels,
            in_strides,
            channels=channels,
            min_level=min_level,
            max_level=max_level,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        num_levels = len(self.pyramid.channels)
        levels = [int(math.log2(s)) for s in self.pyramid.strides]
        heads = list(levels if head_levels is None else head_levels)
        missing = [lv for lv in heads if lv not in levels]
        if missing:
            raise ValueError(f"DR1Basis: head levels {missing} are not pyramid levels {levels}")
        self.head_indices = [levels.index(lv) for lv in heads]
        # the tower runs where a head reads it, and everywhere when it makes the factors
        self.tower_indices = (
            list(range(num_levels)) if factor_source == "embedding_tower" else self.head_indices
        )
        self.tower_convs = nn.ModuleList(_conv3x3(channels, channels) for _ in range(tower_convs))
        self.tower_norms = nn.ModuleList(
            nn.ModuleList(norm_layer(channels) for _ in range(tower_convs))
            for _ in self.tower_indices
        )
        self.tower_act = act_layer()
        self.reduce = nn.ModuleList(_conv3x3(channels, width) for _ in range(num_levels))
        merged_in = [
            width if (fusion == "sum" or i == num_levels - 1) else 2 * width
            for i in range(num_levels)
        ]
        merges = [DR1Conv(c, width, KERNEL, param=param) for c in merged_in]
        for m in merges:
            he_normal_init(m.conv)
        self.merge_convs = nn.ModuleList(merges)
        self.merge_norms = nn.ModuleList(norm_layer(width) for _ in range(num_levels))
        self.merge_act = act_layer()
        self.generator: DR1FactorGenerator | None = None
        if factor_source != "none":
            context = channels if factor_source == "embedding_tower" else width
            self.generator = DR1FactorGenerator(context, width, width, factors=factors)
        self.factor_source: FactorSource = factor_source
        self.fusion = fusion
        self.aligned = aligned
        self.out_stride = 2 ** (min_level - 1)
        strides = list(in_strides)
        self.stride_index = strides.index(self.out_stride) if self.out_stride in strides else None
        pyramid_strides = self.pyramid.strides
        head_strides = tuple(pyramid_strides[i] for i in self.head_indices)
        self.channels = (width, *self.pyramid.channels, *(channels,) * len(heads))
        self.strides = (self.out_stride, *pyramid_strides, *head_strides)
        self.roles = {
            "pixel": (0,),
            "center": tuple(1 + i for i in self.head_indices),
            "embedding": tuple(range(1 + num_levels, 1 + num_levels + len(heads))),
        }

    def _tower(self, levels: list[Tensor]) -> dict[int, Tensor]:
        """The context tower on ``tower_indices``: pyramid index -> ``[B, channels, h, w]``."""
        out = {}
        for norms, index in zip(self.tower_norms, self.tower_indices, strict=True):
            x = levels[index]
            for conv, norm in zip(self.tower_convs, cast(nn.ModuleList, norms), strict=True):
                x = self.tower_act(norm(conv(x)))
            out[index] = x
        return out

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Backbone maps, fine to coarse -> ``[F, *pyramid, *tower]`` (see the class docstring)."""
        pyramid = self.pyramid(features)
        tower = self._tower(pyramid)
        merged: Tensor | None = None
        for lv in range(len(pyramid) - 1, -1, -1):
            x = self.reduce[lv](pyramid[lv])
            if merged is not None:
                up = upsample_to(merged, x.shape[-2:], aligned=self.aligned)
                x = x + up if self.fusion == "sum" else torch.cat([x, up], dim=1)
            a_raw = b_raw = None
            if self.generator is not None:
                context = tower[lv] if self.factor_source == "embedding_tower" else x
                a_raw, b_raw = self.generator(context)
            merged = self.merge_act(self.merge_norms[lv](self.merge_convs[lv](x, a_raw, b_raw)))
        assert merged is not None
        if self.stride_index is not None:
            size = features[self.stride_index].shape[-2:]
        else:
            size = torch.Size((2 * merged.shape[-2], 2 * merged.shape[-1]))
        heads = [tower[i] for i in self.head_indices]
        return [upsample_to(merged, size, aligned=self.aligned), *pyramid, *heads]
