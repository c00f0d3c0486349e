"""Named network parts: norms, backbones and decoders (dict literals), built from ``ModelConfig``.

Every decoder is sized from the backbone's declared feature contract (``channels``/``strides``);
a pyramid decoder spans the levels MaskConver's heads read (``model.maskconver``: ``level`` and
``mask_level``, or ``min_level..max_level`` when multi-scale).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from torch import nn

from maskconver.backbones.base import Backbone
from maskconver.config import BackboneConfig, ConfigError, ModelConfig
from maskconver.decoders.base import Decoder
from maskconver.layers.activation import get_act_layer
from maskconver.layers.norm import FrozenBatchNorm2d, LayerNorm2d
from maskconver.layers.types import NormLayer

if TYPE_CHECKING:
    from maskconver.backbones.resnet import ResNet50

LN_EPS = 1e-6  # Keras LayerNormalization epsilon used by every reference LN

# --------------------------------------------------------------------------------------------
# Named choices


def norm_bn(cfg: ModelConfig) -> NormLayer:
    """Batch norm with the model's eps and momentum."""
    return partial(nn.BatchNorm2d, eps=cfg.bn_eps, momentum=cfg.bn_momentum)


def _norm_ln(cfg: ModelConfig) -> NormLayer:
    return partial(LayerNorm2d, eps=LN_EPS)


NORMS: dict[str, Callable[[ModelConfig], NormLayer]] = {"bn": norm_bn, "ln": _norm_ln}


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


