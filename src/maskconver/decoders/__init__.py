"""Pixel decoders: ``forward(features) -> list[Tensor]`` with ``.channels`` / ``.strides``."""

from maskconver.decoders.aspp import ASPP
from maskconver.decoders.fpn import FPN
from maskconver.decoders.maskconver_fpn import MaskConverFPN

__all__ = ["ASPP", "FPN", "MaskConverFPN"]
