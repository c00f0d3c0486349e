"""Weight-initialisation helpers (reference section 1.8).

* ``init_prior_bias``: focal-loss prior for classifier biases (RetinaNet/CenterNet).
* ``trunc_normal_init``: truncated normal (std 0.02 for ConvNeXt layers), zero bias.
* ``variance_scaling_init``: Keras ``VarianceScaling`` (the TF Model Garden default for backbone,
  ASPP and FPN convs; ``he_normal`` is ``scale=2.0``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

TRUNC_BOUND_STDS = 2.0  # truncated normals are cut at +-2 std, as in Keras and timm
# Std of a unit normal truncated to [-2, 2]; Keras divides by it so the truncated draw has
# the requested variance (``VarianceScaling`` with ``distribution="truncated_normal"``).
TRUNCATED_UNIT_NORMAL_STD = 0.87962566103423978

WEIGHTED_LAYERS = (nn.Conv2d, nn.Linear)


def init_prior_bias(conv: nn.Conv2d | nn.Linear, prior_prob: float) -> None:
    """Set every bias entry to ``-log((1 - p) / p)`` so ``sigmoid(bias) == p`` at init.

    Example: ``p = 0.1`` gives ``-log(9) = -2.1972``.

    Raises:
        ValueError: if ``prior_prob`` is outside ``(0, 1)`` or the layer has no bias.
    """
    if not 0.0 < prior_prob < 1.0:
        raise ValueError(f"init_prior_bias: prior_prob must be in (0, 1), got {prior_prob}")
    if conv.bias is None:
        raise ValueError(f"init_prior_bias: {type(conv).__name__} has no bias to initialise")
    nn.init.constant_(conv.bias, -math.log((1.0 - prior_prob) / prior_prob))


def trunc_normal_(tensor: Tensor, std: float) -> Tensor:
    """Fill ``tensor`` in place from N(0, std^2) truncated at +-2 std."""
    bound = TRUNC_BOUND_STDS * std
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-bound, b=bound)


def trunc_normal_init(module: nn.Module, std: float) -> None:
    """Truncated-normal weights and zero biases for every Conv2d/Linear inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, WEIGHTED_LAYERS):
            trunc_normal_(layer.weight, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _fans(weight: Tensor) -> tuple[int, int]:
    """Keras-style ``(fan_in, fan_out)`` of a conv/linear weight ``[out, in/groups, *k]``."""
    receptive = math.prod(weight.shape[2:]) if weight.ndim > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def variance_scaling_(
    tensor: Tensor,
    scale: float = 1.0,
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in",
    distribution: Literal["truncated_normal", "normal", "uniform"] = "truncated_normal",
) -> Tensor:
    """Keras ``VarianceScaling`` in place: variance ``scale / fan``.

    For depthwise weights ``[C, 1, k, k]`` the fan-in is ``k*k`` as in Keras.
    """
    fan_in, fan_out = _fans(tensor)
    fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
    if mode not in fans:
        raise ValueError(f"variance_scaling_: unknown mode {mode!r}; choose from {sorted(fans)}")
    variance = scale / max(1.0, fans[mode])
    with torch.no_grad():
        if distribution == "truncated_normal":
            return trunc_normal_(tensor, math.sqrt(variance) / TRUNCATED_UNIT_NORMAL_STD)
        if distribution == "normal":
            return tensor.normal_(0.0, math.sqrt(variance))
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return tensor.uniform_(-limit, limit)
    raise ValueError(
        f"variance_scaling_: unknown distribution {distribution!r}; "
        "choose from ['normal', 'truncated_normal', 'uniform']"
    )


def variance_scaling_init(
    module: nn.Module,
    scale: float = 1.0,
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in",
    distribution: Literal["truncated_normal", "normal", "uniform"] = "truncated_normal",
) -> None:
    """``variance_scaling_`` on every Conv2d/Linear weight inside ``module``; zero biases."""
    for layer in module.modules():
        if isinstance(layer, WEIGHTED_LAYERS):
            variance_scaling_(layer.weight, scale, mode, distribution)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


HE_NORMAL_SCALE = 2.0


def he_normal_init(module: nn.Module) -> None:
    """Keras ``he_normal`` (truncated normal, variance ``2 / fan_in``) with zero biases."""
    variance_scaling_init(module, scale=HE_NORMAL_SCALE, mode="fan_in")
