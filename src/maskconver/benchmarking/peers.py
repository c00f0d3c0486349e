"""The peers of ``maskconver benchmark --compare`` (``benchmarking.compare``): ``transformers``.

Random init, built offline from their configs (the ``peers`` extra), each timed with its own
image processor and panoptic post-processing, one image per call:

* Mask2Former-R50 and MaskFormer-R50 (ResNet-50 backbone config);
* EoMT (Encoder-only Mask Transformer, CVPR 2025), the efficient modern peer: ViT-S (dim 384,
  6 heads) and ViT-B (dim 768, 12 heads), 12 layers, patch 16 as in the EoMT paper, at the
  benchmark's size; queries and the number of mask-predicting blocks are ``EomtConfig``'s
  defaults.

The peers need torchvision's compiled ``nms`` ops only at import time; with the CPU torch of
this project torchvision does not load, so ``_declare_torchvision_ops`` declares the two op
schemas before importing ``transformers`` (benchmark-only; the ops are never called).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

PEER_CLASSES = 133  # COCO panoptic
PATCH = 16
LAYERS = 12
EOMT_SIZES = {"EoMT-ViT-S": (384, 6), "EoMT-ViT-B": (768, 12)}  # hidden size, heads


def _declare_torchvision_ops() -> None:
    """Declare ``torchvision::nms``/``qnms`` so peer model code imports (never called)."""
    try:
        torch.ops.torchvision.nms  # noqa: B018 - probing for the op
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _declare_torchvision_ops.lib = lib  # type: ignore[attr-defined]  # keep it alive


def peer_contenders(size: int) -> dict[str, Callable[[], Any]]:
    """Mask2Former-R50, MaskFormer-R50 and EoMT ViT-S / ViT-B (random init), post-processed."""
    _declare_torchvision_ops()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import (
            Mask2FormerConfig,
            Mask2FormerForUniversalSegmentation,
            Mask2FormerImageProcessor,
            MaskFormerConfig,
            MaskFormerForInstanceSegmentation,
            MaskFormerImageProcessor,
        )
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        resnet = {
            "model_type": "resnet",
            "depths": [3, 4, 6, 3],
            "hidden_sizes": [256, 512, 1024, 2048],
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        }
        image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
        out: dict[str, Callable[[], Any]] = {}
        kinds: list[tuple[str, Any, Any, Any]] = [
            (
                "Mask2Former-R50",
                Mask2FormerConfig,
                Mask2FormerForUniversalSegmentation,
                Mask2FormerImageProcessor,
            ),
            (
                "MaskFormer-R50",
                MaskFormerConfig,
                MaskFormerForInstanceSegmentation,
                MaskFormerImageProcessor,
            ),
        ]
        for name, config_cls, model_cls, processor_cls in kinds:
            config = config_cls(
                backbone_config=resnet, use_pretrained_backbone=False, num_labels=PEER_CLASSES
            )
            model = model_cls(config).eval()
            processor = processor_cls(
                size={"shortest_edge": size, "longest_edge": size}, do_resize=True
            )

            def call(model: Any = model, processor: Any = processor) -> Any:
                inputs = processor(images=image, return_tensors="pt")
                with torch.inference_mode():
                    outputs = model(**inputs)
                return processor.post_process_panoptic_segmentation(
                    outputs, target_sizes=[(size, size)]
                )

            out[name] = call
    out.update(eomt_contenders(size, image))
    return out


def eomt_contenders(size: int, image: np.ndarray) -> dict[str, Callable[[], Any]]:
    """EoMT ViT-S and ViT-B (random init) with their processor and panoptic post-processing.

    Args:
        size: the square input size (a multiple of the patch size, 16).
        image: ``[size, size, 3]`` uint8.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import transformers
        from transformers import EomtForUniversalSegmentation

        config_cls: Any = transformers.EomtConfig  # (num_labels: a PretrainedConfig keyword)
        # the PIL processor where there is one: the default one wants torchvision's ops
        processor_cls: Any = getattr(
            transformers, "EomtImageProcessorPil", transformers.EomtImageProcessor
        )
    edges = {"shortest_edge": size, "longest_edge": size}
    out: dict[str, Callable[[], Any]] = {}
    for name, (hidden, heads) in EOMT_SIZES.items():
        config = config_cls(
            hidden_size=hidden,
            num_hidden_layers=LAYERS,
            num_attention_heads=heads,
            patch_size=PATCH,
            image_size=size,
            num_labels=PEER_CLASSES,
        )
        model = EomtForUniversalSegmentation(config).eval()
        processor = processor_cls(size=edges, do_split_image=False, do_pad=True)

        def call(model: Any = model, processor: Any = processor) -> Any:
            inputs = processor(images=image, return_tensors="pt")
            with torch.inference_mode():
                outputs = model(**inputs)
            return processor.post_process_panoptic_segmentation(
                outputs, target_sizes=[(size, size)], size=edges
            )

        out[name] = call
    return out
