"""The DR1Mask table entry (``ENTRY``): model, targets, criterion, post-processor, teacher call.

Backbone -> FPN over ``model.decoder.min_level..max_level`` (P3-P7 in the paper) -> FCOS towers
-> top layer -> DR1Basis -> unified panoptic layer (``maskconver.meta.dr1mask``). K detections per
image is ``model.num_proposals``; everything DR1Mask-specific is in ``model.dr1mask``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from maskconver.build.parts import NORMS, build_backbone, load_weights
from maskconver.config import Config, ModelConfig
from maskconver.decoders.fpn import FPN
from maskconver.layers.activation import get_act_layer
from maskconver.layers.types import NormLayer
from maskconver.meta.base import MetaArchitecture
from maskconver.meta.dr1mask.basis import DR1MaskBasis
from maskconver.meta.dr1mask.detect import DetectionSettings
from maskconver.meta.dr1mask.fcos import FCOSHead
from maskconver.meta.dr1mask.instance_modules import (
    FactoredAttention,
    FullAttention,
    InstanceModule,
    VectorEmbedding,
    mask_queries,
)
from maskconver.meta.dr1mask.model import DR1Mask
from maskconver.meta.dr1mask.postprocess import DR1MaskPostProcessor
from maskconver.meta.dr1mask.top_layer import TopLayer
from maskconver.meta.dr1mask.unified import UnifiedPanopticLayer

if TYPE_CHECKING:
    from maskconver.data.types import CategorySet
    from maskconver.meta.dr1mask.instances import DR1MaskInstancePostProcessor


def pyramid_strides(cfg: ModelConfig) -> list[int]:
    """Strides of the FPN levels ``decoder.min_level..max_level``."""
    return [2**lv for lv in range(cfg.decoder.min_level, cfg.decoder.max_level + 1)]


def basis_stride(cfg: ModelConfig) -> int:
    """Stride of ``F``: one x2 below the finest pyramid level (4 for P3)."""
    return 2 ** (cfg.decoder.min_level - 1)


def _tower_norm(cfg: ModelConfig) -> NormLayer:
    r = cfg.dr1mask
    if r.tower_norm == "gn":
        return partial(nn.GroupNorm, r.gn_groups)
    return NORMS["bn"](cfg)


def _vector(cfg: ModelConfig) -> InstanceModule:
    return VectorEmbedding(cfg.dr1mask.basis_width)


def _factored(cfg: ModelConfig) -> InstanceModule:
    r = cfg.dr1mask
    return FactoredAttention(
        r.basis_width,
        num_bases=r.attention_bases,
        attention_size=r.attention_size,
        rank=r.attention_rank,
    )


def _full(cfg: ModelConfig) -> InstanceModule:
    r = cfg.dr1mask
    return FullAttention(
        r.basis_width, num_bases=r.attention_bases, attention_size=r.attention_size
    )


# ``model.dr1mask.instance_module`` -> builder (paper section 3.2.3; ``instance_modules.py``)
INSTANCE_MODULES: dict[str, Callable[[ModelConfig], InstanceModule]] = {
    "vector": _vector,
    "factored": _factored,
    "full": _full,
}


def build_instance_module(cfg: ModelConfig) -> InstanceModule:
    """The configured instance prediction module (its ``embedding_dim`` sizes the top layer)."""
    return INSTANCE_MODULES[cfg.dr1mask.instance_module](cfg)


def build_model(cfg: ModelConfig, num_classes: int) -> DR1Mask:
    """Assemble ``DR1Mask`` from the model config (loads ``backbone.weights`` when set)."""
    backbone = build_backbone(cfg)
    load_weights(cfg, backbone)
    d, r = cfg.decoder, cfg.dr1mask
    act = get_act_layer(cfg.head.activation)
    pyramid = FPN(
        backbone.channels,
        backbone.strides,
        channels=d.channels,
        min_level=d.min_level,
        max_level=d.max_level,
        norm_layer=NORMS[d.norm](cfg),
        act_layer=act,
    )
    head = FCOSHead(
        d.channels,
        num_classes,
        strides=pyramid.strides,
        num_convs=r.tower_convs,
        norm_layer=_tower_norm(cfg),
        act_layer=act,
        prior_prob=r.prior_prob,
    )
    instance_module = build_instance_module(cfg)
    return DR1Mask(
        backbone=backbone,
        pyramid=pyramid,
        head=head,
        top_layer=TopLayer(
            d.channels,
            instance_module.embedding_dim,
            r.basis_width,
            factors=r.factors,
            kernel_size=r.top_kernel,
        ),
        basis=DR1MaskBasis(
            d.channels,
            len(pyramid.strides),
            width=r.basis_width,
            param=r.factor_param,
            aligned=r.aligned,
            norm_layer=NORMS[d.norm](cfg),
            act_layer=act,
        ),
        unified=UnifiedPanopticLayer(r.basis_width, num_classes),
        detection=DetectionSettings(
            num_detections=cfg.num_proposals,
            pre_nms_topk=r.pre_nms_topk,
            score_threshold=r.score_threshold,
            nms_iou=r.nms_iou,
        ),
        basis_stride=basis_stride(cfg),
        instance_module=instance_module,
        mask_size=r.mask_size,
        detection_masks=r.task == "instance" or r.merge.mode == "paste",
    )


def build_target_generator(cfg: Config, categories: CategorySet, num_classes: int) -> Any:
    """``DR1MaskTargetGenerator`` for the model's pyramid and K slots."""
    from maskconver.meta.dr1mask.targets import DR1MaskTargetGenerator

    r = cfg.model.dr1mask
    return DR1MaskTargetGenerator(
        num_classes=num_classes,
        category_to_class={c.id: categories.index(c.id) for c in categories.categories},
        thing_category_ids=[c.id for c in categories.categories if c.isthing],
        strides=pyramid_strides(cfg.model),
        sizes_of_interest=r.sizes_of_interest,
        center_radius=r.center_radius,
        max_instances=cfg.model.num_proposals,
        mask_size=r.mask_size,
        target_stride=r.target_stride,
    )


