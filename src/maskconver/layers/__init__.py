"""Reusable layers that take their norm/activation types as callables."""

from maskconver.layers.activation import ACTIVATIONS, get_act_layer
from maskconver.layers.conv import (
    ConvNormAct,
    InvertedResidual,
    SeparableConv2d,
    make_divisible,
    same_padding,
)
from maskconver.layers.convnext import ConvNeXtSEBlock
from maskconver.layers.drop import DropPath, drop_path
from maskconver.layers.init import (
    he_normal_init,
    init_prior_bias,
    trunc_normal_,
    trunc_normal_init,
    variance_scaling_,
    variance_scaling_init,
)
from maskconver.layers.norm import FrozenBatchNorm2d, LayerNorm2d
from maskconver.layers.se import SqueezeExcitation

__all__ = [
    "ACTIVATIONS",
    "ConvNeXtSEBlock",
    "ConvNormAct",
    "DropPath",
    "FrozenBatchNorm2d",
    "InvertedResidual",
    "LayerNorm2d",
    "SeparableConv2d",
    "SqueezeExcitation",
    "drop_path",
    "get_act_layer",
    "he_normal_init",
    "init_prior_bias",
    "make_divisible",
    "same_padding",
    "trunc_normal_",
    "trunc_normal_init",
    "variance_scaling_",
    "variance_scaling_init",
]
