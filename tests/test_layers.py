"""Specifications of the reusable layers: shapes, analytic values, init and train/eval behaviour."""

from __future__ import annotations

import math
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskconver.layers import (
    ACTIVATIONS,
    ConvNeXtSEBlock,
    ConvNormAct,
    DropPath,
    FrozenBatchNorm2d,
    InvertedResidual,
    LayerNorm2d,
    SeparableConv2d,
    SqueezeExcitation,
    get_act_layer,
    init_prior_bias,
    make_divisible,
    same_padding,
    trunc_normal_init,
    variance_scaling_,
)

# --------------------------------------------------------------------------------------------
# activation factory


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("relu", nn.ReLU),
        ("gelu", nn.GELU),
        ("hardswish", nn.Hardswish),
        ("silu", nn.SiLU),
        ("relu6", nn.ReLU6),
        ("hardsigmoid", nn.Hardsigmoid),
        ("GELU", nn.GELU),  # case-insensitive
    ],
)
def test_get_act_layer_builds_the_named_module(name: str, expected: type[nn.Module]) -> None:
    assert isinstance(get_act_layer(name)(), expected)


def test_get_act_layer_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="swishy") as info:
        get_act_layer("swishy")
    for choice in ACTIVATIONS:
        assert choice in str(info.value)


# --------------------------------------------------------------------------------------------
# conv helpers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (96, 96),  # 32 * 3 is already a multiple of 8
        (20, 24),  # nearest multiple 16 < 0.9 * 20 = 18, so one step up
        (10, 16),  # nearest 8 < 9 -> 16
        (36, 40),  # int(36 + 4) // 8 * 8 = 40 (ties round up)
        (3, 8),  # never below the divisor
        (168, 168),  # 672 // 4, MobileNetV3 SE squeeze width
        (18, 24),  # 72 // 4: nearest 16 < 16.2 -> 24 (torchvision features.4 SE width)
    ],
)
def test_make_divisible(value: int, expected: int) -> None:
    assert make_divisible(value) == expected


def test_same_padding_rejects_even_kernels() -> None:
    assert same_padding(7) == 3
    assert same_padding(3, dilation=2) == 2  # 2 * (3 - 1) // 2
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        same_padding(4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
def test_conv_norm_act_output_is_ceil_of_input_over_stride(stride: int, dilation: int) -> None:
    conv = ConvNormAct(3, 8, 3, stride=stride, dilation=dilation)
    out = conv(torch.randn(2, 3, 97, 131))
    # ceil(97 / 2) = 49, ceil(131 / 2) = 66
    assert out.shape == (2, 8, math.ceil(97 / stride), math.ceil(131 / stride))
    assert (out >= 0).all()  # ReLU at the end


def test_conv_norm_act_uses_torchvision_child_names_and_optional_parts() -> None:
    conv = ConvNormAct(4, 6, 1)
    assert set(conv.state_dict()) == {
        "0.weight",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert conv.conv.bias is None
    linear = ConvNormAct(4, 6, 3, norm_layer=None, act_layer=None, bias=True)
    assert len(linear) == 1 and linear.conv.bias is not None
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(linear(x), linear.conv(x))


def test_separable_conv_is_depthwise_then_pointwise_with_one_bias() -> None:
    sep = SeparableConv2d(4, 6, 5, stride=2)
    # depthwise 4 * 5 * 5 (no bias) + pointwise 4 * 6 + bias 6 = 100 + 24 + 6 = 130
    assert sum(p.numel() for p in sep.parameters()) == 130
    assert sep.depthwise.bias is None and sep.depthwise.groups == 4
    x = torch.randn(2, 4, 9, 11)
    expected = F.conv2d(
        F.conv2d(x, sep.depthwise.weight, stride=2, padding=2, groups=4),
        sep.pointwise.weight,
        sep.pointwise.bias,
    )
    out = sep(x)
    assert out.shape == (2, 6, 5, 6)
    torch.testing.assert_close(out, expected)


def test_inverted_residual_residual_rule_and_layout() -> None:
    same = InvertedResidual(8, 8, expanded_ch=16)
    assert same.use_residual
    assert [type(m) for m in same.block] == [ConvNormAct, ConvNormAct, ConvNormAct]
    # Zeroing the projection BN's affine makes the branch 0, so the block is the identity.
    nn.init.zeros_(same.block[2][1].weight)
    x = torch.randn(2, 8, 7, 9)
    torch.testing.assert_close(same.eval()(x), x)
    strided = InvertedResidual(8, 8, expanded_ch=16, stride=2)
    assert not strided.use_residual
    assert strided(x).shape == (2, 8, 4, 5)
    no_expand = InvertedResidual(8, 12, expanded_ch=8, se_layer=lambda c: SqueezeExcitation(c, 4))
    # expanded == in: no expand conv; children are depthwise, SE, project (torchvision order)
    assert [type(m) for m in no_expand.block] == [ConvNormAct, SqueezeExcitation, ConvNormAct]


# --------------------------------------------------------------------------------------------
# norms


def test_layer_norm_2d_equals_layer_norm_over_channels() -> None:
    torch.manual_seed(0)
    norm = LayerNorm2d(5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 5, 7, 3) * 3 + 1
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,), norm.weight, norm.bias, eps=1e-6).permute(
        0, 3, 1, 2
    )
    torch.testing.assert_close(norm(x), expected)
    # It is not GroupNorm(1, C), which would also pool over H and W.
    group = F.group_norm(x, 1, norm.weight, norm.bias, eps=1e-6)
    assert (norm(x) - group).abs().max() > 1e-2