def build_criterion(cfg: Config, num_classes: int) -> nn.Module:
    """``DR1MaskCriterion`` with the configured weights."""
    from maskconver.meta.dr1mask.criterion import DR1MaskCriterion

    r = cfg.model.dr1mask
    return DR1MaskCriterion(
        num_classes=num_classes,
        focal_alpha=r.focal_alpha,
        focal_gamma=r.focal_gamma,
        cls_weight=r.cls_weight,
        box_weight=r.box_weight,
        centerness_weight=r.centerness_weight,
        mask_weight=r.mask_weight,
        unified_weight=r.unified_weight,
        mask_size=r.mask_size,
        basis_stride=basis_stride(cfg.model),
        target_stride=r.target_stride,
    )


def build_postprocessor(
    cfg: Config, categories: CategorySet, num_classes: int
) -> DR1MaskPostProcessor:
    """The unified-argmax (or paste) post-processor, class indices mapped to category ids."""
    m = cfg.model.dr1mask.merge
    return DR1MaskPostProcessor(
        class_to_category=categories.class_to_category(num_classes),
        is_thing_class=categories.is_thing_mask(num_classes).tolist(),
        merge=m.mode,
        object_threshold=m.object_threshold,
        overlap_threshold=m.overlap_threshold,
        min_area=m.min_area,
        mask_threshold=m.mask_threshold,
        basis_stride=basis_stride(cfg.model),
        mask_size=cfg.model.dr1mask.mask_size,
        box_crop=m.box_crop,
        max_canvas_pixels=cfg.postprocess.max_canvas_pixels,
    )


def build_instance_postprocessor(
    cfg: Config, categories: CategorySet, num_classes: int
) -> DR1MaskInstancePostProcessor:
    """The instance task's post-processor (detections above ``score_threshold``, crop masks)."""
    from maskconver.meta.dr1mask.instances import DR1MaskInstancePostProcessor

    r = cfg.model.dr1mask
    return DR1MaskInstancePostProcessor(
        class_to_category=categories.class_to_category(num_classes),
        is_thing_class=categories.is_thing_mask(num_classes).tolist(),
        score_threshold=r.score_threshold,
        mask_threshold=r.merge.mask_threshold,
    )


def build_export_module(model: nn.Module, postprocessor: Any) -> nn.Module:
    """The exportable graph (image -> unified argmax core + raw detections)."""
    from maskconver.meta.dr1mask.export import DR1MaskExportModule

    return DR1MaskExportModule(model, postprocessor)


def teacher_forward(model: nn.Module, images: Tensor, targets: Any) -> Any:
    """Training forward: the dense outputs and the positives' mask logits in their GT boxes.

    The criterion builds the unified layer's instance columns from ground truth.
    """
    queries = mask_queries(targets.boxes, targets.instance_valid, targets.labels, targets.gt_index)
    return model(images, detect=False, queries=queries)


ENTRY = MetaArchitecture(
    build_model=build_model,
    build_target_generator=build_target_generator,
    build_criterion=build_criterion,
    build_postprocessor=build_postprocessor,
    teacher_forward=teacher_forward,
    build_export_module=build_export_module,
)
