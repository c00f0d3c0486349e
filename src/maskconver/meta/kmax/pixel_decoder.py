"""kMaX-DeepLab's pixel decoder: axial-attention blocks at the coarse end, bottlenecks below.

The decoder walks the backbone from its coarsest map to stride 4 (kMaX-DeepLab section 3.3,
the design note section 1.1): stage 0 projects the coarsest backbone map and runs
``num_blocks[0]`` blocks; every later stage upsamples the previous output to the next finer
backbone map, adds that map's projection and runs its own blocks. The first ``axial_stages``
stages use axial-attention blocks (MaX-DeepLab's: attention along the height, then along the
width, with a learned relative position bias per head), the rest ResNet bottlenecks. ReMaX's
Table 12 gives the block counts per stride ``[32, 16, 8, 4]``: ``[1, 1, 1, 1]`` for ReMaX-T/S,
``[1, 5, 1, 1]`` for ReMaX-M/B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskconver.layers.conv import ConvNormAct
from maskconver.layers.types import ActLayer, NormLayer

BOTTLENECK_EXPANSION = 4  # a block's inner width is its channels / 4 (ResNet's bottleneck)
MIN_INNER = 16


def inner_width(channels: int, num_heads: int) -> int:
    """A block's inner width: ``channels / 4`` rounded up to a multiple of ``num_heads``."""
    width = max(MIN_INNER, channels // BOTTLENECK_EXPANSION)
    return int(math.ceil(width / num_heads) * num_heads)


def zero_last_norm(layer: nn.Module) -> None:
    """Zero the scale of a ``ConvNormAct``'s norm (a residual branch that starts at 0)."""
    norm = layer[1] if isinstance(layer, nn.Sequential) else None
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(f"expected a ConvNormAct with a norm, got {type(layer).__name__}")
    nn.init.zeros_(weight)


class AxialAttention(nn.Module):
    """Multi-head self-attention along one spatial axis with a relative position bias.

    Args:
        channels: input and output channels.
        num_heads: attention heads (must divide ``channels``).
        axis: ``2`` attends along the height (each column separately), ``3`` along the width.
        span: relative offsets beyond ``+-(span - 1)`` share the last bias entry.
    """

    def __init__(self, channels: int, num_heads: int, axis: int, span: int = 64) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"AxialAttention: {num_heads} heads must divide {channels} channels")
        if axis not in (2, 3):
            raise ValueError(f"AxialAttention: axis must be 2 (height) or 3 (width), got {axis}")
        self.num_heads, self.axis, self.span = num_heads, axis, span
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_heads, 2 * span - 1))
        nn.init.trunc_normal_(self.bias, std=0.02)

    def relative_bias(self, length: int | Tensor, device: torch.device) -> Tensor:
        """``[heads, L, L]`` bias of query position i attending to key position j."""
        position = torch.arange(length, device=device)  # type: ignore[arg-type]
        offset = (position[:, None] - position[None, :]).clamp(-(self.span - 1), self.span - 1)
        return self.bias[:, offset + self.span - 1]

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        batch, channels, height, width = x.shape
        heads = self.num_heads
        qkv = self.qkv(x)
        if self.axis == 3:  # attend along the width: rows are independent
            seq = qkv.permute(0, 2, 3, 1).reshape(batch * height, width, 3, heads, -1)
        else:  # along the height: columns are independent
            seq = qkv.permute(0, 3, 2, 1).reshape(batch * width, height, 3, heads, -1)
        query, key, value = seq.permute(2, 0, 3, 1, 4).unbind(0)  # [B', heads, L, d]
        length = query.shape[2]
        logits = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
        attention = (logits + self.relative_bias(length, x.device)[None]).softmax(-1)
        out = (attention @ value).permute(0, 2, 1, 3).reshape(-1, length, channels)
        if self.axis == 3:
            return out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return out.reshape(batch, width, height, channels).permute(0, 3, 2, 1)


