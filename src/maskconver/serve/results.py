"""A prediction as the API returns it: JSON records, a COCO panoptic PNG, an overlay PNG.

The panoptic PNG uses the COCO panoptic encoding (``id = R + 256 G + 256^2 B``,
``data.panoptic_png.id2rgb``), so ``rgb2id`` of the decoded PNG gives the ``[H, W]`` id map
back; the JSON's segment ids are those ids.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from maskconver.data.panoptic_png import id2rgb
from maskconver.data.types import CategorySet
from maskconver.postprocess.segments import PanopticPrediction
from maskconver.visualize import overlay, segment_colors

PNG_COMPRESS_LEVEL = 1  # fast: the PNGs are small and go over loopback or a LAN
SCORE_DECIMALS = 4
MS_DECIMALS = 2


def bboxes(panoptic: np.ndarray, ids: list[int]) -> dict[int, list[int]]:
    """COCO boxes ``[x, y, width, height]`` of the given segment ids in an ``[H, W]`` id map.

    One pass over the map (``ndimage.find_objects``); an id absent from the map gets
    ``[0, 0, 0, 0]``.
    """
    boxes: dict[int, list[int]] = {i: [0, 0, 0, 0] for i in ids}
    positive = [i for i in ids if i > 0]
    if not positive:
        return boxes
    labels = np.where(panoptic > 0, panoptic, 0)
    slices = ndimage.find_objects(labels, max_label=max(positive))
    for i in positive:
        found = slices[i - 1]
        if found is not None:
            rows, cols = found
            boxes[i] = [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start]
    return boxes


def segment_records(
    prediction: PanopticPrediction, categories: CategorySet
) -> list[dict[str, Any]]:
    """One JSON record per segment, in id order.

    Returns:
        ``{"id", "category_id", "category", "isthing", "score", "area", "bbox", "color"}``
        records: ``bbox`` is COCO ``[x, y, width, height]`` in pixels of the input image,
        ``color`` the ``[r, g, b]`` the overlay paints it with (``visualize.segment_colors``).
    """
    segments = sorted(prediction.segments, key=lambda s: s.id)
    boxes = bboxes(prediction.panoptic, [s.id for s in segments])
    colors = segment_colors(segments, categories)
    records = []
    for seg in segments:
        category = categories.by_id.get(seg.category_id)
        records.append(
            {
                "id": seg.id,
                "category_id": seg.category_id,
                "category": category.name if category is not None else str(seg.category_id),
                "isthing": bool(seg.isthing),
                "score": round(float(seg.score), SCORE_DECIMALS),
                "area": int(seg.area),
                "bbox": boxes[seg.id],
                "color": list(colors[seg.id]),
            }
        )
    return records


def prediction_json(
    prediction: PanopticPrediction, categories: CategorySet, latency_ms: float
) -> dict[str, Any]:
    """The ``POST /v1/predict`` JSON: ``width``, ``height``, ``latency_ms``, ``segments``."""
    height, width = prediction.panoptic.shape
    return {
        "width": int(width),
        "height": int(height),
        "latency_ms": round(latency_ms, MS_DECIMALS),
        "segments": segment_records(prediction, categories),
    }


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an ``[H, W, 3]`` uint8 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def panoptic_png(prediction: PanopticPrediction) -> bytes:
    """The ``[H, W]`` id map as a COCO panoptic PNG (``id = R + 256 G + 256^2 B``)."""
    return png_bytes(id2rgb(prediction.panoptic))


def overlay_png(
    image: np.ndarray, prediction: PanopticPrediction, categories: CategorySet
) -> bytes:
    """The drawn overlay (``visualize.overlay``) of an ``[H, W, 3]`` image as PNG."""
    return png_bytes(overlay(image, prediction.panoptic, prediction.segments, categories))


def backend_name(model: Any) -> str:
    """``torch``, ``onnxruntime``, ``openvino`` or ``tflite``: the runtime behind a backend."""
    kind = type(model).__name__
    names = {
        "TorchModel": "torch",
        "OnnxPanopticModel": "onnxruntime",
        "OpenVinoPanopticModel": "openvino",
        "TfLitePanopticModel": "tflite",
    }
    return names.get(kind, kind)


def model_json(predictor: Any, name: str) -> dict[str, Any]:
    """The ``GET /v1/model`` JSON of a ``Predictor``.

    Returns:
        ``name`` (the model file or checkpoint folder's name), ``backend``,
        ``meta_architecture``, ``backbone``, ``decoder``, ``input_size`` (the eval size: the
        longest side, or ``[H, W]`` of a fixed-size export) and ``categories`` (``id``,
        ``name``, ``isthing``, ``color``).
    """
    cfg = predictor.cfg
    metadata = getattr(predictor.model, "metadata", None)
    fixed = getattr(metadata, "input_size", None)
    return {
        "name": name,
        "backend": backend_name(predictor.model),
        "meta_architecture": cfg.model.meta_architecture,
        "backbone": cfg.model.backbone.name,
        "decoder": cfg.model.decoder.name,
        "input_size": list(fixed) if fixed is not None else cfg.eval.input_size,
        "categories": [
            {"id": c.id, "name": c.name, "isthing": bool(c.isthing), "color": list(c.color)}
            for c in predictor.categories.categories
        ],
    }
