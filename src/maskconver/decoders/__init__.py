"""Pixel decoders: ``Decoder.forward(features) -> list[Tensor]``, ``.channels`` / ``.strides``."""

from maskconver.decoders.aspp import ASPP
from maskconver.decoders.base import Decoder
from maskconver.decoders.bifpn import BiFPN
from maskconver.decoders.convnext_unet import ConvNeXtUNet
from maskconver.decoders.dr1basis import DR1Basis
from maskconver.decoders.fpn import FPN
from maskconver.decoders.maskconver_fpn import MaskConverFPN
from maskconver.decoders.pyramid import TopDownPyramid

__all__ = [
    "ASPP",
    "FPN",
    "BiFPN",
    "ConvNeXtUNet",
    "DR1Basis",
    "Decoder",
    "MaskConverFPN",
    "TopDownPyramid",
]
