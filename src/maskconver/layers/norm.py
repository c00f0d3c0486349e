"""Normalisation layers: channel LayerNorm for NCHW maps and frozen batch norm."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis at every pixel of an NCHW map.

    This is Keras ``LayerNormalization()`` / ConvNeXt "channels-last" LN applied to
    ``[B, C, H, W]``; it is NOT ``GroupNorm(1, C)`` (which also pools over H and W).

    Args:
        num_channels: C.
        eps: variance epsilon (1e-6 as in the reference).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` ``[B, C, H, W]`` over C; returns ``[B, C, H, W]``."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (self.num_channels,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        """The constructor arguments shown by ``repr``."""
        return f"{self.num_channels}, eps={self.eps}"


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all buffers, no gradients).

    Loads ``nn.BatchNorm2d`` state dicts; their ``num_batches_tracked`` entry is ignored.

    Args:
        num_features: C.
        eps: variance epsilon.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight: Tensor
        self.bias: Tensor
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the frozen affine normalisation to ``x`` ``[B, C, H, W]``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        """The constructor arguments shown by ``repr``."""
        return f"{self.num_features}, eps={self.eps}"
