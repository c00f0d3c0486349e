"""MaskConver: panoptic segmentation with pure convolutions (WACV 2024), in PyTorch."""

from maskconver.config import Config, load_config

__version__ = "0.1.0"

__all__ = ["Config", "__version__", "load_config"]
