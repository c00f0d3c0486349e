"""The only bridge from ``maskconver.config`` to objects: named choices are dict literals here.

``build_model(cfg.model, num_classes)`` assembles ``MaskConver``; the other ``build_*`` functions
create the target generator, criterion, post-processor and transforms from a full ``Config``.
Imports of optional parts (backbone families, targets, losses, data transforms) happen inside
the builder that needs them, so building a tiny model never imports ResNet or scipy code.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from torch import nn

from maskconver.backbones.base import Backbone
from maskconver.config import BackboneConfig, Config, ConfigError, ModelConfig
from maskconver.decoders import ASPP, FPN, MaskConverFPN
from maskconver.heads import (
    LightHead,
    MaskEmbeddingGenerator,
    PyramidFusion,
    SelectLevels,
    SumToMerge,
)
from maskconver.layers.activation import get_act_layer
from maskconver.layers.norm import FrozenBatchNorm2d, LayerNorm2d
from maskconver.model import MaskConver
from maskconver.postprocess.panoptic import PanopticPostProcessor

if TYPE_CHECKING:
    from maskconver.data.types import CategorySet

NormLayer = Callable[[int], nn.Module]
LN_EPS = 1e-6  # Keras LayerNormalization epsilon used by every reference LN
FLIP_PROB = 0.5

# --------------------------------------------------------------------------------------------
# Named choices


def _norm_bn(cfg: ModelConfig) -> NormLayer:
    return partial(nn.BatchNorm2d, eps=cfg.bn_eps, momentum=cfg.bn_momentum)


def _norm_ln(cfg: ModelConfig) -> NormLayer:
    return partial(LayerNorm2d, eps=LN_EPS)


NORMS: dict[str, Callable[[ModelConfig], NormLayer]] = {"bn": _norm_bn, "ln": _norm_ln}


def _tiny(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.tiny import TinyBackbone

    return TinyBackbone(
        width=cfg.width, norm_layer=norm_layer, act_layer=get_act_layer(cfg.activation)
    )


def _mobilenet_mh(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.mobilenet_mh import MobileNetMH

    return MobileNetMH(
        output_stride=cfg.output_stride,
        norm_layer=norm_layer,
        act_layer=get_act_layer(cfg.activation),
    )


def _mobilenetv3_large(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.mobilenetv3 import MobileNetV3Large

    return MobileNetV3Large(output_stride=cfg.output_stride, norm_layer=norm_layer)


def _resnet_norm(cfg: BackboneConfig, norm_layer: NormLayer) -> NormLayer:
    return FrozenBatchNorm2d if cfg.frozen_bn else norm_layer


def _resnet50(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.resnet import ResNet50

    return ResNet50(
        norm_layer=_resnet_norm(cfg, norm_layer),
        act_layer=get_act_layer(cfg.activation),
        drop_path_rate=cfg.drop_path_rate,
        output_stride=cfg.output_stride,
    )


def _resnet50_unet(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.resnet_unet import ResNetUNet

    return ResNetUNet(
        _resnet50(cfg, norm_layer),
        channels=tuple(cfg.unet_channels),
        repeats=tuple(cfg.unet_repeats),
        se_ratio=cfg.unet_se_ratio,
        drop_path_rate=cfg.drop_path_rate,
        act_layer=get_act_layer(cfg.activation),
    )


BACKBONES: dict[str, Callable[[BackboneConfig, NormLayer], Backbone]] = {
    "tiny": _tiny,
    "mobilenet_mh": _mobilenet_mh,
    "mobilenetv3_large": _mobilenetv3_large,
    "resnet50": _resnet50,
    "resnet50_unet": _resnet50_unet,
}


def _aspp(cfg: ModelConfig, backbone: Backbone) -> nn.Module:
    d = cfg.decoder
    return ASPP(
        backbone.channels[-1],
        in_stride=backbone.strides[-1],
        channels=d.channels,
        dilation_rates=tuple(d.dilation_rates),
        depthwise=d.depthwise,
        dropout=d.dropout,
        norm_layer=NORMS[d.norm](cfg),
        act_layer=get_act_layer(cfg.head.activation),
    )


def _fpn_max_level(cfg: ModelConfig) -> int:
    """Single-scale models read one level, so the pyramid stops there (no unused outputs)."""
    return cfg.decoder.max_level if cfg.multiscale else cfg.level


def _maskconver_fpn(cfg: ModelConfig, backbone: Backbone) -> nn.Module:
    d = cfg.decoder
    return MaskConverFPN(
        backbone.channels,
        backbone.strides,
        channels=d.channels,
        min_level=d.min_level,
        max_level=_fpn_max_level(cfg),
        fusion=d.fusion,
        separable=d.separable,
        kernel_size=d.kernel_size,
        norm=d.norm,
        act_layer=get_act_layer(cfg.head.activation),
        bn_layer=_norm_bn(cfg),
    )


def _fpn(cfg: ModelConfig, backbone: Backbone) -> nn.Module:
    d = cfg.decoder
    return FPN(
        backbone.channels,
        backbone.strides,
        channels=d.channels,
        min_level=d.min_level,
        max_level=_fpn_max_level(cfg),
        norm_layer=NORMS[d.norm](cfg),
        act_layer=get_act_layer(cfg.head.activation),
    )


DECODERS: dict[str, Callable[[ModelConfig, Backbone], nn.Module]] = {
    "aspp": _aspp,
    "maskconver_fpn": _maskconver_fpn,
    "fpn": _fpn,
}

# --------------------------------------------------------------------------------------------
# Model


def build_backbone(cfg: ModelConfig) -> Backbone:
    """The backbone named by ``cfg.backbone.name`` (weights are loaded by ``build_model``)."""
    name = cfg.backbone.name
    if name not in BACKBONES:
        raise ConfigError(
            f"model.backbone.name: unknown backbone {name!r}; choose from {sorted(BACKBONES)}"
        )
    return BACKBONES[name](cfg.backbone, _norm_bn(cfg))


def _stride_index(strides: tuple[int, ...], level: int, what: str) -> int:
    if 2**level not in strides:
        raise ConfigError(
            f"{what}: level {level} (stride {2**level}) is not among strides {list(strides)}"
        )
    return strides.index(2**level)


def _fusions(
    cfg: ModelConfig, backbone: Backbone, decoder: nn.Module
) -> tuple[list[nn.Module], int, int]:
    """Three independent (center, embedding, pixel) fusions + center-level count + input width."""
    strides: tuple[int, ...] = tuple(decoder.strides)  # type: ignore[arg-type]
    dec_channels: tuple[int, ...] = tuple(decoder.channels)  # type: ignore[arg-type]
    if cfg.multiscale:
        if cfg.decoder.name == "aspp":
            raise ConfigError(
                "model.multiscale needs an FPN decoder (decoder.name fpn or maskconver_fpn)"
            )
        levels = range(cfg.min_level, cfg.max_level + 1)
        indices = [_stride_index(strides, lv, "model.min_level..max_level") for lv in levels]
        target = _stride_index(backbone.strides, cfg.pixel_level, "model.pixel_level (backbone)")
        fusions: list[nn.Module] = [
            SelectLevels(indices),
            SelectLevels(indices),
            PyramidFusion(target_index=target),
        ]
        return fusions, len(indices), dec_channels[0]
    if cfg.decoder.name == "aspp":
        low = _stride_index(backbone.strides, cfg.level, "model.level (backbone)")
        width = cfg.head.low_level_channels
        if dec_channels[0] != width:
            raise ConfigError(
                f"sum-to-merge adds the ASPP output ({dec_channels[0]} ch) to the projected "
                f"backbone map ({width} ch): set decoder.channels == head.low_level_channels"
            )
        fusions = [
            SumToMerge(
                backbone.channels[low],
                low_index=low,
                high_index=0,
                channels=width,
                norm_layer=NORMS[cfg.head.norm](cfg),
                act_layer=get_act_layer(cfg.head.activation),
            )
            for _ in range(3)
        ]
        return fusions, 1, width
    index = _stride_index(strides, cfg.level, "model.level (decoder)")
    return [SelectLevels([index]) for _ in range(3)], 1, dec_channels[index]


def build_model(cfg: ModelConfig, num_classes: int) -> MaskConver:
    """Assemble ``MaskConver`` from the model config.

    Single-scale: centers, center embeddings and pixel embeddings at ``level``; with ASPP every
    head gets its own DeepLabv3+ sum-to-merge with the backbone map at that stride, with an FPN
    decoder the level is selected (the pyramid is built up to ``level`` only, so
    ``decoder.max_level`` is ignored). Multi-scale: center heads on decoder levels
    ``min_level..max_level`` (shared convs, per-level norms), pixel head on the pyramid fusion at
    ``pixel_level``. Loads ``backbone.weights`` when set and prints the load summary.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    backbone = build_backbone(cfg)
    if cfg.backbone.weights:
        from maskconver.backbones.weights import load_backbone_weights

        print(load_backbone_weights(backbone, cfg.backbone.weights).summary())
    if cfg.decoder.name not in DECODERS:
        raise ConfigError(
            f"model.decoder.name: unknown decoder {cfg.decoder.name!r}; "
            f"choose from {sorted(DECODERS)}"
        )
    decoder = DECODERS[cfg.decoder.name](cfg, backbone)
    (center_fusion, embedding_fusion, pixel_fusion), num_levels, width = _fusions(
        cfg, backbone, decoder
    )
    h = cfg.head
    head = partial(
        LightHead,
        width,
        channels=h.channels,
        num_convs=h.num_convs,
        kernel_size=h.kernel_size,
        norm_layer=NORMS[h.norm](cfg),
        act_layer=get_act_layer(h.activation),
    )
    return MaskConver(
        backbone=backbone,
        decoder=decoder,
        center_fusion=center_fusion,
        embedding_fusion=embedding_fusion,
        pixel_fusion=pixel_fusion,
        center_head=head(num_classes, num_levels=num_levels, prior_prob=h.prior_prob),
        embedding_head=head(cfg.embedding_dim, num_levels=num_levels),
        pixel_head=head(cfg.embedding_dim, num_levels=1),
        mask_embedding=MaskEmbeddingGenerator(
            num_classes,
            cfg.embedding_dim,
            hidden_dim=cfg.mlp_hidden,
            fusion=cfg.fusion,
            act_layer=get_act_layer(cfg.mlp_activation),
        ),
        num_proposals=cfg.num_proposals,
    )


