"""Resuming a training run from its latest checkpoint (``engine/train.py::train``).

The weights, the criterion's training-only parameters, the EMA, the optimizer and the step come
back here. Rank 0's saved RNG state is handed back, not restored: the loop restores it right
before its first step, once the data loader exists, so a resumed run continues on exactly the
batches and RNG state of an uninterrupted one. The other ranks reseed from the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from maskconver.engine.checkpoint import CheckpointError, load_checkpoint
from maskconver.engine.distributed import DistInfo
from maskconver.engine.ema import ModelEma
from maskconver.engine.step import TrainingParts


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a run starts.

    Attributes:
        step: the first optimizer step to take (0 on a fresh start).
        rng: rank 0's saved RNG state (``checkpoint.rng_state``) for ``set_rng_state`` right
            before the loop; None on the other ranks and on a fresh start.
        ema: the EMA to train on with (None when EMA is off).
    """

    step: int
    rng: dict[str, Any] | None
    ema: ModelEma | None


def resume_training(
    checkpoint: Path | None,
    parts: TrainingParts,
    ema: ModelEma | None,
    *,
    info: DistInfo,
    rank_seed: int,
    log: Callable[[str], None],
) -> ResumePoint:
    """Restore a run's training state from ``checkpoint`` (None: a fresh start at step 0).

    Args:
        checkpoint: the run's latest checkpoint (``run_dir.prepare_run``), or None.
        parts: the model (not DDP-wrapped yet) gets its weights back, the criterion its
            training-only parameters (when saved) and the optimizer its state (when saved).
        ema: the run's EMA (None when off). Restored when the checkpoint has EMA weights, else
            replaced by a new EMA started from the resumed weights (EMA switched on mid-run).
        info: this process's place in the job (device to load onto, rank).
        rank_seed: this rank's seed of model-side randomness; ranks other than 0 reseed torch
            with ``rank_seed + step``.
        log: receives the one "resumed from" line.

    Returns:
        The step to start from, rank 0's RNG state to restore, and the EMA to train on with.

    Raises:
        CheckpointError: the checkpoint cannot be read or its weights do not fit the model.
    """
    if checkpoint is None:
        return ResumePoint(step=0, rng=None, ema=ema)
    loaded = load_checkpoint(checkpoint, map_location=str(info.device))
    try:
        parts.model.load_state_dict(loaded.model_state)
    except RuntimeError as e:
        raise CheckpointError(
            f"cannot resume from {checkpoint}: its weights do not fit the configured "
            f"model (was the model config changed?): {e}"
        ) from e
    if loaded.criterion_state is not None:
        parts.criterion.load_state_dict(loaded.criterion_state)
    if ema is not None and loaded.ema_state is not None:
        ema.load_state_dict(loaded.ema_state)
    elif ema is not None:  # EMA switched on mid-run: start it from the weights
        ema = ModelEma(parts.model, ema.decay, warmup=ema.warmup)
    trainer = loaded.trainer_state or {}
    if "optimizer" in trainer:
        parts.optimizer.load_state_dict(trainer["optimizer"])
    rng = trainer.get("rng") if info.is_main else None
    if not info.is_main:
        torch.manual_seed(rank_seed + loaded.step)
    log(f"resumed from {checkpoint} at step {loaded.step}")
    return ResumePoint(step=loaded.step, rng=rng, ema=ema)
