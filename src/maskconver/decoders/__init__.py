"""Pixel decoders: ``Decoder.forward(features) -> list[Tensor]``, ``.channels`` / ``.strides``.

Submodules load on first use (``from maskconver.decoders import X`` imports only X's module), so
building one part never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "ASPP": "aspp",
    "BiFPN": "bifpn",
    "ConvNeXtUNet": "convnext_unet",
    "DR1Basis": "dr1basis",
    "Decoder": "base",
    "FPN": "fpn",
    "MaskConverFPN": "maskconver_fpn",
    "TopDownPyramid": "pyramid",
}

__all__ = [
    "ASPP",
    "BiFPN",
    "ConvNeXtUNet",
    "DR1Basis",
    "Decoder",
    "FPN",
    "MaskConverFPN",
    "TopDownPyramid",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access (PEP 562)."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