class AxialBlock(nn.Module):
    """MaX-DeepLab's axial-attention bottleneck: 1x1 in, height then width attention, 1x1 out.

    ``x + BN(conv1x1(act(BN(attention_w(attention_h(act(BN(conv1x1(x)))))))))``, the last norm's
    scale initialised to 0 so a new block starts as the identity.

    Args:
        channels: input and output channels.
        num_heads: attention heads.
        span: relative-position span of the bias tables.
        norm_layer: norm constructor.
        act_layer: activation constructor.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int,
        span: int,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        inner = inner_width(channels, num_heads)
        self.reduce = ConvNormAct(channels, inner, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.height = AxialAttention(inner, num_heads, axis=2, span=span)
        self.width = AxialAttention(inner, num_heads, axis=3, span=span)
        self.mid = nn.Sequential(norm_layer(inner), act_layer())
        self.expand = ConvNormAct(inner, channels, 1, norm_layer=norm_layer, act_layer=None)
        zero_last_norm(self.expand)
        self.act = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        y = self.width(self.height(self.reduce(x)))
        return self.act(x + self.expand(self.mid(y)))


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1) with an identity shortcut, last norm zero-initialised.

    Args:
        channels: input and output channels.
        norm_layer: norm constructor.
        act_layer: activation constructor.
    """

    def __init__(self, channels: int, *, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__()
        inner = inner_width(channels, 1)
        self.body = nn.Sequential(
            ConvNormAct(channels, inner, 1, norm_layer=norm_layer, act_layer=act_layer),
            ConvNormAct(inner, inner, 3, norm_layer=norm_layer, act_layer=act_layer),
            ConvNormAct(inner, channels, 1, norm_layer=norm_layer, act_layer=None),
        )
        zero_last_norm(self.body[2])
        self.act = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.act(x + self.body(x))


class KMaXPixelDecoder(nn.Module):
    """Coarse-to-fine decoder over the backbone's last four maps (see the module docstring).

    Args:
        in_channels: backbone channels, fine to coarse (at least ``len(channels)`` maps).
        in_strides: backbone strides, fine to coarse.
        channels: output channels per stage, coarse to fine (e.g. ``[2048, 1024, 512, 256]``
            for strides 32, 16, 8, 4).
        num_blocks: blocks per stage, coarse to fine.
        axial_stages: the first this many stages use axial-attention blocks.
        num_heads: attention heads of the axial blocks.
        span: relative-position span of the axial blocks.
        norm_layer: norm constructor.
        act_layer: activation constructor.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        *,
        channels: Sequence[int],
        num_blocks: Sequence[int],
        axial_stages: int = 1,
        num_heads: int = 8,
        span: int = 64,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        stages = len(channels)
        if len(num_blocks) != stages:
            raise ValueError(
                f"KMaXPixelDecoder: {len(num_blocks)} block counts for {stages} stages"
            )
        if len(in_channels) < stages:
            raise ValueError(
                f"KMaXPixelDecoder: {stages} stages need {stages} backbone maps, "
                f"the backbone has {len(in_channels)}"
            )
        picked = list(range(len(in_channels) - 1, len(in_channels) - 1 - stages, -1))
        self.backbone_indices = picked  # coarse to fine
        self.channels = tuple(channels)
        self.strides = tuple(in_strides[i] for i in picked)
        self.projections = nn.ModuleList(
            ConvNormAct(in_channels[i], c, 1, norm_layer=norm_layer, act_layer=None)
            for i, c in zip(picked, channels)
        )
        self.merges = nn.ModuleList(
            ConvNormAct(channels[i - 1], channels[i], 1, norm_layer=norm_layer, act_layer=None)
            for i in range(1, stages)
        )
        self.act = act_layer()
        blocks = []
        for stage, (width, count) in enumerate(zip(channels, num_blocks)):
            if stage < axial_stages:
                layers: list[nn.Module] = [
                    AxialBlock(
                        width,
                        num_heads=num_heads,
                        span=span,
                        norm_layer=norm_layer,
                        act_layer=act_layer,
                    )
                    for _ in range(count)
                ]
            else:
                layers = [
                    Bottleneck(width, norm_layer=norm_layer, act_layer=act_layer)
                    for _ in range(count)
                ]
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Backbone maps (fine to coarse) -> one map per stage, coarse to fine.

        Returns:
            ``[B, channels[i], h_i, w_i]`` at the backbone strides ``strides[i]``.
        """
        outputs: list[Tensor] = []
        x = self.act(self.projections[0](features[self.backbone_indices[0]]))
        x = self.blocks[0](x)
        outputs.append(x)
        for stage in range(1, len(self.blocks)):
            skip = features[self.backbone_indices[stage]]
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.act(self.merges[stage - 1](up) + self.projections[stage](skip))
            x = self.blocks[stage](x)
            outputs.append(x)
        return outputs
