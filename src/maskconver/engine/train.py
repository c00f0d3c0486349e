"""The training loop: one function, read top to bottom (nanoGPT / torchvision references style).

``train(cfg, output_dir)`` seeds everything, joins the ``torchrun`` process group if there is one,
builds data (``engine/setup.py``), model, criterion, optimizer and EMA through the
meta-architecture table (``build.meta_architecture``), optionally resumes from the latest
checkpoint (``engine/resume.py``), then runs ``max_steps`` optimizer steps with warmup + cosine
LR, optional bf16 autocast, gradient accumulation, global-norm clipping, EMA updates, logging,
periodic PQ evaluation (on the EMA weights) and atomic checkpoints. The helpers below ``train``
each do one named part of it; none of them calls back into the loop.

Batch semantics: ``train.batch_size`` is the GLOBAL number of images per optimizer step; each of
``world_size`` processes runs ``grad_accum`` micro-batches of
``batch_size / (world_size * grad_accum)`` images. A resumed run continues on exactly the batches
and RNG state of an uninterrupted one (bit-exact in a single CPU process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from maskconver.build import build_criterion, build_model, meta_architecture
from maskconver.config import Config
from maskconver.engine import distributed as dist_utils
from maskconver.engine.checkpoint import (
    CHECKPOINT_DIR,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
    update_metrics,
)
from maskconver.engine.data import check_data_splits
from maskconver.engine.distributed import DistInfo, wrap_ddp
from maskconver.engine.ema import ModelEma
from maskconver.engine.evaluate import run_evaluation
from maskconver.engine.logging import MetricLogger, TrainProgress, progress_bar
from maskconver.engine.optim import build_optimizer, lr_of, set_lr
from maskconver.engine.plots import plot_training_curves
from maskconver.engine.precise_bn import refresh_bn_statistics
from maskconver.engine.resume import resume_training
from maskconver.engine.run_dir import prepare_run
from maskconver.engine.setup import (
    TrainingData,
    build_training_data,
    check_micro_batch,
    training_batches,
)
from maskconver.engine.step import (
    LoopStats,
    NonFiniteLossError,
    NonFiniteWeightsError,
    TrainingModule,
    TrainingParts,
    check_finite_weights,
    forward_backward,
    warm_up_bn_momentum,
)
from maskconver.locking import folder_lock

__all__ = ["NonFiniteLossError", "NonFiniteWeightsError", "seed_everything", "train"]

BEST_METRIC = "pq"
# Seed offset between ranks for model-side randomness (drop path); data randomness is keyed.
RANK_SEED_STRIDE = 1_000_003


# ---------------------------------------------------------------------------------------------
# The loop


def train(
    cfg: Config,
    output_dir: str | Path,
    *,
    resume: bool = False,
    data_root: str | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train a MaskConver model; see the module docstring for the semantics.

    Args:
        cfg: the resolved run config.
        output_dir: run directory: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``.
        resume: continue from the latest checkpoint in ``output_dir`` (fresh start if none).
        data_root: COCO panoptic root (overrides ``cfg.data.root``); None and no
            ``cfg.data.root`` trains on synthetic scenes.
        progress: tqdm bar (rate, elapsed, ETA, loss) on rank 0.
        stop_at: stop after this many optimizer steps with a checkpoint, as if pre-empted (the
            LR schedule still spans ``max_steps``; the final evaluation is skipped).

    Returns:
        ``{"steps", "start_step", "final_losses", "pq", "metrics", "images_per_s",
        "train_seconds", "wall_time_s", "checkpoint", "output_dir", "skipped_samples"}``.

    Raises:
        NonFiniteLossError: a loss term became NaN/inf (names the step and the terms).
        NonFiniteWeightsError: the weights became NaN/inf with a finite loss (a
            ``NonFiniteLossError``; found right before a checkpoint, which is then not written;
            names the step and the last good checkpoint).
        FileExistsError: ``output_dir`` already has checkpoints and ``resume`` is False.
        LockError: another live process trains into ``output_dir`` (names the lock file).
    """
    wall_start = time.perf_counter()
    output_dir = Path(output_dir)
    if data_root is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=data_root))
    tc = cfg.train
    owns_group = not dist_utils.is_dist()
    info = dist_utils.init_distributed()
    lock = contextlib.ExitStack()
    try:
        device = info.device
        # every check that can refuse the run happens before anything is written
        check_data_splits(cfg)
        if info.is_main:  # one writer per run folder (torchrun: rank 0 holds it)
            lock.enter_context(folder_lock(output_dir, "train"))
        checkpoint = prepare_run(output_dir, cfg, resume=resume, is_main=info.is_main)
        seed_everything(tc.seed)
        log = MetricLogger(output_dir, enabled=info.is_main)
        data = build_training_data(cfg, log=log.message)
        parts = build_training_parts(cfg, data.num_classes, info)
        model = parts.model  # the bare model: checkpointed, evaluated, averaged by the EMA
        ema = ModelEma(model, tc.ema_decay, warmup=tc.ema_warmup) if tc.ema else None
        rank_seed = tc.seed + RANK_SEED_STRIDE * info.rank
        torch.manual_seed(rank_seed)  # per-rank model randomness

        # Resume: weights, EMA, optimizer, step; RNG restored right before the loop.
        start = resume_training(
            checkpoint, parts, ema, info=info, rank_seed=rank_seed, log=log.message
        )
        start_step, ema = start.step, start.ema
        if checkpoint is None and resume:
            log.message(f"no checkpoint in {output_dir}; starting from step 0")
        ddp = wrap_ddp(parts.trainable, info)
        end_step = tc.max_steps if stop_at is None else min(stop_at, tc.max_steps)
        check_micro_batch(tc, model, info.world_size)
        batches = training_batches(
            data.train_set, cfg, info, start_step=start_step, end_step=end_step
        )
        if start.rng is not None:
            set_rng_state(start.rng)
        log_run_start(log, cfg, model, data, info, start_step=start_step, end_step=end_step)
        bar = progress_bar(tc.max_steps, start_step, end_step, show=progress and info.is_main)
        stats = LoopStats()
        metrics: dict[str, Any] = {}
        saved: Path | None = checkpoint
        parts.trainable.train()
        for step in range(start_step, end_step):
            step_start = time.perf_counter()
            lr = lr_of(tc, step)
            set_lr(parts.optimizer, lr)
            if tc.bn_momentum_warmup:
                warm_up_bn_momentum(model, step, cfg.model.bn_momentum)
            step_losses, skipped = forward_backward(
                parts, ddp, batches, step=step, grad_accum=tc.grad_accum, device=device
            )
            grad_norm = None
            if tc.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    parts.trainable.parameters(), tc.grad_clip
                )
            parts.optimizer.step()
            parts.optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model, step)
            done = step + 1
            bar.step(done)

            # Logging (losses averaged over the window and over ranks).
            stats.add_step(step_losses, tc.batch_size, skipped=skipped, started=step_start)
            if done % tc.log_every == 0 or done == end_step:
                record: dict[str, Any] = {"lr": lr, **stats.end_window(device)}
                record["images_per_s"] = stats.window_rate
                record["epoch"] = done * tc.batch_size / len(data.train_set)
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                log.log(done, record | bar.times(done))  # + elapsed_s, eta_s
                bar.note(loss=record["loss"], lr=lr)

            # Checkpoint first (rank 0), then evaluate on the EMA weights: an evaluation that
            # fails costs no checkpoint. The best copy is chosen once the metrics are in.
            due_ckpt = done % tc.ckpt_every == 0 or done == end_step
            is_final = done == tc.max_steps
            due_eval = (tc.eval_every > 0 and done % tc.eval_every == 0) or is_final
            if due_ckpt or due_eval:  # precise BN (on by default for short runs only)
                refresh_precise_bn(parts, ema, data, cfg, info, step=done)
            if due_ckpt:  # every rank: NaN/inf weights stop the run instead of a checkpoint
                check_finite_weights(parts, ema.module if ema else None, step=done, last_good=saved)
            if due_ckpt and info.is_main:
                saved = save_training_checkpoint(output_dir, cfg, parts, ema, data, step=done)
            if due_eval:
                evaluated = ema.module if ema is not None else model
                metrics = evaluate_on_val(
                    evaluated, data, cfg, info, step=done, progress=progress, log=log
                )
            if due_ckpt and info.is_main:
                if due_eval and saved is not None and "error" not in metrics:
                    update_metrics(
                        saved, _loggable(metrics) | {"per_class": metrics.get("per_class", {})}
                    )
                prune_checkpoints(output_dir, tc.keep_last, keep_best_by=BEST_METRIC)
            if due_ckpt:
                dist_utils.barrier()
        finish_run(output_dir, bar, log, is_main=info.is_main)
        return run_summary(
            stats,
            metrics,
            start_step=start_step,
            end_step=end_step,
            wall_start=wall_start,
            checkpoint=saved,
            output_dir=output_dir,
        )
    finally:
        lock.close()
        if owns_group:
            dist_utils.cleanup()


