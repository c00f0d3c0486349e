"""The MaskConver table entry (``ENTRY``): model, targets, criterion, post-processor, teacher call.

Everything MaskConver-specific is in ``model.maskconver`` (``MaskConverConfig``: its model
fields, ``targets``, ``loss`` and ``merge``). Single-scale: centers, center embeddings and pixel
embeddings at ``model.maskconver.level`` (pixel embeddings at ``mask_level`` when set; ASPP with
a DeepLabv3+ sum-to-merge per head, or one FPN level). Multi-scale: center heads on decoder
levels ``min_level..max_level``, pixel head on the pyramid fusion at ``pixel_level``.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from maskconver.backbones.base import Backbone
from maskconver.build.parts import NORMS, build_backbone, build_decoder, load_weights
from maskconver.config import Config, ConfigError, ModelConfig
from maskconver.decoders.base import Decoder
from maskconver.layers.activation import get_act_layer
from maskconver.meta.base import MetaArchitecture
from maskconver.meta.maskconver.heads import (
    LightHead,
    MaskEmbeddingGenerator,
    PyramidFusion,
    SelectLevels,
    SemanticHead,
    SumToMerge,
)
from maskconver.meta.maskconver.model import MaskConver
from maskconver.meta.maskconver.postprocess import PanopticPostProcessor

if TYPE_CHECKING:
    from maskconver.data.types import CategorySet


def _stride_index(strides: tuple[int, ...], level: int, what: str) -> int:
    if 2**level not in strides:
        raise ConfigError(
            f"{what}: level {level} (stride {2**level}) is not among strides {list(strides)}"
        )
    return strides.index(2**level)


def _fusions(
    cfg: ModelConfig, backbone: Backbone, decoder: Decoder
) -> tuple[list[nn.Module], int, tuple[int, int, int]]:
    """Three independent (center, embedding, pixel) fusions, center-level count, head widths."""
    strides, dec_channels = decoder.strides, decoder.channels
    mc = cfg.maskconver
    if decoder.roles is not None:  # the decoder says which of its maps feed which head
        roles = decoder.roles
        heads = [roles["center"], roles["embedding"], roles["pixel"]]
        widths = tuple(dec_channels[r[0]] for r in heads)
        return [SelectLevels(r) for r in heads], len(roles["center"]), widths  # type: ignore[return-value]
    if mc.multiscale:
        if cfg.decoder.name == "aspp":
            raise ConfigError(
                "model.maskconver.multiscale needs an FPN decoder (decoder.name fpn or "
                "maskconver_fpn)"
            )
        levels = range(mc.min_level, mc.max_level + 1)
        indices = [
            _stride_index(strides, lv, "model.maskconver.min_level..max_level") for lv in levels
        ]
        target = _stride_index(
            backbone.strides, mc.pixel_level, "model.maskconver.pixel_level (backbone)"
        )
        fusions: list[nn.Module] = [
            SelectLevels(indices),
            SelectLevels(indices),
            PyramidFusion(target_index=target),
        ]
        return fusions, len(indices), (dec_channels[0],) * 3
    mask_level = mc.level if mc.mask_level is None else mc.mask_level
    if cfg.decoder.name == "aspp":
        low = _stride_index(backbone.strides, mc.level, "model.maskconver.level (backbone)")
        mask_low = _stride_index(
            backbone.strides, mask_level, "model.maskconver.mask_level (backbone)"
        )
        width = cfg.head.low_level_channels
        if dec_channels[0] != width:
            raise ConfigError(
                f"sum-to-merge adds the ASPP output ({dec_channels[0]} ch) to the projected "
                f"backbone map ({width} ch): set decoder.channels == head.low_level_channels"
            )
        fusions = [
            SumToMerge(
                backbone.channels[index],
                low_index=index,
                high_index=0,
                channels=width,
                norm_layer=NORMS[cfg.head.norm](cfg),
                act_layer=get_act_layer(cfg.head.activation),
            )
            for index in (low, low, mask_low)
        ]
        return fusions, 1, (width,) * 3
    index = _stride_index(strides, mc.level, "model.maskconver.level (decoder)")
    mask_index = _stride_index(strides, mask_level, "model.maskconver.mask_level (decoder)")
    fusions = [SelectLevels([index]), SelectLevels([index]), SelectLevels([mask_index])]
    return fusions, 1, (dec_channels[index], dec_channels[index], dec_channels[mask_index])


def build_model(cfg: ModelConfig, num_classes: int) -> MaskConver:
    """Assemble ``MaskConver`` from the model config (its own fields: ``cfg.maskconver``).

    Single-scale: centers, center embeddings and pixel embeddings at ``level`` (pixel embeddings
    at ``mask_level`` when set); with ASPP every
    head gets its own DeepLabv3+ sum-to-merge with the backbone map at that stride, with an FPN
    decoder the level is selected (the pyramid is built up to ``level`` only, so
    ``decoder.max_level`` is ignored, and down to ``mask_level`` when that is finer than
    ``decoder.min_level``). Multi-scale: center heads on decoder levels
    ``min_level..max_level`` (shared convs, per-level norms), pixel head on the pyramid fusion at
    ``pixel_level``. Loads ``backbone.weights`` when set and prints the load summary.
    """
    backbone = build_backbone(cfg)
    load_weights(cfg, backbone)
    decoder = build_decoder(cfg, backbone)
    (center_fusion, embedding_fusion, pixel_fusion), num_levels, widths = _fusions(
        cfg, backbone, decoder
    )
    h, mc = cfg.head, cfg.maskconver
    semantic_head = build_semantic_head(cfg, num_classes) if mc.stuff_mode == "region" else None
    head = partial(
        LightHead,
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
        center_head=head(widths[0], num_classes, num_levels=num_levels, prior_prob=h.prior_prob),
        embedding_head=head(widths[1], mc.embedding_dim, num_levels=num_levels),
        pixel_head=head(widths[2], mc.embedding_dim, num_levels=1),
        mask_embedding=MaskEmbeddingGenerator(
            num_classes,
            mc.embedding_dim,
            hidden_dim=mc.mlp_hidden,
            fusion=mc.fusion,
            act_layer=get_act_layer(mc.mlp_activation),
        ),
        num_proposals=cfg.num_proposals,
        hard_sigmoid=mc.hard_sigmoid,
        semantic_head=semantic_head,
    )


def build_semantic_head(cfg: ModelConfig, num_classes: int) -> SemanticHead:
    """The per-pixel classifier on the mask features (``embedding_dim`` channels)."""
    h = cfg.head
    return SemanticHead(
        cfg.maskconver.embedding_dim,
        num_classes,
        channels=h.semantic_channels,
        num_convs=h.semantic_convs,
        norm_layer=NORMS[h.norm](cfg),
        act_layer=get_act_layer(h.activation),
    )


# --------------------------------------------------------------------------------------------
# Everything around the model


def center_strides(cfg: ModelConfig) -> list[int]:
    """Strides of the center levels (one for single-scale)."""
    mc = cfg.maskconver
    if mc.multiscale:
        return [2**lv for lv in range(mc.min_level, mc.max_level + 1)]
    return [2**mc.level]


def build_target_generator(cfg: Config, categories: CategorySet, num_classes: int) -> Any:
    """``TargetGenerator`` matching the model's center levels and K."""
    from maskconver.meta.maskconver.targets.generator import TargetGenerator

    mc = cfg.model.maskconver
    t = mc.targets
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
        level_ranges=list(zip(t.level_low, t.level_high)) if mc.multiscale else None,
        crowd_as_ignore=t.crowd_as_ignore,
        stuff_centers=mc.stuff_mode == "center",
    )


