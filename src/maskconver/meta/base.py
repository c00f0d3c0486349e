"""What a meta-architecture gives the rest of the system: one ``MetaArchitecture`` entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from maskconver.config import Config, ModelConfig
    from maskconver.data.types import CategorySet, PanopticSample
    from maskconver.inference import PostProcessor


@dataclass(frozen=True)
class MetaArchitecture:
    """Everything that changes with the meta-architecture (its package's ``build.ENTRY``).

    Attributes:
        build_model: ``(cfg.model, num_classes) -> model``; ``model(images)`` runs inference
            (``[B, 3, H, W]`` float 0..255 in, the architecture's output type out).
        build_target_generator: ``(cfg, categories, num_classes) -> (sample -> targets)``; the
            targets' class names its ``batch_type`` (a ``batching.StackedFields``).
        build_criterion: ``(cfg, num_classes) -> criterion``; ``criterion(outputs, targets)``
            returns a dict of named scalar losses whose ``"loss"`` is the total. It may own
            training-only parameters (they are optimised and checkpointed with the model).
        build_postprocessor: ``(cfg, categories, num_classes) -> post-processor`` turning the
            model's outputs into panoptic predictions (``inference.PostProcessor``: a call on a
            batch, ``core`` for one image's tensor merge, ``finish`` to number any core).
        teacher_forward: ``(model, images, targets) -> outputs``: how the training loop calls
            the (possibly DDP-wrapped) model with a batch's targets.
        build_export_module: ``(model, post-processor) -> module`` of the ONNX graph with the
            ``export.graph.ExportGraph`` contract (``output_names``, ``dynamic_axes``).
    """

    build_model: Callable[[ModelConfig, int], nn.Module]
    build_target_generator: Callable[[Config, CategorySet, int], Callable[[PanopticSample], Any]]
    build_criterion: Callable[[Config, int], nn.Module]
    build_postprocessor: Callable[[Config, CategorySet, int], PostProcessor]
    teacher_forward: Callable[[nn.Module, Tensor, Any], Any]
    build_export_module: Callable[[nn.Module, Any], nn.Module]
