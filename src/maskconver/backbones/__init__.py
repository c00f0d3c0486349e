"""Backbones: feature extractors returning maps fine to coarse (see ``base.Backbone``)."""

from maskconver.backbones.base import Backbone
from maskconver.backbones.mobilenet_mh import MobileNetMH
from maskconver.backbones.mobilenetv2 import MobileNetV2
from maskconver.backbones.mobilenetv3 import MobileNetV3Large
from maskconver.backbones.resnet import ResNet50
from maskconver.backbones.resnet_unet import ResNetUNet
from maskconver.backbones.tiny import TinyBackbone
from maskconver.backbones.weights import LoadReport, load_backbone_weights

__all__ = [
    "Backbone",
    "LoadReport",
    "MobileNetMH",
    "MobileNetV2",
    "MobileNetV3Large",
    "ResNet50",
    "ResNetUNet",
    "TinyBackbone",
    "load_backbone_weights",
]
