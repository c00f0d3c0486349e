"""String -> activation-layer factory, resolved once at the edge (``build.py``)."""

from __future__ import annotations

from torch import nn

from maskconver.layers.types import ActLayer

ACTIVATIONS: dict[str, ActLayer] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "relu6": nn.ReLU6,
    "hardsigmoid": nn.Hardsigmoid,
}


def get_act_layer(name: str) -> ActLayer:
    """Return the activation-layer constructor for ``name``.

    Args:
        name: one of ``ACTIVATIONS`` (case-insensitive), e.g. ``"relu"`` or ``"gelu"``.

    Returns:
        A zero-argument callable building a fresh activation module.

    Raises:
        ValueError: for an unknown name; the message lists the valid choices.
    """
    key = name.lower()
    if key not in ACTIVATIONS:
        choices = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"get_act_layer: unknown activation {name!r}; choose one of: {choices}")
    return ACTIVATIONS[key]
