"""One training step: the forward as a module, the micro-batches of a step, the loop's counters.

``TrainingModule`` (the model and its criterion, ``(images, targets) -> losses``) is what the loop
optimises and what DDP wraps, so training-only parameters of the criterion (e.g. an auxiliary
semantic head) are optimised and all-reduced with the model's. The model is called through the
meta-architecture's ``teacher_forward`` (the loop never needs to know a model's teacher-forcing
signature), under bf16 autocast when asked; losses are always computed in float32.
``TrainingParts`` bundles it with the model, criterion and optimizer; ``forward_backward`` runs
one optimizer step's micro-batches; ``LoopStats`` counts losses, images and seconds for the logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from maskconver.engine import distributed as dist_utils
from maskconver.engine.integrity import first_non_finite

TeacherForward = Callable[[nn.Module, Tensor, Any], Any]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message names the step and every loss term."""


class NonFiniteWeightsError(NonFiniteLossError):
    """The weights became NaN/inf (with a finite loss); names the step and the last checkpoint.

    A ``NonFiniteLossError`` too: the run itself failed (exit code 1).
    """


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


@dataclasses.dataclass(frozen=True)
class TrainingParts:
    """What the loop optimises, built before resuming (``engine/train.py::build_training_parts``).

    Attributes:
        model: the bare model, never DDP-wrapped (checkpointed, evaluated, averaged by the EMA).
        criterion: the meta-architecture's criterion (may own training-only parameters).
        trainable: model and criterion as one module: what the optimizer and DDP see.
        optimizer: over ``trainable``'s parameters.
        teacher_forward: the meta-architecture's teacher-forced call of the model.
        memory_format: of the model's weights and of its input batches.
    """

    model: nn.Module
    criterion: nn.Module
    trainable: TrainingModule
    optimizer: torch.optim.Optimizer
    teacher_forward: TeacherForward
    memory_format: torch.memory_format


def forward_backward(
    parts: TrainingParts,
    ddp: nn.parallel.DistributedDataParallel | None,
    batches: Iterator[Any],
    *,
    step: int,
    grad_accum: int,
    device: torch.device,
) -> tuple[dict[str, Tensor], int]:
    """Forward and backward of one optimizer step's ``grad_accum`` micro-batches.

    Gradients of ``loss / grad_accum`` accumulate in ``.grad``; under DDP they are all-reduced on
    the last micro-batch only.

    Args:
        parts: ``parts.trainable`` computes the losses (through ``ddp`` when there is one).
        ddp: the DDP wrapper of ``parts.trainable``, or None in a single process.
        batches: this process's micro-batches ``(images [B, 3, H, W], targets, skipped)``.
        step: 0-based index of the optimizer step.
        grad_accum: micro-batches per optimizer step.
        device: where the batches go.

    Returns:
        Every loss term's mean over the micro-batches (detached 0-dim tensors), and the number of
        bad samples skipped for these micro-batches.

    Raises:
        NonFiniteLossError: a loss term is NaN/inf (names step ``step + 1``, 1-based).
    """
    step_module: nn.Module = ddp if ddp is not None else parts.trainable
    step_losses: dict[str, Tensor] = {}
    skipped = 0
    for micro in range(grad_accum):
        images, targets, skipped_now = next(batches)
        skipped += skipped_now
        images = images.to(device, non_blocking=True).contiguous(memory_format=parts.memory_format)
        targets = targets.to(device)
        last_micro = micro == grad_accum - 1
        # DDP: all-reduce gradients only on the last micro-batch
        sync = ddp.no_sync() if ddp is not None and not last_micro else contextlib.nullcontext()
        with sync:
            losses = step_module(images, targets)
            check_finite(losses, step + 1, micro)
            (losses["loss"] / grad_accum).backward()
        for name, value in losses.items():
            step_losses[name] = step_losses.get(name, 0.0) + value.detach() / grad_accum
    return step_losses, skipped


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


def check_finite_weights(
    parts: TrainingParts, ema: nn.Module | None, *, step: int, last_good: Path | None
) -> None:
    """Raise ``NonFiniteWeightsError`` when a weight or buffer to be checkpointed is NaN/inf.

    Called on every rank right before a checkpoint (ranks hold the same weights under DDP), so a
    run whose optimizer step produced NaN weights stops instead of writing them.

    Args:
        parts: the model and the criterion (its training-only parameters) are checked.
        ema: the EMA model (``ModelEma.module``), or None.
        step: optimizer steps completed.
        last_good: the run's last checkpoint written, if any (named in the error).
    """
    states = {"model": parts.model.state_dict(), "criterion": parts.criterion.state_dict()}
    if ema is not None:
        states["EMA"] = ema.state_dict()
    for owner, state in states.items():
        name = first_non_finite(state)
        if name is not None:
            last = f"the last good checkpoint is {last_good}" if last_good else "none was written"
            raise NonFiniteWeightsError(
                f"non-finite weights (NaN or inf) after step {step}, first in {owner} tensor "
                f"{name!r} (the loss was finite); no checkpoint was written for step {step}: "
                f"{last}"
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


@dataclasses.dataclass
class LoopStats:
    """Counters of the training loop: the current log window and the whole run.

    Attributes:
        window_losses: per loss term, the sum over the window's steps of each step's mean.
        window_steps: optimizer steps in the window.
        window_images: images (global batches) in the window.
        window_time: seconds of the window's steps.
        window_rate: images per second of the last ended window.
        last_losses: the last ended window's mean losses (over its steps and over ranks).
        images: images of every step this run took (from its start step).
        seconds: seconds of those steps (evaluation and checkpoints excluded).
        skipped: bad samples this process skipped.
    """

    window_losses: dict[str, float] = dataclasses.field(default_factory=dict)
    window_steps: int = 0
    window_images: int = 0
    window_time: float = 0.0
    window_rate: float = math.nan
    last_losses: dict[str, float] = dataclasses.field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0
    skipped: int = 0

    def add_step(
        self, losses: dict[str, Tensor], images: int, *, skipped: int, started: float
    ) -> None:
        """Count one optimizer step of ``images`` images that began at ``started``.

        The step's time runs until now, after its losses were read (which waits for the device).
        """
        self.skipped += skipped
        for name, value in losses.items():
            self.window_losses[name] = self.window_losses.get(name, 0.0) + float(value)
        self.window_steps += 1
        self.window_images += images
        elapsed = time.perf_counter() - started
        self.window_time += elapsed
        self.images += images
        self.seconds += elapsed

    def end_window(self, device: torch.device) -> dict[str, float]:
        """The window's mean losses (over its steps and over ranks); the next window starts.

        Also sets ``last_losses`` (to the returned means) and ``window_rate``.
        """
        means = {k: v / self.window_steps for k, v in self.window_losses.items()}
        self.last_losses = mean_over_ranks(means, device)
        self.window_rate = self.window_images / max(self.window_time, 1e-9)
        self.window_losses, self.window_steps, self.window_images, self.window_time = {}, 0, 0, 0.0
        return self.last_losses
