"""Shipped presets: reference values, parameter/MAC budgets, and every build_* function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskconver import build
from maskconver.benchmarking.measure import count_macs, count_params
from maskconver.config import ConfigError, list_presets, load_config
from maskconver.data.types import Category, CategorySet, PanopticSample, SegmentInfo
from maskconver.meta.maskconver.heads import PyramidFusion, SelectLevels, SumToMerge


def coco_like(label_space: str) -> CategorySet:
    """Thing ids 1 and 90, stuff id 200 (the largest raw COCO panoptic id)."""
    cats = [
        Category(1, "person", True),
        Category(90, "toothbrush", True),
        Category(200, "rug", False),
    ]
    return CategorySet(cats, label_space)


def meta_model(
    name: str, num_classes: int = 201, overrides: list[str] | None = None
) -> torch.nn.Module:
    """Build on the meta device: shapes and counts only, no weight initialisation cost."""
    with torch.device("meta"):
        return build.build_model(load_config(name, overrides).model, num_classes)


# ----------------------------------------------------------------------------------------------
# budgets (reference section 1.10: 3.44 M params, 1.55 G MACs at 256, 9.7 G at 640)


def test_mobilenet_mh_256_params_and_macs() -> None:
    model = meta_model("mobilenet_mh_256")
    assert count_params(model) == pytest.approx(3.44e6, rel=0.03)
    assert count_macs(model, (256, 256)) == pytest.approx(1.55e9, rel=0.05)


def test_mobilenet_mh_640_macs() -> None:
    model = meta_model("mobilenet_mh_640")
    assert count_params(model) == pytest.approx(3.44e6, rel=0.03)
    assert count_macs(model, (640, 640)) == pytest.approx(9.7e9, rel=0.05)


def test_tiny_is_small() -> None:
    model = meta_model("tiny", 10)
    assert count_params(model) < 3e6
    assert count_macs(model, (128, 128)) < 0.2e9


# ----------------------------------------------------------------------------------------------
# reference values (section 6 and the ResNet-UNet yaml)


@pytest.mark.parametrize(("name", "size"), [("mobilenet_mh_256", 256), ("mobilenet_mh_640", 640)])
def test_mobilenet_presets_follow_reference_section_6(name: str, size: int) -> None:
    cfg = load_config(name)
    m, mc, aug, tr = cfg.model, cfg.model.maskconver, cfg.augment, cfg.train
    t, loss, post = mc.targets, mc.loss, mc.merge
    assert (m.num_classes, m.label_space, m.backbone.name, m.backbone.output_stride) == (
        201,
        "raw_ids",
        "mobilenet_mh",
        16,
    )
    assert (m.decoder.name, m.decoder.channels, m.decoder.dilation_rates, m.decoder.depthwise) == (
        "aspp",
        256,
        [6, 12, 18],
        True,
    )
    assert (
        m.head.channels,
        m.head.num_convs,
        m.head.kernel_size,
        m.head.norm,
        m.head.activation,
    ) == (256, 2, 7, "bn", "relu")
    assert (
        mc.embedding_dim,
        mc.mlp_hidden,
        mc.mlp_activation,
        mc.fusion,
        mc.multiscale,
        mc.level,
    ) == (
        256,
        256,
        "relu",
        "mul",
        False,
        3,
    )
    assert (m.num_proposals, m.bn_eps, m.bn_momentum) == (50, 1e-3, 0.01)
    assert (t.thing_center, t.stuff_center, t.max_stuff_centers, t.min_stuff_area) == (
        "box",
        "island",
        1,
        1024,
    )
    assert (t.gaussian_iou, t.mask_stride, t.stuff_dilation) == (0.7, 1, 61)
    assert (loss.center_weight, loss.bce_weight, loss.dice_weight) == (1.0, 5.0, 5.0)
    assert (post.mode, post.object_threshold, post.overlap_threshold, post.min_area) == (
        "reference",
        0.01,
        0.7,
        256,
    )
    assert (aug.input_size, aug.scale_min, aug.scale_max, aug.hflip, aug.copy_paste) == (
        [size, size],
        0.1,
        1.9,
        True,
        False,
    )
    assert (tr.optimizer, tr.lr, tr.momentum, tr.weight_decay, tr.batch_size) == (
        "sgd",
        0.04,
        0.9,
        1e-5,
        64,
    )
    assert (tr.max_steps, tr.warmup_steps, tr.ema, tr.grad_clip) == (500_000, 2000, False, 0.0)
    assert cfg.eval.input_size == size


def test_resnet50_unet_preset_follows_reference() -> None:
    cfg = load_config("resnet50_unet")
    m, b, d, h = cfg.model, cfg.model.backbone, cfg.model.decoder, cfg.model.head
    assert (b.name, b.activation, b.frozen_bn, b.drop_path_rate) == (
        "resnet50_unet",
        "gelu",
        True,
        0.1,
    )
    assert (b.unet_channels, b.unet_repeats, b.unet_se_ratio) == ([384] * 3, [18, 1, 1], 0.0625)
    assert (d.name, d.fusion, d.separable, d.kernel_size, d.norm, d.min_level, d.max_level) == (
        "maskconver_fpn",
        "concat",
        True,
        7,
        "ln",
        3,
        7,
    )
    assert (h.num_convs, h.kernel_size, h.norm, h.activation) == (4, 7, "ln", "gelu")
    mc = m.maskconver
    assert (mc.multiscale, mc.min_level, mc.max_level, mc.pixel_level) == (True, 3, 7, 2)
    assert (mc.mlp_hidden, mc.mlp_activation, mc.fusion, m.num_proposals) == (
        1024,
        "gelu",
        "add",
        256,
    )
    t = mc.targets
    assert (t.thing_center, t.stuff_center) == ("mass", "mass")
    assert list(zip(t.level_low, t.level_high)) == [
        (0, 100),
        (100, 200),
        (200, 400),
        (400, 800),
        (800, 1e7),
    ]
    assert (mc.loss.bce_weight, mc.loss.dice_weight) == (10.0, 10.0)
    p = mc.merge
    assert (p.object_threshold, p.overlap_threshold, p.min_area) == (0.2, 0.75, 16)
    a = cfg.augment
    assert (a.input_size, a.copy_paste, a.scale_min, a.scale_max) == ([1280, 1280], True, 0.05, 2.9)
    assert (a.copy_paste_scale_min, a.copy_paste_scale_max) == (0.025, 1.5)
    tr = cfg.train
    assert (tr.optimizer, tr.lr, tr.weight_decay, tr.grad_clip, tr.ema, tr.ema_decay) == (
        "adamw",
        1e-3,
        0.05,
        1.0,
        True,
        0.99996,
    )
    assert (tr.batch_size, tr.max_steps, tr.warmup_steps) == (128, 270_000, 500)


def test_model_wiring_per_family() -> None:
    single = meta_model("mobilenet_mh_256")
    fusions = [single.center_fusion, single.embedding_fusion, single.pixel_fusion]
    assert all(isinstance(f, SumToMerge) for f in fusions)
    assert len({id(f) for f in fusions}) == 3  # three independent fusions
    assert single.mask_embedding.fusion == "mul"
    multi = meta_model("resnet50_unet")
    assert isinstance(multi.center_fusion, SelectLevels) and multi.center_fusion.indices == (
        0,
        1,
        2,
        3,
        4,
    )
    assert isinstance(multi.pixel_fusion, PyramidFusion) and multi.pixel_fusion.target_index == 0
    assert multi.center_head.num_levels == 5 and multi.pixel_head.num_levels == 1
    assert multi.mask_embedding.fusion == "add" and multi.mask_embedding.mlp[0].out_features == 1024


# ----------------------------------------------------------------------------------------------
# every preset builds every piece


def sample(h: int = 40, w: int = 60) -> PanopticSample:
    pan = np.zeros((h, w), np.int32)
    pan[:20, :30] = 1
    pan[20:, :] = 2
    return PanopticSample(
        image=np.full((h, w, 3), 128, np.uint8),
        panoptic=pan,
        segments=[SegmentInfo(1, 1, isthing=True), SegmentInfo(2, 200, isthing=False)],
    )


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_every_piece(name: str) -> None:
    cfg = load_config(name)
    cats = coco_like(cfg.model.label_space)
    num_classes = build.resolve_num_classes(cfg, cats)
    model = meta_model(name, num_classes)
    if cfg.model.meta_architecture == "dr1mask":  # FCOS classifier instead of center heads
        assert model.head.cls_logits.out_channels == num_classes
    elif cfg.model.meta_architecture == "kmax":  # C classes + void per query
        assert model.predictor.classifier.out_features == num_classes + 1
    else:
        assert model.center_head.classifier.out_channels == num_classes
    generator = build.build_target_generator(cfg, cats, num_classes)
    assert build.build_criterion(cfg, 3) is not None
    post = build.build_postprocessor(cfg, cats, num_classes)
    assert post.class_to_category[cats.index(200)] == 200
    assert bool(post.is_thing_class[cats.index(90)]) and not bool(
        post.is_thing_class[cats.index(200)]
    )
    rng = np.random.default_rng(0)
    train_sample = build.build_train_transforms(cfg)(sample(), rng)
    assert train_sample.panoptic.shape == tuple(cfg.augment.input_size)
    eval_sample = build.build_eval_transforms(cfg)(sample())
    if cfg.eval.pad_divisibility == 0:  # a square; else the longest side, padded
        assert eval_sample.panoptic.shape == (cfg.eval.input_size,) * 2
    else:
        assert max(eval_sample.panoptic.shape) == cfg.eval.input_size + (
            -cfg.eval.input_size % cfg.eval.pad_divisibility
        )
    copy_paste = build.build_copy_paste(cfg, cats)
    assert (copy_paste is None) == (not cfg.augment.copy_paste)
    if cfg.model.backbone.name == "tiny":  # small enough to run targets end to end here
        targets = generator(train_sample)
        assert targets.classes.shape == (cfg.model.num_proposals,)


def test_resolve_num_classes() -> None:
    contiguous = coco_like("contiguous")
    assert build.resolve_num_classes(load_config("tiny"), contiguous) == 3
    assert build.resolve_num_classes(load_config("mobilenet_mh_256"), coco_like("raw_ids")) == 201
    with pytest.raises(
        ConfigError, match="model.num_classes=150 is too small.*'raw_ids'.*needs 201"
    ):
        build.resolve_num_classes(
            load_config("tiny", ["model.num_classes=150"]), coco_like("raw_ids")
        )


def test_build_errors_are_named() -> None:
    with pytest.raises(ConfigError, match="decoder.channels == head.low_level_channels"):
        meta_model("tiny", 3, ["model.head.low_level_channels=32"])
    with pytest.raises(ConfigError, match="multiscale needs an FPN decoder"):
        meta_model(
            "tiny",
            3,
            [
                "model.maskconver.multiscale=true",
                "model.maskconver.targets.level_low=[0,1,2,3,4]",
                "model.maskconver.targets.level_high=[1,2,3,4,5]",
            ],
        )
    with pytest.raises(
        ConfigError, match="model.maskconver.level .* level 6 .stride 64. is not among"
    ):
        meta_model("tiny", 3, ["model.maskconver.level=6"])


def test_build_model_loads_backbone_weights(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    source = build.build_backbone(load_config("tiny").model)
    path = tmp_path / "tiny_backbone.pth"  # type: ignore[operator]
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)  # a different init, so equality proves the load
    model = build.build_model(load_config("tiny", [f"model.backbone.weights={path}"]).model, 3)
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], tensor, msg=name)
    assert "loaded" in capsys.readouterr().out
