"""The training loop: one function, read top to bottom (nanoGPT / torchvision references style).

``train(cfg, output_dir)`` seeds everything, joins the ``torchrun`` process group if there is one,
builds data, model, criterion, optimizer and EMA through the meta-architecture table
(``build.meta_architecture``), optionally resumes from the latest checkpoint,
then runs ``max_steps`` optimizer steps with warmup + cosine LR, optional bf16 autocast, gradient
accumulation, global-norm clipping, EMA updates, logging, periodic PQ evaluation (on the EMA
weights) and atomic checkpoints.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskconver.build import (
    build_copy_paste,
    build_criterion,
    build_model,
    build_target_generator,
    build_train_transforms,
    meta_architecture,
    resolve_num_classes,
)
from maskconver.config import Config, ConfigError
from maskconver.engine import distributed as dist_utils
from maskconver.engine.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
    update_metrics,
)
from maskconver.engine.data import build_dataset, check_same_categories, check_split
from maskconver.engine.ema import ModelEma
from maskconver.engine.evaluate import run_evaluation
from maskconver.engine.loader import StepSampler, TrainSampleDataset, build_train_loader
from maskconver.engine.logging import MetricLogger
from maskconver.engine.optim import build_optimizer, lr_of, set_lr
from maskconver.engine.plots import plot_training_curves
from maskconver.engine.precise_bn import refresh_bn_statistics
from maskconver.engine.run_dir import prepare_run
from maskconver.engine.step import (
    NonFiniteLossError,
    TrainingModule,
    check_finite,
    mean_over_ranks,
    warm_up_bn_momentum,
)

__all__ = ["NonFiniteLossError", "seed_everything", "train"]

BEST_METRIC = "pq"
# Seed offset between ranks for model-side randomness (drop path); data randomness is keyed.
RANK_SEED_STRIDE = 1_000_003


# ---------------------------------------------------------------------------------------------
# Setup helpers


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loggable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Evaluation metrics without the per-class table (that one goes to the checkpoint)."""
    return {k: v for k, v in metrics.items() if k != "per_class"}


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
        progress: tqdm bar (rate, ETA) on rank 0.
        stop_at: stop after this many optimizer steps with a checkpoint, as if pre-empted (the
            LR schedule still spans ``max_steps``; the final evaluation is skipped).

    Returns:
        ``{"steps", "start_step", "final_losses", "pq", "metrics", "images_per_s",
        "train_seconds", "wall_time_s", "checkpoint", "output_dir", "skipped_samples"}``.

    Raises:
        NonFiniteLossError: a loss term became NaN/inf (names the step and the terms).
        FileExistsError: ``output_dir`` already has checkpoints and ``resume`` is False.
    """
    wall_start = time.perf_counter()
    output_dir = Path(output_dir)
    if data_root is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=data_root))
    tc = cfg.train
    owns_group = not dist_utils.is_dist()
    info = dist_utils.init_distributed()
    try:
        device = info.device
        # every check that can refuse the run happens before anything is written
        checkpoint = prepare_run(output_dir, cfg, resume=resume, is_main=info.is_main)
        seed_everything(tc.seed)
        log = MetricLogger(output_dir, enabled=info.is_main)

        # Data: categories come from the training split.
        train_base = build_dataset(cfg, "train")
        val_base = build_dataset(cfg, "val")
        categories = train_base.categories
        check_same_categories(categories, val_base.categories)
        num_classes = resolve_num_classes(cfg, categories)
        for split, dataset in (("train", train_base), ("val", val_base)):
            check_split(dataset, split, skip_bad=cfg.data.skip_bad_samples, log=log.message)
        train_set = TrainSampleDataset(
            train_base,
            transforms=build_train_transforms(cfg),
            target_generator=build_target_generator(cfg, categories, num_classes),
            copy_paste=build_copy_paste(cfg, categories),
            seed=tc.seed,
            skip_bad=cfg.data.skip_bad_samples,
        )

        # Model, loss, optimizer, EMA (EMA from the bare model, before DDP wrapping). The model and
        # the criterion (which may own training-only parameters) train as one module.
        meta = meta_architecture(cfg.model)
        model: nn.Module = build_model(cfg.model, num_classes).to(device)
        if info.distributed and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # reference trains with sync BN
        memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
        model = cast(Any, model).to(memory_format=memory_format)  # (missing from torch's stubs)
        criterion = build_criterion(cfg, num_classes).to(device)
        trainable = TrainingModule(
            model, criterion, teacher_forward=meta.teacher_forward, amp=tc.amp
        )
        lr_scales = {"model.backbone.": tc.backbone_lr_mult} if tc.backbone_lr_mult != 1 else None
        optimizer = build_optimizer(tc, trainable, lr_scales=lr_scales)
        ema = ModelEma(model, tc.ema_decay, warmup=tc.ema_warmup) if tc.ema else None
        torch.manual_seed(tc.seed + RANK_SEED_STRIDE * info.rank)  # per-rank model randomness

        # Resume: weights, EMA, optimizer, step; RNG restored right before the loop.
        start_step, resumed_rng = 0, None
        if checkpoint is not None:
            loaded = load_checkpoint(checkpoint, map_location=str(device))
            try:
                model.load_state_dict(loaded.model_state)
            except RuntimeError as e:
                raise CheckpointError(
                    f"cannot resume from {checkpoint}: its weights do not fit the configured "
                    f"model (was the model config changed?): {e}"
                ) from e
            if loaded.criterion_state is not None:
                criterion.load_state_dict(loaded.criterion_state)
            if ema is not None and loaded.ema_state is not None:
                ema.load_state_dict(loaded.ema_state)
            elif ema is not None:  # EMA switched on mid-run: start it from the weights
                ema = ModelEma(model, tc.ema_decay, warmup=tc.ema_warmup)
            trainer = loaded.trainer_state or {}
            if "optimizer" in trainer:
                optimizer.load_state_dict(trainer["optimizer"])
            start_step = loaded.step
            resumed_rng = trainer.get("rng") if info.is_main else None
            if not info.is_main:
                torch.manual_seed(tc.seed + RANK_SEED_STRIDE * info.rank + start_step)
            log.message(f"resumed from {checkpoint} at step {start_step}")
        elif resume:
            log.message(f"no checkpoint in {output_dir}; starting from step 0")

        raw_model = model
        ddp = (
            nn.parallel.DistributedDataParallel(
                trainable, device_ids=[info.local_rank] if device.type == "cuda" else None
            )
            if info.distributed
            else None
        )
        step_module: nn.Module = ddp if ddp is not None else trainable
        end_step = tc.max_steps if stop_at is None else min(stop_at, tc.max_steps)
        micro_batch = tc.batch_size // (info.world_size * tc.grad_accum)
        needed = int(getattr(raw_model, "min_train_batch", 1))  # e.g. ASPP image-pooling BN: 2
        if micro_batch < needed:
            raise ConfigError(
                f"train.batch_size={tc.batch_size} over {info.world_size} process(es) x "
                f"grad_accum={tc.grad_accum} leaves {micro_batch} image(s) per forward; this "
                f"model needs at least {needed} (batch statistics of its decoder)"
            )
        sampler = StepSampler(
            len(train_set),
            tc.batch_size,
            seed=tc.seed,
            start_step=start_step,
            rank=info.rank,
            world_size=info.world_size,
            micro_batches=tc.grad_accum,
            num_steps=end_step,
        )
        loader = build_train_loader(
            train_set,
            sampler,
            num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda",
            seed=tc.seed,
        )
        batches: Iterator[Any] = iter(loader)
        if resumed_rng is not None:
            set_rng_state(resumed_rng)

        if tc.warmup_steps >= tc.max_steps:
            log.message(
                f"warning: train.warmup_steps={tc.warmup_steps} >= train.max_steps={tc.max_steps}: "
                "the warmup aims at the cosine value at its end, which is ~0, so the LR stays ~0"
            )
        log.message(
            f"training {type(raw_model).__name__} "
            f"({sum(p.numel() for p in raw_model.parameters()):,}"
            f" parameters, {num_classes} classes) on {len(train_set)} images, device {device}, "
            f"world size {info.world_size}, steps {start_step}..{end_step} of {tc.max_steps}"
        )
        bar = tqdm(
            total=tc.max_steps,
            initial=start_step,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            disable=None if progress and info.is_main else True,  # None: off when not a terminal
        )
        window_losses: dict[str, float] = {}
        window_steps, window_images, window_time = 0, 0, 0.0
        train_images, train_time = 0, 0.0
        final_losses: dict[str, float] = {}
        metrics: dict[str, Any] = {}
        saved: Path | None = checkpoint
        skipped = 0
        trainable.train()
        for step in range(start_step, end_step):
            step_start = time.perf_counter()
            lr = lr_of(tc, step)
            set_lr(optimizer, lr)
            if tc.bn_momentum_warmup:
                warm_up_bn_momentum(raw_model, step, cfg.model.bn_momentum)
            step_losses: dict[str, torch.Tensor] = {}
            for micro in range(tc.grad_accum):
                images, targets, skipped_now = next(batches)
                skipped += skipped_now
                images = images.to(device, non_blocking=True).contiguous(
                    memory_format=memory_format
                )
                targets = targets.to(device)
                last_micro = micro == tc.grad_accum - 1
                # DDP: all-reduce gradients only on the last micro-batch
                sync = (
                    ddp.no_sync()
                    if ddp is not None and not last_micro
                    else contextlib.nullcontext()
                )
                with sync:
                    losses = step_module(images, targets)
                    check_finite(losses, step + 1, micro)
                    (losses["loss"] / tc.grad_accum).backward()
                for name, value in losses.items():
                    step_losses[name] = step_losses.get(name, 0.0) + value.detach() / tc.grad_accum
            grad_norm = None
            if tc.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable.parameters(), tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(raw_model, step)
            done = step + 1
            bar.update(1)

            # Logging (losses averaged over the window and over ranks).
            for name, value in step_losses.items():
                window_losses[name] = window_losses.get(name, 0.0) + float(value)
            window_steps += 1
            window_images += tc.batch_size
            elapsed = time.perf_counter() - step_start
            window_time += elapsed
            train_images += tc.batch_size
            train_time += elapsed
            if done % tc.log_every == 0 or done == end_step:
                final_losses = mean_over_ranks(
                    {k: v / window_steps for k, v in window_losses.items()}, device
                )
                record: dict[str, Any] = {"lr": lr, **final_losses}
                record["images_per_s"] = window_images / max(window_time, 1e-9)
                record["epoch"] = done * tc.batch_size / len(train_set)
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                log.log(done, record)
                bar.set_postfix(loss=f"{final_losses['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                window_losses, window_steps, window_images, window_time = {}, 0, 0, 0.0

            # Checkpoint first (rank 0), then evaluate on the EMA weights: an evaluation that
            # fails costs no checkpoint. The best copy is chosen once the metrics are in.
            due_ckpt = done % tc.ckpt_every == 0 or done == end_step
            is_final = done == tc.max_steps
            due_eval = (tc.eval_every > 0 and done % tc.eval_every == 0) or is_final
            if due_ckpt or due_eval:  # precise BN (on by default for short runs only)
                refresh_bn_statistics(
                    [raw_model] if ema is None else [raw_model, ema.module],
                    train_set,
                    cfg=cfg,
                    step=done,
                    rank=info.rank,
                    world_size=info.world_size,
                    teacher_forward=meta.teacher_forward,
                    device=device,
                    memory_format=memory_format,
                )
            if due_ckpt and info.is_main:
                saved = save_checkpoint(
                    output_dir / CHECKPOINT_DIR,
                    model=raw_model,
                    ema=ema,
                    optimizer=optimizer,
                    step=done,
                    config=cfg,
                    categories=categories,
                    num_classes=num_classes,
                    trainer_extra={"rng": rng_state(), "sampler": {"next_step": done}},
                    criterion=criterion,
                )
            if due_eval:
                metrics = run_evaluation(
                    ema.module if ema is not None else raw_model,
                    val_base,
                    cfg=cfg,
                    categories=categories,
                    num_classes=num_classes,
                    device=device,
                    progress=progress and info.is_main,
                    step=done,
                    log=log,
                )
            if due_ckpt and info.is_main:
                if due_eval and saved is not None and "error" not in metrics:
                    update_metrics(
                        saved, _loggable(metrics) | {"per_class": metrics.get("per_class", {})}
                    )
                prune_checkpoints(output_dir, tc.keep_last, keep_best_by=BEST_METRIC)
            if due_ckpt:
                dist_utils.barrier()
        bar.close()
        log.close()
        if info.is_main:
            plot_training_curves(output_dir / "metrics.jsonl", output_dir / "training_curves.png")
        all_pq = metrics.get("all", {}).get(BEST_METRIC) if metrics else None
        return {
            "steps": max(end_step, start_step),
            "start_step": start_step,
            "final_losses": final_losses,
            "pq": all_pq,
            "metrics": _loggable(metrics),
            "images_per_s": train_images / train_time if train_time > 0 else math.nan,
            "train_seconds": train_time,
            "wall_time_s": time.perf_counter() - wall_start,
            "checkpoint": str(saved) if saved is not None else None,
            "output_dir": str(output_dir),
            "skipped_samples": skipped,
        }
    finally:
        if owns_group:
            dist_utils.cleanup()