# ---------------------------------------------------------------------------------------------
# Set-up


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_training_parts(cfg: Config, num_classes: int, info: DistInfo) -> TrainingParts:
    """Model, criterion and optimizer on this process's device (sync BN under CUDA DDP).

    The model and criterion come from this module's ``build_model`` / ``build_criterion`` names,
    which tests replace to capture what the loop trains.
    """
    tc = cfg.train
    device = info.device
    meta = meta_architecture(cfg.model)
    model: nn.Module = build_model(cfg.model, num_classes).to(device)
    if info.distributed and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # reference trains with sync BN
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = cast(Any, model).to(memory_format=memory_format)  # (missing from torch's stubs)
    criterion = build_criterion(cfg, num_classes).to(device)
    trainable = TrainingModule(model, criterion, teacher_forward=meta.teacher_forward, amp=tc.amp)
    lr_scales = {"model.backbone.": tc.backbone_lr_mult} if tc.backbone_lr_mult != 1 else None
    optimizer = build_optimizer(tc, trainable, lr_scales=lr_scales)
    return TrainingParts(
        model, criterion, trainable, optimizer, meta.teacher_forward, memory_format
    )


def log_run_start(
    log: MetricLogger,
    cfg: Config,
    model: nn.Module,
    data: TrainingData,
    info: DistInfo,
    *,
    start_step: int,
    end_step: int,
) -> None:
    """The run's first lines: a warning for a warmup that never ends, then what trains where."""
    tc = cfg.train
    if tc.warmup_steps >= tc.max_steps:
        log.message(
            f"warning: train.warmup_steps={tc.warmup_steps} >= train.max_steps={tc.max_steps}: "
            "the warmup aims at the cosine value at its end, which is ~0, so the LR stays ~0"
        )
    log.message(
        f"training {type(model).__name__} "
        f"({sum(p.numel() for p in model.parameters()):,}"
        f" parameters, {data.num_classes} classes) on {len(data.train_set)} images, "
        f"device {info.device}, world size {info.world_size}, "
        f"steps {start_step}..{end_step} of {tc.max_steps}"
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints and the end of the run


def refresh_precise_bn(
    parts: TrainingParts,
    ema: ModelEma | None,
    data: TrainingData,
    cfg: Config,
    info: DistInfo,
    *,
    step: int,
) -> None:
    """Precise BN statistics of the model and of the EMA model before a checkpoint or evaluation.

    Every rank calls it together (``engine/precise_bn.py``; on by default for short runs only).
    """
    refresh_bn_statistics(
        [parts.model] if ema is None else [parts.model, ema.module],
        data.train_set,
        cfg=cfg,
        step=step,
        rank=info.rank,
        world_size=info.world_size,
        teacher_forward=parts.teacher_forward,
        device=info.device,
        memory_format=parts.memory_format,
    )


def save_training_checkpoint(
    output_dir: Path,
    cfg: Config,
    parts: TrainingParts,
    ema: ModelEma | None,
    data: TrainingData,
    *,
    step: int,
) -> Path:
    """Write ``checkpoints/step_<step>/`` with the trainer state a resume needs (rank 0 only).

    Returns:
        The checkpoint directory.
    """
    return save_checkpoint(
        output_dir / CHECKPOINT_DIR,
        model=parts.model,
        ema=ema,
        optimizer=parts.optimizer,
        step=step,
        config=cfg,
        categories=data.categories,
        num_classes=data.num_classes,
        trainer_extra={"rng": rng_state(), "sampler": {"next_step": step}},
        criterion=parts.criterion,
    )


def evaluate_on_val(
    model: nn.Module,
    data: TrainingData,
    cfg: Config,
    info: DistInfo,
    *,
    step: int,
    progress: bool,
    log: MetricLogger,
) -> dict[str, Any]:
    """``run_evaluation`` of ``model`` on the validation split after optimizer step ``step``.

    Every rank calls it together; only rank 0 shows a progress bar (when ``progress``).
    """
    return run_evaluation(
        model,
        data.val_set,
        cfg=cfg,
        categories=data.categories,
        num_classes=data.num_classes,
        device=info.device,
        progress=progress and info.is_main,
        step=step,
        log=log,
    )


def _loggable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Evaluation metrics without the per-class table (that one goes to the checkpoint)."""
    return {k: v for k, v in metrics.items() if k != "per_class"}


def finish_run(output_dir: Path, bar: TrainProgress, log: MetricLogger, *, is_main: bool) -> None:
    """Close the progress bar and the logger; rank 0 plots ``training_curves.png``."""
    bar.close()
    log.close()
    if is_main:
        plot_training_curves(output_dir / "metrics.jsonl", output_dir / "training_curves.png")


def run_summary(
    stats: LoopStats,
    metrics: dict[str, Any],
    *,
    start_step: int,
    end_step: int,
    wall_start: float,
    checkpoint: Path | None,
    output_dir: Path,
) -> dict[str, Any]:
    """``train``'s return value (see its docstring) from the loop's counters and last metrics."""
    all_pq = metrics.get("all", {}).get(BEST_METRIC) if metrics else None
    return {
        "steps": max(end_step, start_step),
        "start_step": start_step,
        "final_losses": stats.last_losses,
        "pq": all_pq,
        "metrics": _loggable(metrics),
        "images_per_s": stats.images / stats.seconds if stats.seconds > 0 else math.nan,
        "train_seconds": stats.seconds,
        "wall_time_s": time.perf_counter() - wall_start,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "output_dir": str(output_dir),
        "skipped_samples": stats.skipped,
    }
