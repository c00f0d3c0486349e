"""Backbones: feature extractors returning maps fine to coarse (see ``base.Backbone``).

Submodules load on first use (``from maskconver.backbones import X`` imports only X's module), so
building one part never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "Backbone": "base",
    "LoadReport": "weights",
    "MobileNetMH": "mobilenet_mh",
    "MobileNetV2": "mobilenetv2",
    "MobileNetV3Large": "mobilenetv3",
    "MobileNetV3Small": "mobilenetv3",
    "ResNet50": "resnet",
    "ResNetUNet": "resnet_unet",
    "TinyBackbone": "tiny",
    "load_backbone_weights": "weights",
}

__all__ = [
    "Backbone",
    "LoadReport",
    "MobileNetMH",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "ResNet50",
    "ResNetUNet",
    "TinyBackbone",
    "load_backbone_weights",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access (PEP 562)."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
