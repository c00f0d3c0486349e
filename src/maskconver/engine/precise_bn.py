"""Precise batch norm: recompute the running statistics from training batches before use.

A batch norm's running statistics are a moving average over the training steps, kept for
evaluation. With the reference's momentum 0.01 they cover about the last 100 steps, which is
right for a 500k-step schedule whose weights barely move per step, but in a run of a few hundred
steps they still average batches taken while the weights were very different (and, without the
momentum warm-up, mostly their initial values), so the evaluated model sees wrong statistics.
Precise BN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; detectron2's
``update_bn_stats``) recomputes them with the CURRENT weights over a few training batches.

The training loop calls ``refresh_bn_statistics`` before every evaluation and checkpoint, on
the trained model and on its EMA copy. It never changes training itself: the batches come from
their own sampler (the training stream's next steps, read without advancing the loop's
iterator), the torch RNG is restored afterwards, and batch-norm layers normalise with batch
statistics in training mode anyway, so only what is evaluated and saved differs.

``train.precise_bn_batches`` None (the default) means ``AUTO_BATCHES`` for runs shorter than
``AUTO_TIME_CONSTANTS / model.bn_momentum`` steps (2,000 at momentum 0.01) and off otherwise,
so the long schedules of the reference presets evaluate and save exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from maskconver.config import Config
from maskconver.engine.loader import StepSampler, TrainSampleDataset, build_train_loader
from maskconver.engine.step import TeacherForward, autocast

AUTO_BATCHES = 16  # batches averaged when train.precise_bn_batches is left at None (auto)
# auto mode is on for runs shorter than this many BN time constants (1 / momentum steps)
AUTO_TIME_CONSTANTS = 20.0

BatchNorm = nn.modules.batchnorm._BatchNorm


def resolve_batches(configured: int | None, *, max_steps: int, momentum: float) -> int:
    """Batches precise BN averages: ``configured``, or for None the auto rule above.

    Example: momentum 0.01 -> auto on below 20 / 0.01 = 2000 steps; the reference's 500k-step
    presets get 0 (off).
    """
    if configured is not None:
        return configured
    return AUTO_BATCHES if max_steps < AUTO_TIME_CONSTANTS / momentum else 0


def batch_norms(model: nn.Module) -> list[BatchNorm]:
    """Batch norms of ``model`` with running statistics (``FrozenBatchNorm2d`` is not one)."""
    return [m for m in model.modules() if isinstance(m, BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_statistics(
    models: Sequence[nn.Module],
    batches: Iterable[Any],
    forward: Callable[[nn.Module, Any], object],
    *,
    num_batches: int,
) -> int:
    """Set every batch norm's running statistics to their average over ``num_batches`` batches.

    For each batch norm, ``running_mean`` becomes the mean of the per-batch means and
    ``running_var`` the mean of the per-batch (unbiased) variances: PyTorch's cumulative mode
    (``momentum=None``) after ``reset_running_stats()``, as ``torch.optim.swa_utils.update_bn``
    and detectron2 compute them. The models run in training mode (the activations the running
    statistics describe during training); their modes and momenta are restored. When the
    iterator yields nothing, the statistics are left as they were.

    Args:
        models: models updated on the same batches (e.g. the trained model and its EMA copy).
        batches: training batches, consumed up to ``num_batches``.
        forward: ``forward(model, batch)`` runs one training-mode forward.
        num_batches: how many batches to average (0: do nothing).

    Returns:
        The number of batches used.
    """
    saved = [
        (bn, bn.momentum, bn.running_mean.clone(), bn.running_var.clone())
        for model in models
        for bn in batch_norms(model)
        if bn.running_mean is not None and bn.running_var is not None
    ]
    if num_batches <= 0 or not saved:
        return 0
    modes = [(m, m.training) for model in models for m in model.modules()]
    for bn, *_ in saved:
        bn.reset_running_stats()
        bn.momentum = None
    used = 0
    try:
        for model in models:
            model.train()
        for batch in batches:
            if used >= num_batches:
                break
            for model in models:
                forward(model, batch)
            used += 1
    finally:
        for module, training in modes:
            module.training = training
        for bn, momentum, mean, var in saved:
            bn.momentum = momentum
            if used == 0:  # nothing seen: keep the statistics as they were
                running_mean, running_var = bn.running_mean, bn.running_var
                assert running_mean is not None and running_var is not None
                running_mean.copy_(mean)
                running_var.copy_(var)
    return used


def refresh_bn_statistics(
    models: Sequence[nn.Module],
    train_set: TrainSampleDataset,
    *,
    cfg: Config,
    step: int,
    rank: int,
    world_size: int,
    teacher_forward: TeacherForward,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> int:
    """The training loop's precise BN at optimizer step ``step`` (see the module docstring).

    Batches: this rank's micro-batches of the training steps ``step, step + 1, ...`` (their own
    ``StepSampler``), forwarded through the meta-architecture's ``teacher_forward`` under the
    run's autocast. Under DDP with synchronised batch norm every rank must call this together
    (the loop does: evaluations and checkpoints fall on the same steps on every rank).

    Returns:
        The number of batches averaged (0 when precise BN is off for this run).
    """
    tc = cfg.train
    num_batches = resolve_batches(
        tc.precise_bn_batches, max_steps=tc.max_steps, momentum=cfg.model.bn_momentum
    )
    if num_batches == 0:
        return 0
    sampler = StepSampler(
        len(train_set),
        tc.batch_size,
        seed=tc.seed,
        start_step=step,
        rank=rank,
        world_size=world_size,
        micro_batches=tc.grad_accum,
        num_steps=step + math.ceil(num_batches / tc.grad_accum),
    )
    loader = build_train_loader(
        train_set,
        sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        seed=tc.seed,
    )

    def forward(model: nn.Module, batch: Any) -> object:
        images, targets, _ = batch
        images = images.to(device).contiguous(memory_format=memory_format)
        with autocast(tc.amp, device):
            return teacher_forward(model, images, targets.to(device))

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return recompute_bn_statistics(models, loader, forward, num_batches=num_batches)