# --------------------------------------------------------------------------------------------
# Everything around the model


def resolve_num_classes(cfg: Config, categories: CategorySet) -> int:
    """``cfg.model.num_classes`` if set (must cover the label space), else the categories'."""
    needed = categories.num_classes
    if cfg.model.num_classes is None:
        return needed
    if cfg.model.num_classes < needed:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} is too small: label space "
            f"'{categories.label_space}' of this dataset needs {needed} classes"
        )
    return cfg.model.num_classes


def center_strides(cfg: ModelConfig) -> list[int]:
    """Strides of the center levels (one for single-scale)."""
    if cfg.multiscale:
        return [2**lv for lv in range(cfg.min_level, cfg.max_level + 1)]
    return [2**cfg.level]


def build_target_generator(cfg: Config, categories: CategorySet, num_classes: int) -> Any:
    """``TargetGenerator`` matching the model's center levels and K."""
    from maskconver.targets.generator import TargetGenerator

    t = cfg.targets
    return TargetGenerator(
        num_classes=num_classes,
        category_to_class={c.id: categories.index(c.id) for c in categories.categories},
        thing_category_ids=[c.id for c in categories.categories if c.isthing],
        center_strides=center_strides(cfg.model),
        max_instances=cfg.model.num_proposals,
        mask_stride=t.mask_stride,
        thing_center=t.thing_center,
        stuff_center=t.stuff_center,
        max_stuff_centers=t.max_stuff_centers,
        stuff_dilation=t.stuff_dilation,
        min_stuff_area=t.min_stuff_area,
        gaussian_iou=t.gaussian_iou,
        level_ranges=list(zip(t.level_low, t.level_high)) if cfg.model.multiscale else None,
        crowd_as_ignore=t.crowd_as_ignore,
    )


