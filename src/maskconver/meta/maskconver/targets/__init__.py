"""Training targets: Gaussian center heatmaps, stuff islands, instance slots, levels."""

from maskconver.meta.maskconver.targets.centers import (
    box_center,
    mask_box,
    mass_center,
    stuff_islands,
)
from maskconver.meta.maskconver.targets.gaussian import (
    draw_gaussian,
    gaussian_radius,
    gaussian_sigma,
)
from maskconver.meta.maskconver.targets.generator import (
    TargetGenerator,
    downsample_nearest,
    nearest_indices,
)
from maskconver.meta.maskconver.targets.types import TargetBatch, Targets

__all__ = [
    "TargetBatch",
    "TargetGenerator",
    "Targets",
    "box_center",
    "downsample_nearest",
    "draw_gaussian",
    "gaussian_radius",
    "gaussian_sigma",
    "mask_box",
    "mass_center",
    "nearest_indices",
    "stuff_islands",
]
