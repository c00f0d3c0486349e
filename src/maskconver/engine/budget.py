"""Sizing a run to this machine: time a few training steps, pick threads, fit a step budget.

``calibrate`` times data preparation, optimizer steps per torch thread count and evaluation on
the run's own config; ``plan_run`` turns that into a config with a step budget for a wall-clock
target (``maskconver quickstart --minutes``) and the faster thread/worker setting, with the
evaluation and checkpoint cadence of a short run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

SECONDS_PER_MINUTE = 60.0
# Timed training steps per thread count before the budget is fixed. Thread counts are timed
# because the best one depends on the load: on the 2-core CPU a tiny-preset step took 0.14 s with
# two torch threads and 0.20 s with one when idle, but 12 s with two and 0.53 s with one while
# other jobs ran (OpenMP spin-waits under contention).
CALIBRATION_STEPS = 3
MIN_STEPS = 20
# Long runs step ~8 % slower than the short calibration (checkpoints, allocator, thermals);
# measured: 0.14 s calibrated vs 0.152 s over 3318 steps.
BUDGET_SAFETY = 0.92
EVALS_DURING_TRAINING = 4  # validation PQ points on the training curve (the last one included)
WARMUP_FRACTION = 0.05  # warmup is capped at this fraction of a short budget


@dataclasses.dataclass
class Calibration:
    """Costs of the run's config measured on this machine, in seconds.

    Attributes:
        data: preparing one training batch (synthesis, augmentation, targets).
        compute: torch thread count -> one optimizer step on a ready batch.
        eval_image: evaluating one validation image (forward + panoptic merge).
    """

    data: float
    compute: dict[int, float]
    eval_image: float

    def plan(self) -> tuple[int, int, float]:
        """Fastest ``(torch threads, loader workers, seconds per step)``, data prepared inline.

        With one compute thread a loader worker is added on the second core, but not credited:
        measured, it hid none of the data time (0.216 s per step against 0.16 s predicted).
        """
        threads, step = min(self.compute.items(), key=lambda item: item[1] + self.data)
        return threads, 1 if threads == 1 else 0, step + self.data


def calibrate(cfg: Any, thread_counts: list[int], *, steps: int = CALIBRATION_STEPS) -> Calibration:
    """Time data preparation, training steps per thread count, and evaluation, right now.

    Each thread count gets one untimed warm-up step (one-off allocations), then ``steps`` timed
    optimizer steps on real synthetic batches; evaluation is timed on one batch.
    """
    import torch

    from maskconver.build import (
        build_criterion,
        build_eval_transforms,
        build_model,
        build_postprocessor,
        build_target_generator,
        build_train_transforms,
        meta_architecture,
        resolve_num_classes,
    )
    from maskconver.engine.data import build_dataset
    from maskconver.engine.loader import TrainSampleDataset, collate_train
    from maskconver.engine.optim import build_optimizer
    from maskconver.engine.step import TrainingModule
    from maskconver.inference import predict_samples

    base = build_dataset(cfg, "train")
    categories = base.categories
    num_classes = resolve_num_classes(cfg, categories)
    samples = TrainSampleDataset(
        base,
        transforms=build_train_transforms(cfg),
        target_generator=build_target_generator(cfg, categories, num_classes),
        seed=cfg.train.seed,
    )
    size = cfg.train.batch_size
    start = time.perf_counter()
    batches = [
        collate_train([samples[(k * size + i) % len(samples)] for i in range(size)])
        for k in range(steps + 1)
    ]
    data_seconds = (time.perf_counter() - start) / len(batches)
    model = build_model(cfg.model, num_classes)
    trainable = TrainingModule(
        model,
        build_criterion(cfg, num_classes),
        teacher_forward=meta_architecture(cfg.model).teacher_forward,
    ).train()
    optimizer = build_optimizer(cfg.train, trainable)
    compute: dict[int, float] = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        timed = 0.0
        for k, (images, targets, _) in enumerate(batches):
            start = time.perf_counter()
            trainable(images, targets)["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            timed += time.perf_counter() - start if k > 0 else 0.0
        compute[threads] = timed / steps
    model.eval()
    val = build_dataset(cfg, "val")
    transform = build_eval_transforms(cfg)
    count = min(cfg.eval.batch_size, len(val))
    start = time.perf_counter()
    with torch.inference_mode():
        predict_samples(
            model,
            build_postprocessor(cfg, categories, num_classes),
            [transform(val[i]) for i in range(count)],
        )
    return Calibration(data_seconds, compute, (time.perf_counter() - start) / max(count, 1))


def budget_steps(minutes: float, step_seconds: float, eval_seconds: float) -> int:
    """Optimizer steps that fit in ``minutes``, with ``EVALS_DURING_TRAINING`` evaluations.

    Args:
        minutes: the training budget.
        step_seconds: seconds per optimizer step.
        eval_seconds: seconds of one full validation pass.
    """
    available = minutes * SECONDS_PER_MINUTE - EVALS_DURING_TRAINING * eval_seconds
    return max(MIN_STEPS, int(BUDGET_SAFETY * available / step_seconds))


def plan_run(
    cfg: Any, minutes: float | None, *, explicit: set[str], threads: int | None = None
) -> Any:
    """``cfg`` sized to this machine (keys named in ``explicit`` are never changed).

    The step time is calibrated here (a few seconds) for ``threads`` torch threads, or for 1 and
    torch's default count when ``threads`` is None, and the faster setting is used; the
    calibration also sizes the budget when ``minutes`` is given and ``train.max_steps`` is not
    explicit. Evaluations and checkpoints are spread over the run, warmup is capped for short
    budgets. Sets the torch thread count.

    Args:
        cfg: the run config.
        minutes: wall-clock training target, or None to keep ``train.max_steps``.
        explicit: dotted keys the user set (``train.max_steps``, ``data.num_workers``, ...).
        threads: torch thread count to use (skip timing thread counts).
    """
    import torch

    keys = explicit
    train, data = cfg.train, cfg.data
    counts = [threads] if threads else sorted({1, torch.get_num_threads()})
    chosen_threads, workers = counts[0], 1 if counts[0] == 1 else 0
    timed_budget = minutes is not None and "train.max_steps" not in keys
    if timed_budget or len(counts) > 1:
        cal = calibrate(cfg, counts)
        chosen_threads, workers, step_seconds = cal.plan()
        eval_seconds = cal.eval_image * data.synthetic_val
        print(
            f"{step_seconds:.2f} s per step here ({chosen_threads} torch thread(s), "
            f"{workers} loader worker(s)), {eval_seconds:.1f} s per evaluation"
        )
        if timed_budget and minutes is not None:
            train = dataclasses.replace(
                train, max_steps=budget_steps(minutes, step_seconds, eval_seconds)
            )
            print(f"{train.max_steps} steps fit in {minutes:g} minutes")
    torch.set_num_threads(chosen_threads)
    every = max(1, -(-train.max_steps // EVALS_DURING_TRAINING))
    defaults = {
        "warmup_steps": min(train.warmup_steps, int(WARMUP_FRACTION * train.max_steps)),
        "eval_every": every,
        "ckpt_every": every,
    }
    train = dataclasses.replace(
        train, **{k: v for k, v in defaults.items() if f"train.{k}" not in keys}
    )
    if "data.num_workers" not in keys:
        data = dataclasses.replace(data, num_workers=workers)
    return dataclasses.replace(cfg, train=train, data=data)