def build_criterion(cfg: Config) -> Any:
    """``MaskConverCriterion`` with the configured loss weights."""
    from maskconver.losses.criterion import MaskConverCriterion

    loss = cfg.loss
    return MaskConverCriterion(
        center_weight=loss.center_weight,
        bce_weight=loss.bce_weight,
        dice_weight=loss.dice_weight,
        focal_alpha=loss.focal_alpha,
        focal_beta=loss.focal_beta,
        dice_mode=loss.dice_mode,
    )


def build_postprocessor(
    cfg: Config, categories: CategorySet, num_classes: int
) -> PanopticPostProcessor:
    """Panoptic merge mapping class indices back to dataset category ids."""
    class_to_category = [-1] * num_classes
    for c in categories.categories:
        class_to_category[categories.index(c.id)] = c.id
    p = cfg.postprocess
    return PanopticPostProcessor(
        class_to_category=class_to_category,
        is_thing_class=categories.is_thing_mask(num_classes).tolist(),
        merge=p.merge,
        object_threshold=p.object_threshold,
        overlap_threshold=p.overlap_threshold,
        min_area=p.min_area,
        mask_threshold=p.mask_threshold,
        hard_sigmoid=p.hard_sigmoid,
    )


def build_train_transforms(cfg: Config) -> Any:
    """Random horizontal flip (if enabled) then large scale jitter to ``augment.input_size``."""
    from maskconver.data.transforms import Compose, LargeScaleJitter, RandomHorizontalFlip

    a = cfg.augment
    steps: list[Any] = [RandomHorizontalFlip(FLIP_PROB)] if a.hflip else []
    steps.append(LargeScaleJitter(tuple(a.input_size), a.scale_min, a.scale_max))
    return Compose(steps)


def build_copy_paste(cfg: Config, categories: CategorySet) -> Any | None:
    """``PanopticCopyPaste`` when ``augment.copy_paste`` is on, else None.

    The pasted (second) image gets its own large scale jitter with the ``copy_paste_scale_*``
    range (reference 2.8); the first image goes through ``build_train_transforms``.
    """
    if not cfg.augment.copy_paste:
        return None
    from maskconver.data.copy_paste import PanopticCopyPaste
    from maskconver.data.transforms import LargeScaleJitter

    a = cfg.augment
    return PanopticCopyPaste(
        prob=a.copy_paste_prob,
        jitter=LargeScaleJitter(
            tuple(a.input_size), a.copy_paste_scale_min, a.copy_paste_scale_max
        ),
        thing_category_ids=[c.id for c in categories.categories if c.isthing],
    )


def build_eval_transforms(cfg: Config) -> Any:
    """Resize the longest side to ``eval.input_size`` and pad to a square."""
    from maskconver.data.transforms import ResizePad

    return ResizePad(cfg.eval.input_size)
