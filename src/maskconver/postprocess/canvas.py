"""From the padded network input to the original image canvas (shared by every meta-architecture).

A padded network input ``(H, W)`` holds the resized image in its top-left ``valid_size`` corner;
the image's original size is ``output_size``. ``canvas_size`` is what the whole padded input
maps to, ``rescale_logits`` resamples low-resolution maps onto it (reference
``rescale_predictions``), ``working_size`` / ``enlarge`` bound the merge canvas of very large
images, and ``chunk_for`` bounds the memory of one chunk of upsampled maps.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maskconver.postprocess.segments import PanopticPrediction

# a chunk of upsampled proposals holds at most this many values (64 MB in float32), so a
# 12-megapixel canvas is merged one proposal at a time and memory grows with H x W only
MAX_CHUNK_VALUES = 1 << 24


def chunk_for(chunk: int, canvas: Sequence[int]) -> int:
    """Proposals per chunk on ``canvas``: at most ``chunk`` and ``MAX_CHUNK_VALUES`` values."""
    return max(1, min(chunk, MAX_CHUNK_VALUES // max(1, int(canvas[0]) * int(canvas[1]))))


def enlarge(prediction: PanopticPrediction, size: tuple[int, int]) -> PanopticPrediction:
    """Nearest-neighbour enlargement of a panoptic map to ``size`` (areas recounted)."""
    panoptic = prediction.panoptic
    rows = (np.arange(size[0]) * panoptic.shape[0] // size[0]).astype(np.intp)
    cols = (np.arange(size[1]) * panoptic.shape[1] // size[1]).astype(np.intp)
    big = panoptic[rows[:, None], cols[None, :]]
    areas = np.bincount(
        big.ravel(), minlength=max((s.id for s in prediction.segments), default=0) + 1
    )
    segments = [dataclasses.replace(s, area=int(areas[s.id])) for s in prediction.segments]
    return PanopticPrediction(panoptic=big, segments=[s for s in segments if s.area > 0])


def working_size(
    size: tuple[int, int], cap: int, *, what: str = "postprocess.max_canvas_pixels"
) -> tuple[int, int]:
    """``size``, or a smaller one within ``cap`` pixels (aspect kept, with a warning); 0: no cap.

    Args:
        size: the image's ``(H, W)``.
        cap: the most pixels of the merge canvas (0: none).
        what: the name of the cap in the warning.
    """
    height, width = size
    if cap <= 0 or height * width <= cap:
        return size
    scale = math.sqrt(cap / (height * width))
    working = (max(1, int(height * scale)), max(1, int(width * scale)))
    warnings.warn(
        f"a {height}x{width} image exceeds {what}={cap}: merged at "
        f"{working[0]}x{working[1]} and enlarged to its size",
        stacklevel=4,
    )
    return working


def canvas_size(
    input_size: tuple[int, int], valid_size: tuple[int, int], output_size: tuple[int, int]
) -> tuple[int, int]:
    """Size the whole padded input maps to when its valid part is resized to ``output_size``."""
    (hi, wi), (hv, wv), (ho, wo) = input_size, valid_size, output_size
    if not (0 < hv <= hi and 0 < wv <= wi):
        raise ValueError(f"valid size {valid_size} must lie inside the input size {input_size}")
    return max(ho, math.ceil(hi * ho / hv)), max(wo, math.ceil(wi * wo / wv))


def canvas_of(
    input_size: Sequence[Any], valid_size: Sequence[Any], output_size: Sequence[Any]
) -> tuple[Any, Any]:
    """``canvas_size`` for Python ints or 0-d int64 tensors (traced: the canvas stays dynamic).

    ``max(H0, ceil(H * H0 / h))`` with integer ops only, so a traced graph computes it from the
    graph's inputs; with ints it equals ``canvas_size`` (without its validation).
    """
    sizes = []
    for full, valid, out in zip(input_size, valid_size, output_size, strict=True):
        mapped = (full * out + valid - 1) // valid
        sizes.append(torch.maximum(out, mapped) if isinstance(mapped, Tensor) else max(out, mapped))
    return sizes[0], sizes[1]


def rescale_logits(
    logits: Tensor,
    input_size: tuple[int, int],
    valid_size: tuple[int, int],
    output_size: tuple[int, int],
) -> Tensor:
    """Resample mask logits onto the original image canvas.

    The padded network input (``input_size``) holds the resized image in its top-left
    ``valid_size`` corner; the image's original size is ``output_size``. The whole padded input is
    mapped to ``ceil(input_size * output / valid)`` pixels with one bilinear resize (half-pixel
    centres) and cropped to ``output_size`` (reference ``rescale_predictions``).

    Args:
        logits: ``[K, hm, wm]`` mask logits covering the padded input.
        input_size: ``(H, W)`` of the padded network input.
        valid_size: ``(h, w)`` of the resized image inside it.
        output_size: ``(H0, W0)`` of the original image.

    Returns:
        ``[K, H0, W0]`` logits.
    """
    canvas = canvas_size(input_size, valid_size, output_size)
    resized = F.interpolate(logits[None], size=canvas, mode="bilinear", align_corners=False)[0]
    return resized[:, : output_size[0], : output_size[1]]
