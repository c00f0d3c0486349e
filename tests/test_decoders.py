"""ASPP, MaskConverFPN and FPN: contract (channels/strides/shapes at odd sizes) and structure."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from maskconver.decoders import ASPP, FPN, MaskConverFPN

BN = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
STRIDES = (4, 8, 16, 32)
CHANNELS = (8, 12, 16, 24)


def fake_features(h: int, w: int, batch: int = 2) -> list[torch.Tensor]:
    """Backbone-shaped maps ``ceil(H / s)`` for strides 4..32."""
    return [
        torch.randn(batch, c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(CHANNELS, STRIDES)
    ]


def test_aspp_param_count_has_no_norm_after_depthwise() -> None:
    # in 16, ch 8, rates (2, 3): 1x1 16*8 + BN 16; per rate dw 16*9 + 1x1 16*8 + BN 16;
    # pooling 16*8 + BN 16; projection (4*8)*8 + BN 16
    aspp = ASPP(
        16, in_stride=32, channels=8, dilation_rates=(2, 3), norm_layer=BN, act_layer=nn.ReLU
    )
    per_rate = 16 * 9 + 16 * 8 + 16
    assert sum(p.numel() for p in aspp.parameters()) == (128 + 16) + 2 * per_rate + (128 + 16) + (
        256 + 16
    )
    dw = aspp.branches[1][0]
    assert (
        isinstance(dw, nn.Conv2d) and dw.groups == 16 and dw.dilation == (2, 2) and dw.bias is None
    )
    dense = ASPP(
        16, channels=8, dilation_rates=(2,), depthwise=False, norm_layer=BN, act_layer=nn.ReLU
    )
    assert dense.branches[1][0].kernel_size == (3, 3) and dense.branches[1][0].groups == 1


@pytest.mark.parametrize(("h", "w"), [(129, 97), (64, 64)])
def test_aspp_contract(h: int, w: int) -> None:
    aspp = ASPP(24, in_stride=32, channels=8, norm_layer=BN, act_layer=nn.ReLU)
    feats = fake_features(h, w)
    (out,) = aspp(feats)
    assert aspp.channels == (8,) and aspp.strides == (32,)
    assert out.shape == (2, 8, *feats[-1].shape[-2:])


def test_aspp_image_pooling_branch_is_spatially_constant() -> None:
    aspp = ASPP(24, channels=8, norm_layer=BN, act_layer=nn.ReLU).eval()
    x = torch.randn(1, 24, 5, 4)
    pooled = aspp.branches[-1](x)
    torch.testing.assert_close(pooled, pooled[:, :, :1, :1].expand_as(pooled))
    # trains with a single image too (batch norm sees the broadcast pooled map)
    aspp.train()
    (out,) = aspp([torch.randn(1, 24, 3, 2)])
    assert out.shape == (1, 8, 3, 2)
    with pytest.raises(ValueError, match="dilation rates must be >= 1"):
        ASPP(24, dilation_rates=(0,), norm_layer=BN, act_layer=nn.ReLU)


@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("separable", [True, False])
@pytest.mark.parametrize(("h", "w"), [(129, 97), (256, 256)])
def test_maskconver_fpn_contract(fusion: str, separable: bool, h: int, w: int) -> None:
    fpn = MaskConverFPN(
        CHANNELS,
        STRIDES,
        channels=16,
        min_level=3,
        max_level=7,
        fusion=fusion,  # type: ignore[arg-type]
        separable=separable,
        act_layer=nn.GELU,
    )
    assert fpn.channels == (16,) * 5 and fpn.strides == (8, 16, 32, 64, 128)
    outs = fpn(fake_features(h, w))
    sizes = [
        (math.ceil(h / 8), math.ceil(w / 8)),
        (math.ceil(h / 16), math.ceil(w / 16)),
        (math.ceil(h / 32), math.ceil(w / 32)),
    ]
    # extra levels: stride-2 3x3 convs with padding 1 -> ceil(size / 2)
    for _ in range(2):
        sizes.append(tuple(math.ceil(s / 2) for s in sizes[-1]))  # type: ignore[arg-type]
    assert [tuple(o.shape) for o in outs] == [(2, 16, *s) for s in sizes]
    # final LayerNorm over channels (weight 1, bias 0): per-pixel mean 0, variance 1
    for o in outs:
        torch.testing.assert_close(o.mean(1), torch.zeros_like(o.mean(1)), atol=1e-4, rtol=0)


def test_maskconver_fpn_concat_channels_grow_going_down() -> None:
    # concat: fused L5 = 256, L4 = 256 + 256, L3 = 256 + 512 (top-down uses the un-smoothed map)
    fpn = MaskConverFPN(CHANNELS, STRIDES, channels=256, fusion="concat", act_layer=nn.GELU)
    assert [m.depthwise.in_channels for m in fpn.smooth] == [768, 512, 256]
    assert fpn.smooth[0].depthwise.kernel_size == (7, 7)
    assert fpn.laterals[0].depthwise.kernel_size == (1, 1)  # separable even for the 1x1 laterals
    summed = MaskConverFPN(
        CHANNELS, STRIDES, channels=256, fusion="sum", separable=False, act_layer=nn.GELU
    )
    assert [m.in_channels for m in summed.smooth] == [256, 256, 256]
    assert summed.smooth[0].kernel_size == (3, 3)


def test_maskconver_fpn_bn_and_missing_level() -> None:
    fpn = MaskConverFPN(CHANNELS, STRIDES, channels=8, norm="bn", act_layer=nn.ReLU, bn_layer=BN)
    assert all(isinstance(n, nn.BatchNorm2d) and n.eps == 1e-3 for n in fpn.norms)
    with pytest.raises(
        ValueError, match="stride 8 .level 3.; backbone strides are \\[4, 16, 32\\]"
    ):
        MaskConverFPN((8, 16, 24), (4, 16, 32), act_layer=nn.ReLU)


@pytest.mark.parametrize(("min_level", "max_level"), [(3, 7), (2, 5), (3, 4)])
def test_fpn_contract(min_level: int, max_level: int) -> None:
    fpn = FPN(
        CHANNELS,
        STRIDES,
        channels=8,
        min_level=min_level,
        max_level=max_level,
        norm_layer=BN,
        act_layer=nn.ReLU,
    )
    n = max_level - min_level + 1
    assert fpn.channels == (8,) * n and fpn.strides == tuple(
        2**lv for lv in range(min_level, max_level + 1)
    )
    outs = fpn(fake_features(129, 97))
    assert len(outs) == n
    assert [o.shape[-2:] for o in outs[: 6 - min_level]] == [
        (math.ceil(129 / 2**lv), math.ceil(97 / 2**lv))
        for lv in range(min_level, min(max_level, 5) + 1)
    ]
    # 1x1 laterals, 3x3 smoothing, as many extra stride-2 convs as levels above 5
    assert fpn.laterals[0].kernel_size == (1, 1) and fpn.smooth[0].kernel_size == (3, 3)
    assert len(fpn.extra) == max(0, max_level - 5)
