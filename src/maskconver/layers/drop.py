"""Stochastic depth (drop path): drop whole residual branches per sample."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero the whole of ``x`` for a random subset of samples, rescaling the rest.

    Args:
        x: ``[B, ...]`` residual-branch output.
        p: probability of dropping a sample's branch, in ``[0, 1)``.
        training: identity when ``False`` or when ``p == 0``.

    Returns:
        ``[B, ...]``; kept samples are scaled by ``1 / (1 - p)`` so the expectation is ``x``.
    """
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = torch.empty(mask_shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Per-sample stochastic depth; identity in eval mode.

    Args:
        p: drop probability in ``[0, 1)``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: drop probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Apply drop path to ``x`` ``[B, ...]``."""
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        """The constructor arguments shown by ``repr``."""
        return f"p={self.p}"