def test_layer_norm_2d_hand_example() -> None:
    # Channels (1, 3) at one pixel: mean 2, biased variance 1 -> (-1, 1) / sqrt(1 + eps).
    x = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    out = LayerNorm2d(2)(x).flatten()
    torch.testing.assert_close(out, torch.tensor([-1.0, 1.0]) / math.sqrt(1 + 1e-6))


def test_frozen_batch_norm_matches_eval_batch_norm_and_has_no_parameters() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, eps=1e-5)
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    bn.num_batches_tracked += 7
    frozen = FrozenBatchNorm2d(4)
    result = frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is tolerated
    assert not result.missing_keys and not result.unexpected_keys
    assert list(frozen.parameters()) == []
    x = torch.randn(3, 4, 5, 6)
    torch.testing.assert_close(frozen.train()(x), bn.eval()(x))


# --------------------------------------------------------------------------------------------
# drop path


def test_drop_path_is_identity_in_eval_and_at_zero_rate() -> None:
    x = torch.randn(8, 3, 4, 4)
    torch.testing.assert_close(DropPath(0.5).eval()(x), x)
    torch.testing.assert_close(DropPath(0.0).train()(x), x)
    with pytest.raises(ValueError, match="drop probability"):
        DropPath(1.0)


def test_drop_path_drops_whole_samples_and_preserves_expectation() -> None:
    torch.manual_seed(0)
    p = 0.25
    num_samples = 20000
    out = DropPath(p).train()(torch.ones(num_samples, 2, 3))
    per_sample = out.flatten(1)
    # Every sample is either dropped (all 0) or kept and scaled by 1 / (1 - p) = 4/3.
    dropped = (per_sample == 0).all(dim=1)
    kept = (per_sample == 4.0 / 3.0).all(dim=1)
    assert bool((dropped | kept).all())
    # Kept fraction ~ 0.75: std sqrt(0.25 * 0.75 / 20000) = 0.0031, tolerance ~6 sigma.
    assert abs(kept.float().mean().item() - (1 - p)) < 0.02
    # Mean of a sample value: E = 1, var = 0.75 * (4/3)^2 - 1 = 1/3, std of the mean 0.0041.
    assert abs(out.mean().item() - 1.0) < 0.025


# --------------------------------------------------------------------------------------------
# squeeze-excitation


def test_squeeze_excitation_constant_gate() -> None:
    se = SqueezeExcitation(4, 2)
    assert {name.split(".")[0] for name, _ in se.named_parameters()} == {"fc1", "fc2"}
    with torch.no_grad():
        se.fc2.weight.zero_()
        se.fc2.bias.fill_(math.log(3.0))  # sigmoid(log 3) = 3 / (1 + 3) = 0.75
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(se(x), 0.75 * x)


def test_squeeze_excitation_channels_last_matches_channels_first() -> None:
    torch.manual_seed(0)
    first = SqueezeExcitation(6, 3, act_layer=nn.GELU)
    last = SqueezeExcitation(6, 3, act_layer=nn.GELU, channels_last=True)
    last.load_state_dict(first.state_dict())
    x = torch.randn(2, 6, 4, 5)
    torch.testing.assert_close(last(x.permute(0, 2, 3, 1)), first(x).permute(0, 2, 3, 1))


# --------------------------------------------------------------------------------------------
# ConvNeXt-SE block


