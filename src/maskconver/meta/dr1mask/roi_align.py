"""RoIAlign in pure torch (He et al. 2017; ``aligned`` is detectron2's ROIAlignV2).

``roi_align(features, boxes, batch_index, output_size, spatial_scale, aligned=True)`` samples
each box on an ``output_size`` grid with one bilinear sample per bin (sampling ratio 1): bin
``(p, q)`` of a box ``(x0, y0, x1, y1)`` is read at feature coordinates

``y = y0 s - o + (p + 0.5) (y1 - y0) s / P`` and ``x = x0 s - o + (q + 0.5) (x1 - x0) s / Q``

with ``o = 0.5`` when ``aligned`` (a box coordinate ``c`` maps to the continuous feature
coordinate ``c * s`` whose pixel centres sit at ``i + 0.5``) and ``o = 0`` otherwise (then boxes
are at least one feature pixel wide, as in the original RoIAlign). Bilinear sampling follows
torchvision's kernel: a point more than one pixel outside the map reads 0, a point in
``[-1, 0)`` reads the border, indices past the last pixel are clamped to it.

Maps whose pixel ``i`` is centred on input pixel ``stride * i`` (the corner convention of the
strided convs here, see ``layers/resample.py``) are read with boxes shifted by
``corner_shift(stride)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

ALIGNED_OFFSET = 0.5


def corner_shift(stride: int) -> float:
    """Box shift that makes ``aligned`` RoIAlign read a corner-convention map of ``stride``.

    Pixel ``i`` of such a map sits at input coordinate ``stride * i + 0.5``; aligned RoIAlign
    with scale ``1 / stride`` reads feature coordinate ``c / stride - 0.5``; shifting ``c`` by
    ``(stride - 1) / 2`` makes the two agree.
    """
    return (stride - 1) / 2


def _axis(
    start: Tensor, length: Tensor, bins: int, size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per box ``[R]`` -> low / high indices, the high weight and validity ``[R, bins]``."""
    steps = torch.arange(bins, dtype=start.dtype, device=start.device) + 0.5
    coord = start[:, None] + steps[None, :] * (length[:, None] / bins)
    valid = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(coord.dtype), coord)
    return low, high, coord - low.to(coord.dtype), valid


def roi_align(
    features: Tensor,
    boxes: Tensor,
    batch_index: Tensor,
    output_size: int | tuple[int, int],
    *,
    spatial_scale: float = 1.0,
    aligned: bool = True,
) -> Tensor:
    """Crop and resize boxes of a feature map (sampling ratio 1).

    Args:
        features: ``[B, C, H, W]``.
        boxes: ``[R, 4]`` ``(x0, y0, x1, y1)`` in input coordinates.
        batch_index: ``[R]`` int64 image of each box.
        output_size: ``P`` or ``(P, Q)``.
        spatial_scale: feature pixels per input pixel (``1 / stride``).
        aligned: half-pixel alignment (see the module docstring).

    Returns:
        ``[R, C, P, Q]``.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    batch, channels, height, width = features.shape
    if boxes.shape[0] == 0:
        return features.new_zeros(0, channels, out_h, out_w)
    offset = ALIGNED_OFFSET if aligned else 0.0
    scaled = boxes.to(features.dtype) * spatial_scale - offset
    roi_w = scaled[:, 2] - scaled[:, 0]
    roi_h = scaled[:, 3] - scaled[:, 1]
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    y_low, y_high, ly, y_valid = _axis(scaled[:, 1], roi_h, out_h, height)
    x_low, x_high, lx, x_valid = _axis(scaled[:, 0], roi_w, out_w, width)
    flat = features.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    base = (batch_index.long() * (height * width))[:, None, None]

    def read(ys: Tensor, xs: Tensor) -> Tensor:
        index = base + ys[:, :, None] * width + xs[:, None, :]  # [R, P, Q]
        return flat[index.reshape(-1)].reshape(*index.shape, channels)

    wy_high, wx_high = ly[:, :, None, None], lx[:, None, :, None]
    wy_low, wx_low = 1.0 - wy_high, 1.0 - wx_high
    value = (
        wy_low * wx_low * read(y_low, x_low)
        + wy_low * wx_high * read(y_low, x_high)
        + wy_high * wx_low * read(y_high, x_low)
        + wy_high * wx_high * read(y_high, x_high)
    )
    valid = (y_valid[:, :, None] & x_valid[:, None, :])[..., None]
    value = torch.where(valid, value, torch.zeros_like(value))
    return value.permute(0, 3, 1, 2).contiguous()
