"""Input image statistics shared by every meta-architecture's normalisation."""

from __future__ import annotations

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 units
IMAGENET_STD = (58.395, 57.12, 57.375)
