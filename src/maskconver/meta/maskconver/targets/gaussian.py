"""CenterNet-style Gaussian center heatmaps (reference section 2.5).

The reference keeps two CenterNet quirks on purpose and so do we:

* ``gaussian_radius`` divides every quadratic root by 2 instead of by ``2a``;
* the Gaussian is drawn over the WHOLE map (not truncated to a ``2r+1`` window).
"""

from __future__ import annotations

import math

import numpy as np

#: ``sigma = (2 * floor(r) + 1) / SIGMA_DIVISOR`` (CenterNet: the window diameter is 6 sigma).
SIGMA_DIVISOR = 6.0


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """Radius of the CenterNet "minimum IoU" rule, quirk included.

    Three corner-shift cases each give a quadratic ``a r^2 + b r + c = 0``; CenterNet (and the
    MaskConver reference) takes ``(b + sqrt(b^2 - 4ac)) / 2`` for each (dividing by 2, not
    ``2a``) and returns the minimum of the three.

    Args:
        height: box height in heatmap units (``(ymax - ymin) / stride``).
        width: box width in heatmap units.
        min_overlap: minimum IoU ``m`` between the true box and a box shifted by the radius.

    Returns:
        The radius (>= 0; 0 for a degenerate 0x0 box).
    """
    if height < 0 or width < 0:
        raise ValueError(f"gaussian_radius: negative box size ({height}, {width})")
    if not 0.0 < min_overlap < 1.0:
        raise ValueError(f"gaussian_radius: min_overlap must be in (0, 1), got {min_overlap}")
    m = min_overlap
    hw_sum = height + width
    area = height * width
    # case 1: a=1, b=(h+w), c=hw(1-m)/(1+m)
    b1 = hw_sum
    c1 = area * (1.0 - m) / (1.0 + m)
    r1 = (b1 + math.sqrt(max(b1 * b1 - 4.0 * c1, 0.0))) / 2.0
    # case 2: a=4, b=2(h+w), c=(1-m)hw
    b2 = 2.0 * hw_sum
    c2 = (1.0 - m) * area
    r2 = (b2 + math.sqrt(max(b2 * b2 - 16.0 * c2, 0.0))) / 2.0
    # case 3: a=4m, b=-2m(h+w), c=(m-1)hw
    b3 = -2.0 * m * hw_sum
    c3 = (m - 1.0) * area
    r3 = (b3 + math.sqrt(max(b3 * b3 - 16.0 * m * c3, 0.0))) / 2.0
    return min(r1, r2, r3)


def gaussian_sigma(radius: float) -> float:
    """``(2 * max(floor(radius), 0) + 1) / 6`` (reference 2.5)."""
    return (2.0 * max(math.floor(radius), 0) + 1.0) / SIGMA_DIVISOR


def gaussian_1d(size: int, center: int, sigma: float) -> np.ndarray:
    """``exp(-(i - center)^2 / (2 sigma^2))`` for ``i`` in ``0..size-1``, float32 ``[size]``."""
    if sigma <= 0:
        raise ValueError(f"gaussian sigma must be positive, got {sigma}")
    offsets = np.arange(size, dtype=np.float64) - float(center)
    return np.exp(-(offsets * offsets) / (2.0 * sigma * sigma)).astype(np.float32)


def draw_gaussian(heatmap: np.ndarray, center_yx_floor: tuple[int, int], sigma: float) -> None:
    """Max-merge an untruncated Gaussian into ``heatmap`` in place.

    The value at pixel ``(y, x)`` is ``exp(-((y-cy)^2 + (x-cx)^2) / (2 sigma^2))`` computed as the
    outer product of two 1-D exponentials, so the peak at ``(cy, cx)`` is exactly 1.0.

    Args:
        heatmap: ``[h, w]`` float32 array, updated with an element-wise max.
        center_yx_floor: integer peak location ``(cy, cx)`` inside the map.
        sigma: Gaussian standard deviation in heatmap pixels.
    """
    if heatmap.ndim != 2:
        raise ValueError(f"draw_gaussian: heatmap must be [h, w], got shape {heatmap.shape}")
    height, width = heatmap.shape
    cy, cx = int(center_yx_floor[0]), int(center_yx_floor[1])
    if not (0 <= cy < height and 0 <= cx < width):
        raise ValueError(f"draw_gaussian: center {(cy, cx)} outside a {height}x{width} heatmap")
    gy = gaussian_1d(height, cy, sigma)
    gx = gaussian_1d(width, cx, sigma)
    np.maximum(heatmap, np.outer(gy, gx), out=heatmap)