def _mobilenetv2(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.mobilenetv2 import MobileNetV2

    return MobileNetV2(output_stride=cfg.output_stride, norm_layer=norm_layer)


def _mobilenetv3_large(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.mobilenetv3 import MobileNetV3Large

    return MobileNetV3Large(output_stride=cfg.output_stride, norm_layer=norm_layer)


def _mobilenetv3_small(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.mobilenetv3 import MobileNetV3Small

    return MobileNetV3Small(output_stride=cfg.output_stride, norm_layer=norm_layer)


def _resnet50_trunk(cfg: BackboneConfig, norm_layer: NormLayer) -> ResNet50:
    from maskconver.backbones.resnet import ResNet50

    return ResNet50(
        norm_layer=norm_layer,
        act_layer=get_act_layer(cfg.activation),
        drop_path_rate=cfg.drop_path_rate,
        output_stride=cfg.output_stride,
    )


def _resnet50(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    return _resnet50_trunk(cfg, norm_layer)


def _resnet50_unet(cfg: BackboneConfig, norm_layer: NormLayer) -> Backbone:
    from maskconver.backbones.resnet_unet import ResNetUNet

    return ResNetUNet(
        _resnet50_trunk(cfg, norm_layer),
        channels=tuple(cfg.unet_channels),
        repeats=tuple(cfg.unet_repeats),
        se_ratio=cfg.unet_se_ratio,
        drop_path_rate=cfg.drop_path_rate,
        act_layer=get_act_layer(cfg.activation),
    )


BACKBONES: dict[str, Callable[[BackboneConfig, NormLayer], Backbone]] = {
    "tiny": _tiny,
    "mobilenet_mh": _mobilenet_mh,
    "mobilenetv2": _mobilenetv2,
    "mobilenetv3_large": _mobilenetv3_large,
    "mobilenetv3_small": _mobilenetv3_small,
    "resnet50": _resnet50,
    "resnet50_unet": _resnet50_unet,
}


def _aspp(cfg: ModelConfig, backbone: Backbone) -> Decoder:
    from maskconver.decoders.aspp import ASPP

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
    mc = cfg.maskconver
    return cfg.decoder.max_level if mc.multiscale else mc.level


def _fpn_min_level(cfg: ModelConfig) -> int:
    """The pyramid's finest level: down to MaskConver's ``mask_level`` when the masks are finer."""
    mc = cfg.maskconver
    if mc.multiscale or mc.mask_level is None:
        return cfg.decoder.min_level
    return min(cfg.decoder.min_level, mc.mask_level)


def _maskconver_fpn(cfg: ModelConfig, backbone: Backbone) -> Decoder:
    from maskconver.decoders.maskconver_fpn import MaskConverFPN

    d = cfg.decoder
    return MaskConverFPN(
        backbone.channels,
        backbone.strides,
        channels=d.channels,
        min_level=_fpn_min_level(cfg),
        max_level=_fpn_max_level(cfg),
        fusion=d.fusion,
        separable=d.separable,
        kernel_size=d.kernel_size,
        norm=d.norm,
        act_layer=get_act_layer(cfg.head.activation),
        bn_layer=norm_bn(cfg),
    )


def _fpn(cfg: ModelConfig, backbone: Backbone) -> Decoder:
    from maskconver.decoders.fpn import FPN

    d = cfg.decoder
    return FPN(
        backbone.channels,
        backbone.strides,
        channels=d.channels,
        min_level=_fpn_min_level(cfg),
        max_level=_fpn_max_level(cfg),
        norm_layer=NORMS[d.norm](cfg),
        act_layer=get_act_layer(cfg.head.activation),
    )


def _bifpn(cfg: ModelConfig, backbone: Backbone) -> Decoder:
    from maskconver.decoders.bifpn import BiFPN

    d = cfg.decoder
    return BiFPN(
        backbone.channels,
        backbone.strides,
        channels=d.channels,
        min_level=_fpn_min_level(cfg),
        max_level=d.max_level,
        num_repeats=d.bifpn_repeats,
        num_outputs=None
        if cfg.maskconver.multiscale
        else cfg.maskconver.level - _fpn_min_level(cfg) + 1,
        norm_layer=NORMS[d.norm](cfg),
        act_layer=get_act_layer(cfg.head.activation),
    )


def _convnext_unet(cfg: ModelConfig, backbone: Backbone) -> Decoder:
    from maskconver.decoders.convnext_unet import ConvNeXtUNet

    d = cfg.decoder
    return ConvNeXtUNet(
        backbone.channels,
        backbone.strides,
        channels=d.channels,
        min_level=_fpn_min_level(cfg),
        max_level=_fpn_max_level(cfg),
        repeats=tuple(d.unet_repeats),
        act_layer=get_act_layer("gelu"),
    )


def head_levels(cfg: ModelConfig) -> list[int]:
    """Levels the center and embedding heads read (one for single-scale)."""
    mc = cfg.maskconver
    return list(range(mc.min_level, mc.max_level + 1)) if mc.multiscale else [mc.level]


def _dr1basis(cfg: ModelConfig, backbone: Backbone) -> Decoder:
    from maskconver.decoders.dr1basis import DR1Basis

    d, r = cfg.decoder, cfg.decoder.dr1
    return DR1Basis(
        backbone.channels,
        backbone.strides,
        channels=d.channels,
        width=r.width,
        min_level=d.min_level,
        max_level=d.max_level,
        tower_convs=r.tower_convs,
        factors=r.factors,
        param=r.param,
        factor_source=r.factor_source,
        fusion=r.fusion,
        aligned=r.aligned,
        head_levels=head_levels(cfg),
        norm_layer=NORMS[d.norm](cfg),
        act_layer=get_act_layer(cfg.head.activation),
    )


DECODERS: dict[str, Callable[[ModelConfig, Backbone], Decoder]] = {
    "aspp": _aspp,
    "maskconver_fpn": _maskconver_fpn,
    "fpn": _fpn,
    "bifpn": _bifpn,
    "convnext_unet": _convnext_unet,
    "dr1basis": _dr1basis,
}


def load_weights(cfg: ModelConfig, backbone: Backbone) -> None:
    """Load ``model.backbone.weights`` (a torchvision-named file) when set; print the report."""
    if cfg.backbone.weights:
        from maskconver.backbones.weights import load_backbone_weights

        print(load_backbone_weights(backbone, cfg.backbone.weights).summary())


def build_backbone(cfg: ModelConfig) -> Backbone:
    """The backbone named by ``cfg.backbone.name`` (weights are loaded by ``build_model``)."""
    name = cfg.backbone.name
    if name not in BACKBONES:
        raise ConfigError(
            f"model.backbone.name: unknown backbone {name!r}; choose from {sorted(BACKBONES)}"
        )
    # model.backbone.frozen_bn: every backbone's BN layers frozen (statistics and affine fixed)
    norm_layer = FrozenBatchNorm2d if cfg.backbone.frozen_bn else norm_bn(cfg)
    return BACKBONES[name](cfg.backbone, norm_layer)


def build_decoder(cfg: ModelConfig, backbone: Backbone) -> Decoder:
    """The decoder named by ``cfg.decoder.name``, sized from the backbone's feature contract."""
    if cfg.decoder.name not in DECODERS:
        raise ConfigError(
            f"model.decoder.name: unknown decoder {cfg.decoder.name!r}; "
            f"choose from {sorted(DECODERS)}"
        )
    return DECODERS[cfg.decoder.name](cfg, backbone)
