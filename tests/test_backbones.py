"""Backbone contract, architecture facts (parameter counts, names, dilation) and weight loading."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from maskconver.backbones import (
    Backbone,
    MobileNetMH,
    MobileNetV3Large,
    MobileNetV3Small,
    ResNet50,
    ResNetUNet,
    TinyBackbone,
    load_backbone_weights,
)
from maskconver.backbones.mobilenet_mh import BLOCK_SPECS
from maskconver.build.parts import BACKBONES as _BACKBONE_TABLE
from maskconver.layers import ConvNeXtSEBlock, FrozenBatchNorm2d, make_divisible

REFERENCE_BN = functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
ODD_H, ODD_W = 65, 97  # odd sizes: ceil(65 / 32) = 3, ceil(97 / 32) = 4


def _small_unet() -> ResNetUNet:
    return ResNetUNet(ResNet50(), channels=(32, 24, 16), repeats=(2, 1, 1))


# Every variant the contract runs over: (factory, expected channels, expected strides).
VARIANTS: dict[str, tuple[Callable[[], Backbone], tuple[int, ...], tuple[int, ...]]] = {
    "tiny": (lambda: TinyBackbone(width=16), (16, 32, 64, 128), (4, 8, 16, 32)),
    "mobilenet_mh_os16": (
        lambda: MobileNetMH(output_stride=16, norm_layer=REFERENCE_BN),
        (32, 64, 448),
        (4, 8, 16),
    ),
    "mobilenet_mh_os32": (
        lambda: MobileNetMH(output_stride=32, norm_layer=REFERENCE_BN),
        (32, 64, 448),
        (4, 8, 32),
    ),
    "mobilenetv3_large": (lambda: MobileNetV3Large(), (24, 40, 112, 960), (4, 8, 16, 32)),
    "mobilenetv3_large_os16": (
        lambda: MobileNetV3Large(output_stride=16),
        (24, 40, 112, 960),
        (4, 8, 16, 16),
    ),
    "mobilenetv3_small": (lambda: MobileNetV3Small(), (16, 24, 48, 576), (4, 8, 16, 32)),
    "resnet50": (lambda: ResNet50(), (256, 512, 1024, 2048), (4, 8, 16, 32)),
    "resnet50_os16_gelu": (
        lambda: ResNet50(output_stride=16, act_layer=nn.GELU),
        (256, 512, 1024, 2048),
        (4, 8, 16, 16),
    ),
    "resnet_unet": (_small_unet, (256, 16, 24, 32), (4, 8, 16, 32)),
    "resnet_unet_frozen_bn": (
        lambda: ResNetUNet(
            ResNet50(norm_layer=FrozenBatchNorm2d, act_layer=nn.GELU, drop_path_rate=0.1),
            channels=(32, 32, 32),
            repeats=(2, 1, 1),
            drop_path_rate=0.1,
        ),
        (256, 32, 32, 32),
        (4, 8, 16, 32),
    ),
}
STOCHASTIC = {"resnet_unet_frozen_bn"}  # drop path may zero a branch's gradient in one step
# Variants that differ from another one only in output stride / activation: shapes and
# determinism are checked, the (slow on CPU) backward pass is not repeated.
SHAPE_ONLY = {"mobilenet_mh_os32", "mobilenetv3_large_os16", "resnet50_os16_gelu"}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_backbone_contract(name: str) -> None:
    factory, channels, strides = VARIANTS[name]
    torch.manual_seed(0)
    backbone = factory()
    assert isinstance(backbone, Backbone)
    assert backbone.channels == channels and backbone.strides == strides
    images = torch.randn(1, 3, ODD_H, ODD_W)
    with torch.set_grad_enabled(name not in SHAPE_ONLY):
        features = backbone.train()(images)
    assert len(features) == len(channels)
    for feature, c, s in zip(features, channels, strides):
        # e.g. stride 8: ceil(65 / 8) = 9, ceil(97 / 8) = 13
        assert feature.shape == (1, c, math.ceil(ODD_H / s), math.ceil(ODD_W / s)), name
        assert torch.isfinite(feature).all()
    if name not in SHAPE_ONLY:
        _assert_gradients_reach_every_parameter(name, backbone, features)
    backbone.eval()
    with torch.no_grad():
        first = backbone(images)
        second = backbone(images)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _assert_gradients_reach_every_parameter(
    name: str, backbone: nn.Module, features: list[torch.Tensor]
) -> None:
    # A random projection avoids the degenerate sum(BN output) gradient.
    loss = torch.stack([(f * torch.randn_like(f)).sum() for f in features]).sum()
    loss.backward()
    params = dict(backbone.named_parameters())
    no_grad = [n for n, p in params.items() if p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    if name not in STOCHASTIC:
        zero = [n for n, p in params.items() if p.grad is not None and not p.grad.any()]
        assert not zero, f"{name}: parameters with all-zero gradient: {zero[:5]}"


def test_frozen_bn_statistics_do_not_move_in_train_mode() -> None:
    backbone = ResNet50(norm_layer=FrozenBatchNorm2d)
    before = backbone.bn1.running_mean.clone()
    backbone.train()(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(backbone.bn1.running_mean, before, rtol=0, atol=0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())


# --------------------------------------------------------------------------------------------
# MobileNet-MH


def _ib_params(in_ch: int, out_ch: int, kernel: int, expand: int) -> int:
    """Inverted bottleneck with BN (2 params per channel), no biases."""
    hidden = make_divisible(in_ch * expand)
    expand_conv = in_ch * hidden + 2 * hidden if hidden != in_ch else 0
    return expand_conv + hidden * kernel * kernel + 2 * hidden + hidden * out_ch + 2 * out_ch


def test_mobilenet_mh_parameter_count() -> None:
    # Independent count from the reference table: conv-bn rows are in*out*k*k + 2*out.
    expected = 0
    in_ch = 3
    for spec in BLOCK_SPECS:
        if spec.kind == "conv":
            expected += in_ch * spec.out_channels * spec.kernel_size**2 + 2 * spec.out_channels
        else:
            expected += _ib_params(in_ch, spec.out_channels, spec.kernel_size, spec.expand)
        in_ch = spec.out_channels
    backbone = MobileNetMH(norm_layer=REFERENCE_BN)
    count = sum(p.numel() for p in backbone.parameters())
    assert count == expected == 1_633_504
    assert abs(count - 1.63e6) / 1.63e6 < 0.02  # reference section 1.10: 1.63 M


def _depthwise(block: nn.Module) -> nn.Conv2d:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(convs) == 1
    return convs[0]


def test_mobilenet_mh_output_stride_16_dilates_from_block_13() -> None:
    os16 = MobileNetMH(output_stride=16)
    for index in range(1, 17):
        dw = _depthwise(os16.blocks[index])
        expected_dilation = 2 if index >= 13 else 1
        assert dw.dilation == (expected_dilation,) * 2, index
    assert _depthwise(os16.blocks[13]).stride == (1, 1)
    os32 = MobileNetMH(output_stride=32)
    assert _depthwise(os32.blocks[13]).stride == (2, 2)
    assert all(_depthwise(os32.blocks[i]).dilation == (1, 1) for i in range(1, 17))
    # Expansion widths: block 1 in 32 x 3 = 96; block 13 in 160 x 6 = 960.
    assert _depthwise(os16.blocks[1]).in_channels == 96
    assert _depthwise(os16.blocks[13]).in_channels == 960
    with pytest.raises(ValueError, match="output_stride"):
        MobileNetMH(output_stride=8)


# --------------------------------------------------------------------------------------------
# MobileNetV3-Large


def test_mobilenetv3_large_matches_torchvision_features() -> None:
    backbone = MobileNetV3Large()
    # torchvision mobilenet_v3_large: 5,483,032 parameters in total; the classifier is
    # Linear(960, 1280) = 1,230,080 plus Linear(1280, 1000) = 1,281,000, leaving 2,971,952.
    assert sum(p.numel() for p in backbone.parameters()) == 5_483_032 - 1_230_080 - 1_281_000
    shapes = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    assert shapes["features.0.0.weight"] == (16, 3, 3, 3)
    assert shapes["features.1.block.0.0.weight"] == (16, 1, 3, 3)  # no expand conv at 16 -> 16
    assert shapes["features.2.block.0.0.weight"] == (64, 16, 1, 1)
    # SE squeeze of 72 channels: make_divisible(72 // 4 = 18) = 24
    assert shapes["features.4.block.2.fc1.weight"] == (24, 72, 1, 1)
    assert shapes["features.13.block.1.0.weight"] == (672, 1, 5, 5)
    assert shapes["features.13.block.2.fc2.weight"] == (672, 168, 1, 1)
    assert shapes["features.16.0.weight"] == (960, 160, 1, 1)
    bn = backbone.features[0][1]
    assert isinstance(bn, nn.BatchNorm2d) and bn.eps == 1e-3 and bn.momentum == 0.01
    se = backbone.features[4].block[2]
    assert isinstance(se.scale_activation, nn.Hardsigmoid)
    assert isinstance(backbone.features[0][2], nn.Hardswish)
    assert isinstance(backbone.features[2].block[0][2], nn.ReLU)


def test_mobilenetv3_small_matches_torchvision_features() -> None:
    backbone = MobileNetV3Small()
    # torchvision mobilenet_v3_small: 2,542,856 parameters in total; the classifier is
    # Linear(576, 1024) = 590,848 plus Linear(1024, 1000) = 1,025,000, leaving 927,008.
    assert sum(p.numel() for p in backbone.parameters()) == 2_542_856 - 590_848 - 1_025_000
    shapes = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    # features.1: no expand conv (16 -> 16), stride-2 depthwise, SE squeeze make_divisible(4) = 8
    assert shapes["features.1.block.0.0.weight"] == (16, 1, 3, 3)
    assert shapes["features.1.block.1.fc1.weight"] == (8, 16, 1, 1)
    assert shapes["features.2.block.0.0.weight"] == (72, 16, 1, 1)
    assert shapes["features.9.block.1.0.weight"] == (288, 1, 5, 5)
    assert shapes["features.12.0.weight"] == (576, 96, 1, 1)
    assert backbone.features[1].block[0][0].stride == (2, 2)
    assert isinstance(backbone.features[4].block[0][2], nn.Hardswish)
    assert isinstance(backbone.features[3].block[0][2], nn.ReLU)


def test_mobilenetv3_small_output_stride_16_dilates_last_stage() -> None:
    backbone = MobileNetV3Small(output_stride=16)
    assert backbone.strides == (4, 8, 16, 16)
    for index in (9, 10, 11):
        dw = backbone.features[index].block[1][0]
        assert dw.dilation == (2, 2) and dw.stride == (1, 1)
    assert backbone.features[8].block[1][0].dilation == (1, 1)


def test_mobilenetv3_output_stride_16_dilates_last_stage() -> None:
    backbone = MobileNetV3Large(output_stride=16)
    for index in (13, 14, 15):
        dw = backbone.features[index].block[1][0]
        assert dw.dilation == (2, 2) and dw.stride == (1, 1)
    assert backbone.features[12].block[1][0].dilation == (1, 1)


# --------------------------------------------------------------------------------------------
# ResNet-50 and ResNet-UNet


def test_resnet50_matches_torchvision_without_fc() -> None:
    backbone = ResNet50()
    # torchvision resnet50: 25,557,032 parameters; fc = 2048 * 1000 + 1000 = 2,049,000.
    assert sum(p.numel() for p in backbone.parameters()) == 25_557_032 - 2_049_000
    keys = backbone.state_dict().keys()
    # 16 bottlenecks x (3 convs + 3 BN x 5 entries) = 288, 4 projections x 6 = 24, stem 6.
    assert len(keys) == 16 * 18 + 4 * 6 + 6
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.num_batches_tracked",
        "layer3.5.bn2.bias",
        "layer4.2.conv3.weight",
    ):
        assert key in keys
    # v1.5: the stride sits on the 3x3 conv.
    assert backbone.layer2[0].conv1.stride == (1, 1) and backbone.layer2[0].conv2.stride == (2, 2)


def test_resnet50_drop_path_rates_per_group() -> None:
    backbone = ResNet50(drop_path_rate=0.1)
    # group i: 0.1 * (i + 2) / 8
    for i, layer in enumerate((backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)):
        assert all(block.drop_path.p == pytest.approx(0.1 * (i + 2) / 8) for block in layer)


def test_resnet50_output_stride_dilation_follows_torchvision() -> None:
    with torch.device("meta"):
        os8 = ResNet50(output_stride=8)
    assert os8.strides == (4, 8, 8, 8)
    # replace_stride_with_dilation: a dilated group's first block keeps the previous dilation.
    assert os8.layer3[0].conv2.stride == (1, 1) and os8.layer3[0].conv2.dilation == (1, 1)
    assert os8.layer3[1].conv2.dilation == (2, 2)
    assert os8.layer4[0].conv2.dilation == (2, 2) and os8.layer4[1].conv2.dilation == (4, 4)
    assert os8.layer4[0].downsample is not None  # 1024 -> 2048 still needs a projection
    assert os8.layer4[0].downsample[0].stride == (1, 1)
    with pytest.raises(ValueError, match="output_stride"):
        ResNet50(output_stride=4)


def test_resnet_unet_rejects_wrong_level_counts() -> None:
    with torch.device("meta"):
        resnet = ResNet50()
    with pytest.raises(ValueError, match="3 entries"):
        ResNetUNet(resnet, channels=(8, 8), repeats=(1, 1, 1))


def test_resnet_unet_full_size_parameter_count() -> None:
    with torch.device("meta"):  # no memory, no init cost: only shapes are checked
        unet = ResNetUNet(ResNet50())
    block = 1_498_464  # one ConvNeXt-SE block at dim 384 (derived in test_layers.py)
    laterals = (2048 + 1024 + 512) * 384 + 3 * 2 * 384  # 1x1 convs + LayerNorms
    top_downs = 2 * 384 * 384 + 2 * 2 * 384
    unet_part = 20 * block + laterals + top_downs  # 18 + 1 + 1 blocks
    assert unet_part == 31_644_288
    assert sum(p.numel() for p in unet.parameters()) == 23_508_032 + unet_part == 55_152_320
    assert sum(isinstance(m, ConvNeXtSEBlock) for m in unet.levels[0].modules()) == 18
    # drop path of level i: 0.1 * (i + 6) / 8 = 0.075, 0.0875, 0.1
    rates = [lvl.blocks[0].drop_path.p for lvl in unet.levels]
    assert rates == pytest.approx([0.075, 0.0875, 0.1])
    assert all(k.startswith(("resnet.", "levels.")) for k in unet.state_dict())


def test_resnet_unet_top_down_path_reaches_the_finest_output() -> None:
    torch.manual_seed(0)
    unet = _small_unet().eval()
    images = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        before = unet(images)
        # Only the L5 lateral changes, in ONE output channel: a change shared by every channel
        # (a scale, or the same add to every weight) is undone by the channel LayerNorm.
        unet.levels[0].lateral[0].weight[0].add_(0.1)
        after = unet(images)
    torch.testing.assert_close(after[0], before[0])  # C2 is the raw ResNet map
    assert (after[1] - before[1]).abs().max() > 1e-4  # U3 sees L5 through the top-down path


# --------------------------------------------------------------------------------------------
# weight loading


def _perturbed(module: nn.Module) -> None:
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(1.0)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_weights_round_trip_pth_with_prefix_and_classifier(tmp_path: Path) -> None:
    source = ResNet50()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, 2048)
    state["module.fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet50.pth"
    torch.save({"model": state}, path)
    target = ResNet50()
    _perturbed(target)
    report = load_backbone_weights(target, path)
    _assert_same_state(source, target)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert sorted(report.skipped) == ["module.fc.bias", "module.fc.weight"]
    assert len(report.loaded) == 318
    assert "loaded 318 tensors" in report.summary()


def test_weights_round_trip_safetensors_mobilenetv3(tmp_path: Path) -> None:
    source = MobileNetV3Large()
    path = tmp_path / "mnv3.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = MobileNetV3Large()
    _perturbed(target)
    report = load_backbone_weights(target, path)
    _assert_same_state(source, target)
    assert not report.missing and not report.unexpected and not report.mismatched


def test_weights_report_missing_unexpected_and_mismatched(tmp_path: Path) -> None:
    source = TinyBackbone(width=8)
    state = dict(source.state_dict())
    del state["stem.0.0.weight"]
    state["stages.0.0.0.weight"] = torch.zeros(3, 3, 3, 3)  # wrong shape
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    target = TinyBackbone(width=8)
    stem_before = target.stem[0][0].weight.clone()
    mismatched_before = target.stages[0][0][0].weight.clone()
    report = load_backbone_weights(target, path)
    assert report.missing == ["stem.0.0.weight", "stages.0.0.0.weight"]
    assert report.unexpected == ["extra.weight"]
    assert report.mismatched == ["stages.0.0.0.weight: file [3, 3, 3, 3] vs model [8, 8, 3, 3]"]
    torch.testing.assert_close(target.stem[0][0].weight, stem_before)
    torch.testing.assert_close(target.stages[0][0][0].weight, mismatched_before)
    summary = report.summary()
    assert "missing 2" in summary and "extra.weight" in summary


def test_weights_plain_resnet_into_resnet_unet_and_frozen_bn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = ResNet50()
    with torch.no_grad():  # non-trivial BN statistics
        for module in source.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(source.state_dict(), path)

    unet = ResNetUNet(ResNet50(norm_layer=FrozenBatchNorm2d), channels=(8, 8, 8), repeats=(1, 1, 1))
    report = load_backbone_weights(unet, path)
    assert not report.unexpected and not report.mismatched
    assert all(name.startswith("levels.") for name in report.missing)
    assert len(report.missing) == len([k for k in unet.state_dict() if k.startswith("levels.")])
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(unet.resnet.eval()(images), source.eval()(images)):
            # Frozen BN folds scale/shift differently from BatchNorm2d: float32 rounding only.
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * b.abs().max().item())


def test_weights_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_weights(TinyBackbone(width=8), tmp_path / "nope.pth")
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="unknown suffix"):
        load_backbone_weights(TinyBackbone(width=8), bad)


@pytest.mark.parametrize("name", sorted(_BACKBONE_TABLE))
def test_frozen_bn_freezes_every_backbones_batch_norm(name: str) -> None:
    """``model.backbone.frozen_bn`` is honoured by every backbone of the table, not only ResNet."""
    from maskconver.build.parts import build_backbone
    from maskconver.config import load_config

    cfg = load_config("tiny", [f"model.backbone.name={name}", "model.backbone.frozen_bn=true"])
    backbone = build_backbone(cfg.model)
    kinds = {type(m) for m in backbone.modules()}
    assert nn.BatchNorm2d not in kinds
    assert FrozenBatchNorm2d in kinds
