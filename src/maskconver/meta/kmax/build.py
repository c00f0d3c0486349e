"""The kMaX-DeepLab table entry (``ENTRY``): model, targets, criterion, post-processor, teacher.

Backbone (``model.backbone``) -> kMaX pixel decoder -> ``sum(transformer_blocks)`` k-means
transformer-decoder blocks over ``model.num_proposals`` queries -> final predictor. Everything
kMaX-specific is in ``model.kmax`` (``KMaXConfig``: network fields, ``loss`` with ReMaX's
switches, ``merge``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.build.parts import NORMS, build_backbone, load_weights
from maskconver.config import Config, ConfigError, ModelConfig
from maskconver.layers.activation import get_act_layer
from maskconver.meta.base import MetaArchitecture
from maskconver.meta.kmax.model import KMaXDeepLab, PixelHead
from maskconver.meta.kmax.pixel_decoder import KMaXPixelDecoder
from maskconver.meta.kmax.postprocess import KMaXPostProcessor
from maskconver.meta.kmax.transformer import KMaXBlock, KMaXPredictor

if TYPE_CHECKING:
    from maskconver.data.types import CategorySet

MASK_STRIDE = 4  # the pixel features and mask logits are at stride 4


def block_stages(strides: tuple[int, ...], cfg: ModelConfig) -> list[int]:
    """Per transformer-decoder block, the pixel-decoder stage it attends to (by stride)."""
    k = cfg.kmax
    stages = []
    for stride, count in zip(k.transformer_strides, k.transformer_blocks):
        if stride not in strides:
            raise ConfigError(
                f"model.kmax.transformer_strides: stride {stride} is not among the pixel "
                f"decoder's strides {list(strides)}"
            )
        stages += [strides.index(stride)] * count
    return stages


def build_model(cfg: ModelConfig, num_classes: int) -> KMaXDeepLab:
    """Assemble ``KMaXDeepLab`` from the model config (loads ``backbone.weights`` when set)."""
    backbone = build_backbone(cfg)
    load_weights(cfg, backbone)
    k = cfg.kmax
    norm = NORMS["bn"](cfg)
    act = get_act_layer(k.activation)
    decoder = KMaXPixelDecoder(
        backbone.channels,
        backbone.strides,
        channels=k.decoder_channels,
        num_blocks=k.decoder_blocks,
        axial_stages=k.axial_stages,
        num_heads=k.axial_heads,
        span=k.axial_span,
        norm_layer=norm,
        act_layer=act,
    )
    if decoder.strides[-1] != MASK_STRIDE:
        raise ConfigError(
            f"model.kmax: the pixel decoder's finest stage is at stride {decoder.strides[-1]}, "
            f"the masks need stride {MASK_STRIDE} (decoder_channels has one entry per backbone "
            f"map from the coarsest down; the backbone's strides are {list(backbone.strides)})"
        )
    stages = block_stages(decoder.strides, cfg)
    blocks = [
        KMaXBlock(
            decoder.channels[stage],
            query_dim=k.query_dim,
            pixel_dim=k.pixel_dim,
            num_classes=num_classes,
            num_heads=k.attention_heads,
            ffn_dim=k.ffn_dim,
            act_layer=act,
        )
        for stage in stages
    ]
    return KMaXDeepLab(
        backbone=backbone,
        pixel_decoder=decoder,
        pixel_head=PixelHead(decoder.channels[-1], k.pixel_dim, norm_layer=norm, act_layer=act),
        blocks=blocks,
        block_stages=stages,
        predictor=KMaXPredictor(k.query_dim, k.pixel_dim, num_classes),
        num_queries=cfg.num_proposals,
        query_dim=k.query_dim,
    )


def build_target_generator(cfg: Config, categories: CategorySet, num_classes: int) -> Any:
    """``KMaXTargetGenerator``: stride-4 masks (one per thing, one per stuff class), N slots."""
    from maskconver.meta.kmax.targets import KMaXTargetGenerator

    return KMaXTargetGenerator(
        num_classes=num_classes,
        category_to_class={c.id: categories.index(c.id) for c in categories.categories},
        thing_category_ids=[c.id for c in categories.categories if c.isthing],
        max_masks=cfg.model.num_proposals,
        mask_stride=MASK_STRIDE,
    )


def _stage_channels(cfg: ModelConfig, backbone: Backbone) -> list[int]:
    """Channels of the pixel-decoder map each block attends to (``KMaXPixelDecoder``'s rule)."""
    channels = cfg.kmax.decoder_channels
    strides = tuple(
        backbone.strides[i]
        for i in range(len(backbone.strides) - 1, len(backbone.strides) - 1 - len(channels), -1)
    )
    return [channels[s] for s in block_stages(strides, cfg)]


def build_criterion(cfg: Config, num_classes: int) -> nn.Module:
    """``KMaXCriterion`` with the configured weights and ReMaX switches.

    Its training-only heads (kMaX's auxiliary semantic head on the backbone maps, ReMaX's
    per-stage semantic heads) are sized from the backbone's declared channels.
    """
    from maskconver.meta.kmax.criterion import KMaXCriterion

    m = cfg.model
    loss = m.kmax.loss
    with torch.device("meta"):  # only its declared channels and strides are read: no weights
        backbone = build_backbone(m)
    return KMaXCriterion(
        num_classes=num_classes,
        stage_channels=_stage_channels(m, backbone),
        backbone_channels=list(backbone.channels),
        backbone_strides=list(backbone.strides),
        activation=loss.activation,
        pq_weight=loss.pq_weight,
        mask_id_weight=loss.mask_id_weight,
        instance_weight=loss.instance_weight,
        semantic_weight=loss.semantic_weight,
        focal_alpha=loss.focal_alpha,
        instance_points=loss.instance_points,
        semantic_points=loss.semantic_points,
        remask_stages=loss.remask_stages,
        remask_semantic_weight=loss.remask_semantic_weight,
        remask_identity=loss.remask_identity,
        reclass_eta=loss.reclass_eta,
        semantic_channels=loss.semantic_channels,
        aspp_rates=tuple(loss.semantic_rates),
        norm_layer=NORMS["bn"](m),
        act_layer=get_act_layer(m.kmax.activation),
    )


def build_postprocessor(
    cfg: Config, categories: CategorySet, num_classes: int
) -> KMaXPostProcessor:
    """The mask-transformer merge, class indices mapped back to dataset category ids."""
    k = cfg.model.kmax
    return KMaXPostProcessor(
        class_to_category=categories.class_to_category(num_classes),
        is_thing_class=categories.is_thing_mask(num_classes).tolist(),
        activation=k.loss.activation,
        object_threshold=k.merge.object_threshold,
        overlap_threshold=k.merge.overlap_threshold,
        mask_threshold=k.merge.mask_threshold,
        max_canvas_pixels=cfg.postprocess.max_canvas_pixels,
    )


def teacher_forward(model: nn.Module, images: Tensor, targets: Any) -> Any:
    """Training forward: the same call as inference (the criterion matches queries to masks)."""
    return model(images)


def build_export_module(model: nn.Module, postprocessor: Any) -> nn.Module:
    """The exportable graph (image -> merge core + final class and mask logits)."""
    from maskconver.meta.kmax.export import KMaXExportModule

    return KMaXExportModule(model, postprocessor)


ENTRY = MetaArchitecture(
    build_model=build_model,
    build_target_generator=build_target_generator,
    build_criterion=build_criterion,
    build_postprocessor=build_postprocessor,
    teacher_forward=teacher_forward,
    build_export_module=build_export_module,
)