def build_criterion(cfg: Config, num_classes: int) -> nn.Module:
    """``MaskConverCriterion`` with the configured loss weights and ReMaX settings.

    With ``model.maskconver.loss.semantic_weight > 0`` and center-based stuff the criterion owns
    a training-only ``SemanticHead`` on the mask features; with region-based stuff the model has
    its own.
    """
    from maskconver.meta.maskconver.losses.criterion import MaskConverCriterion

    mc = cfg.model.maskconver
    loss = mc.loss
    training_head = loss.semantic_weight > 0 and mc.stuff_mode == "center"
    return MaskConverCriterion(
        center_weight=loss.center_weight,
        bce_weight=loss.bce_weight,
        dice_weight=loss.dice_weight,
        focal_alpha=loss.focal_alpha,
        focal_beta=loss.focal_beta,
        dice_mode=loss.dice_mode,
        num_classes=num_classes,
        semantic_head=build_semantic_head(cfg.model, num_classes) if training_head else None,
        semantic_weight=loss.semantic_weight,
        remask=loss.remask,
        remask_detach=loss.remask_detach,
        remask_source=loss.remask_source,
        remask_identity=loss.remask_identity,
        maskid=loss.maskid,
        maskid_weight=loss.maskid_weight,
        reclass_eta=loss.reclass_eta,
        reclass_splat=loss.reclass_splat,
        hard_sigmoid=mc.hard_sigmoid,
    )


def build_postprocessor(
    cfg: Config, categories: CategorySet, num_classes: int
) -> PanopticPostProcessor:
    """Panoptic merge mapping class indices back to dataset category ids."""
    mc = cfg.model.maskconver
    m = mc.merge
    return PanopticPostProcessor(
        class_to_category=categories.class_to_category(num_classes),
        is_thing_class=categories.is_thing_mask(num_classes).tolist(),
        merge=m.mode,
        object_threshold=m.object_threshold,
        overlap_threshold=m.overlap_threshold,
        min_area=m.min_area,
        mask_threshold=m.mask_threshold,
        hard_sigmoid=mc.hard_sigmoid,
        stuff_from_semantic=mc.stuff_mode == "region",
        max_canvas_pixels=cfg.postprocess.max_canvas_pixels,
        algorithm=m.algorithm,
    )


def teacher_forward(model: nn.Module, images: Tensor, targets: Any) -> Any:
    """Training forward: masks at the ground-truth centers and classes (teacher forcing)."""
    return model(images, targets.center_indices, targets.classes)


def build_export_module(model: nn.Module, postprocessor: Any) -> nn.Module:
    """The exportable graph (image -> the post-processor's merge core + raw outputs)."""
    from maskconver.meta.maskconver.export import PanopticExportModule

    return PanopticExportModule(model, postprocessor)


ENTRY = MetaArchitecture(
    build_model=build_model,
    build_target_generator=build_target_generator,
    build_criterion=build_criterion,
    build_postprocessor=build_postprocessor,
    teacher_forward=teacher_forward,
    build_export_module=build_export_module,
)
