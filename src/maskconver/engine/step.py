"""One training forward as a module: the model and its criterion, ``(images, targets) -> losses``.

``TrainingModule`` is what the loop optimises and what DDP wraps, so training-only parameters of
the criterion (e.g. an auxiliary semantic head) are optimised and all-reduced with the model's.
The model is called through the meta-architecture's ``teacher_forward`` (the loop never needs
to know a model's teacher-forcing signature), under bf16 autocast when asked; losses are always
computed in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from maskconver.engine import distributed as dist_utils

TeacherForward = Callable[[nn.Module, Tensor, Any], Any]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message names the step and every loss term."""


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when asked for and supported, else a no-op context."""
    if amp != "bf16":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        print("train.amp=bf16 is not supported on this GPU; training in float32")
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def float_outputs(outputs: Any) -> Any:
    """Every floating tensor of a NamedTuple output (or nested tuple field) as float32."""
    if not hasattr(outputs, "_replace"):
        return outputs
    changes: dict[str, Any] = {}
    for name, value in outputs._asdict().items():
        if isinstance(value, Tensor) and value.is_floating_point():
            changes[name] = value.float()
        elif isinstance(value, tuple) and value and isinstance(value[0], Tensor):
            changes[name] = tuple(v.float() if v.is_floating_point() else v for v in value)
    return outputs._replace(**changes)


class TrainingModule(nn.Module):
    """``forward(images, targets) -> dict of losses`` for one micro-batch.

    Args:
        model: the bare model (``model.state_dict()`` is what inference loads).
        criterion: ``criterion(outputs, targets) -> {"loss": total, ...}``; may own parameters.
        teacher_forward: ``(model, images, targets) -> outputs`` of the meta-architecture.
        amp: ``"none"`` or ``"bf16"`` (autocast around the model only).
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        *,
        teacher_forward: TeacherForward,
        amp: str = "none",
    ) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.teacher_forward = teacher_forward
        self.amp = amp

    def forward(self, images: Tensor, targets: Any) -> dict[str, Tensor]:
        """Losses of one batch: ``images [B, 3, H, W]`` with their stacked targets."""
        with autocast(self.amp, images.device):
            outputs = self.teacher_forward(self.model, images, targets)
        losses: dict[str, Tensor] = self.criterion(float_outputs(outputs), targets)
        return losses


def check_finite(losses: dict[str, Tensor], step: int, micro: int) -> None:
    """Raise ``NonFiniteLossError`` on every rank when any rank's loss is not finite."""
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
    local_bad = not bool(torch.isfinite(values).all())
    any_bad = dist_utils.all_reduce_max(torch.tensor([float(local_bad)], device=values.device))
    if any_bad.item() > 0:
        terms = ", ".join(f"{k}={v:.6g}" for k, v in zip(losses, values.tolist()))
        if local_bad:
            raise NonFiniteLossError(
                f"non-finite loss at step {step} (micro-batch {micro}): {terms}"
            )
        raise NonFiniteLossError(
            f"non-finite loss at step {step} on another rank (this rank's terms: {terms})"
        )


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalars over processes (the tensor lives on ``device``: NCCL needs CUDA)."""
    keys = sorted(values)
    if dist_utils.get_world_size() == 1 or not keys:
        return dict(values)
    local = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    t = dist_utils.all_reduce_sum(local)
    return {k: float(v) / dist_utils.get_world_size() for k, v in zip(keys, t.tolist())}


def warm_up_bn_momentum(model: nn.Module, step: int, momentum: float) -> None:
    """Batch-norm momentum ``max(momentum, 1 / (step + 1))`` at optimizer step ``step``.

    For the first ``1 / momentum`` steps the running statistics are the plain average of every
    batch so far (PyTorch's cumulative mode) instead of a 0.01-momentum average that still holds
    mostly its initial values (mean 0, variance 1) after a few hundred steps; from then on the
    configured momentum applies, so long schedules (the reference presets) train as before.
    Frozen and non-batch norms are untouched.
    """
    value = max(momentum, 1.0 / (step + 1))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is not None:
            module.momentum = value