def test_convnext_se_block_parameter_count_at_reference_width() -> None:
    dim = 384
    hidden = 4 * dim  # 1536
    squeeze = max(1, int(hidden * 0.0625))  # 96
    expected = (
        dim * 7 * 7
        + dim  # depthwise 7x7 with bias: 19,200
        + 2 * dim  # LayerNorm: 768
        + dim * hidden
        + hidden  # pwconv1: 591,360
        + hidden * squeeze
        + squeeze
        + squeeze * hidden
        + hidden  # SE: 296,544
        + hidden * dim
        + dim  # pwconv2: 590,208
        + dim  # layer scale: 384
    )
    assert expected == 1_498_464
    block = ConvNeXtSEBlock(dim)
    assert sum(p.numel() for p in block.parameters()) == expected
    assert block.se.fc1.out_channels == squeeze
    no_se = ConvNeXtSEBlock(dim, se_ratio=0.0)
    assert sum(p.numel() for p in no_se.parameters()) == expected - 296_544


def test_convnext_se_block_squeeze_width_never_below_one() -> None:
    # dim 2 -> hidden 8 -> int(8 * 0.0625) = 0 -> max(1, 0) = 1
    assert ConvNeXtSEBlock(2).se.fc1.out_channels == 1


def test_convnext_se_block_is_near_identity_at_init() -> None:
    torch.manual_seed(0)
    block = ConvNeXtSEBlock(16).eval().double()
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    delta = block(x) - x  # = gamma * branch(x), gamma = 1e-6 at init
    assert 0 < delta.abs().max().item() < 1e-6  # the residual dominates
    with torch.no_grad():
        block.gamma.fill_(1.0)  # type: ignore[union-attr]
    branch = block(x) - x
    assert branch.abs().max().item() > 1e-3  # a real branch, scaled down only by gamma
    torch.testing.assert_close(delta, 1e-6 * branch, rtol=1e-6, atol=1e-14)


def test_convnext_se_block_init_and_shape() -> None:
    torch.manual_seed(0)
    block = ConvNeXtSEBlock(32, kernel_size=5, drop_path=0.5)
    for name, param in block.named_parameters():
        if name.endswith("bias") and not name.startswith("norm"):
            assert torch.count_nonzero(param) == 0, name
    # trunc-normal std 0.02 cut at +-2 std
    assert block.pwconv1.weight.abs().max() <= 0.04
    # A unit normal cut at +-2 has std 0.8796, so the weights' std is about 0.0176.
    assert abs(block.pwconv1.weight.std().item() - 0.02 * 0.8796) < 0.002
    x = torch.randn(2, 32, 7, 5)
    assert block(x).shape == x.shape
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    with pytest.raises(ValueError, match="odd"):
        ConvNeXtSEBlock(8, kernel_size=4)


# --------------------------------------------------------------------------------------------
# init helpers


def test_init_prior_bias_value() -> None:
    conv = nn.Conv2d(4, 3, 1)
    init_prior_bias(conv, 0.1)
    # -log((1 - 0.1) / 0.1) = -log 9 = -2.19722...
    torch.testing.assert_close(conv.bias, torch.full((3,), -2.1972), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.sigmoid(conv.bias), torch.full((3,), 0.1))
    with pytest.raises(ValueError, match="prior_prob"):
        init_prior_bias(conv, 0.0)
    with pytest.raises(ValueError, match="no bias"):
        init_prior_bias(nn.Conv2d(4, 3, 1, bias=False), 0.1)


def test_trunc_normal_init_bounds_and_zero_bias() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Linear(16, 32))
    trunc_normal_init(module, 0.02)
    for layer in (module[0], module[1]):
        assert layer.weight.abs().max() <= 0.04  # 2 std
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("distribution", ["truncated_normal", "normal", "uniform"])
def test_variance_scaling_reaches_target_std(
    distribution: Literal["truncated_normal", "normal", "uniform"],
) -> None:
    torch.manual_seed(0)
    weight = torch.empty(256, 64, 3, 3)
    variance_scaling_(weight, scale=1.0, mode="fan_in", distribution=distribution)
    # fan_in = 64 * 3 * 3 = 576 -> std = sqrt(1 / 576) = 0.041667 (Keras rescales the
    # truncated normal so the truncated draw has this std too).
    assert abs(weight.std().item() - 1 / 24) < 0.05 / 24  # within 5 %
    with pytest.raises(ValueError, match="mode"):
        variance_scaling_(weight, mode="fan_sideways")  # type: ignore[arg-type]
