"""Exponential moving average of a model's weights AND buffers (timm ``ModelEmaV3`` idea).

The reference (Model Garden ``average_decay`` with ``trainable_weights_only: false``) averages
every variable, BatchNorm moving statistics included, so this does too: every floating-point
entry of ``state_dict()`` is averaged; integer entries (``num_batches_tracked``) are copied.

Create it from the bare model BEFORE wrapping in ``DistributedDataParallel``; ``update`` accepts
either the bare or the wrapped model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

# Decay warmup min(decay, (1 + step) / (WARMUP_OFFSET + step)), as in TF ExponentialMovingAverage
# with num_updates and timm's ModelEma warmup.
WARMUP_OFFSET = 10.0


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


class ModelEma:
    """A frozen, eval-mode copy of a model whose state tracks an exponential moving average.

    Args:
        model: the model to track (its current state is the initial average).
        decay: the target decay ``d`` in ``ema = d * ema + (1 - d) * model``.
        warmup: use ``min(decay, (1 + step) / (10 + step))`` so early updates follow the model.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(unwrap_model(model))
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """Decay used by the update after optimizer step ``step`` (0-based)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + step) / (WARMUP_OFFSET + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend the model's current state into the average.

        Args:
            model: the trained model (bare or DDP-wrapped) with the same architecture.
            step: 0-based index of the optimizer step just taken (drives the decay warmup).
        """
        d = self.decay_at(step)
        current = unwrap_model(model).state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.is_floating_point():
                avg.lerp_(
                    value.to(avg.dtype), 1.0 - d
                )  # avg + (1-d)(value-avg) = d avg + (1-d) value
            else:
                avg.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """The averaged model's ``state_dict``."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the averaged weights (strict)."""
        self.module.load_state_dict(state)
