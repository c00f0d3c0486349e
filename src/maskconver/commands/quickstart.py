"""``maskconver quickstart``: train, evaluate and predict on the synthetic dataset in one command.

What it does, in order (everything lands in ``--output-dir``):

1. loads the ``tiny`` preset (plus ``--set`` overrides) and trains for the preset's
   ``train.max_steps`` (a fixed budget, so the PQ does not depend on the machine's load; about
   8-9 minutes on an idle 2-core CPU); ``--minutes M`` instead sizes the budget so that training
   takes about M minutes here (a few training steps are timed first). The faster of 1 and the
   default number of torch threads is chosen by timing a few steps;
2. trains on the procedural synthetic scenes (``engine.train.train``): ``metrics.jsonl``,
   ``config.yaml``, ``checkpoints/`` (``best/`` = highest validation PQ);
3. writes the synthetic validation split to ``data/`` in the COCO panoptic layout (lossless PNG
   images), evaluates the best checkpoint on it and saves the predictions in COCO panoptic
   format to ``val_predictions/``; the saved files are re-scored with the file evaluator
   (panopticapi semantics) as a cross-check;
4. predicts held-out scenes (never seen in training or validation, written to ``heldout/``) and
   draws ``pictures/<name>_overlay.jpg`` and ``pictures/<name>_gt_vs_pred.jpg``;
5. plots ``training_curves.png``, writes ``metrics.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

PRESET = "tiny"
DEFAULT_OUTPUT = Path("runs/quickstart")
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
HELDOUT_IMAGES = 6
HELDOUT_STREAM = 2  # synthetic sample stream disjoint from train (0) and val (1)
PICTURE_SCALE = 3  # pictures are drawn at 3x the scene size
VAL_SPLIT = "val2017"
EXIT_OK = 0
EXIT_USAGE = 2
PQ_AGREEMENT_TOLERANCE = 1e-9
MARKER = ".maskconver-quickstart"  # marks a folder the quickstart may replace on the next run


def register(subparsers: Any) -> None:
    """Add the ``quickstart`` subcommand."""
    p = subparsers.add_parser(
        "quickstart",
        help="train + evaluate + predict on synthetic data in one command (about 10 minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="run folder")
    p.add_argument(
        "--minutes", type=float, default=None,
        help="size the step budget to train for about this many minutes here (default: the "
        "preset's fixed train.max_steps, which reproduces the reported PQ)",
    )
    p.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
        help="config override on top of the tiny preset, e.g. --set train.lr=0.003 (several may follow one --set; repeatable)",
    )
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace a non-empty --output-dir that holds another maskconver run (an earlier "
        "quickstart run is always replaced)",
    )
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads (default: time 1 thread against torch's default thread count "
        "and take the faster)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


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

    from maskconver.build import build_criterion, build_eval_transforms, build_model
    from maskconver.build import build_postprocessor, build_target_generator
    from maskconver.build import build_train_transforms, resolve_num_classes
    from maskconver.data.loader import TrainSampleDataset, collate_train
    from maskconver.engine.data import build_dataset
    from maskconver.engine.optim import build_optimizer
    from maskconver.predictor import predict_samples

    base = build_dataset(cfg, "train")
    categories = base.categories
    num_classes = resolve_num_classes(cfg, categories)
    samples = TrainSampleDataset(
        base, transforms=build_train_transforms(cfg),
        target_generator=build_target_generator(cfg, categories, num_classes), seed=cfg.train.seed,
    )
    size = cfg.train.batch_size
    start = time.perf_counter()
    batches = [
        collate_train([samples[(k * size + i) % len(samples)] for i in range(size)])
        for k in range(steps + 1)
    ]
    data_seconds = (time.perf_counter() - start) / len(batches)
    model = build_model(cfg.model, num_classes).train()
    criterion = build_criterion(cfg)
    optimizer = build_optimizer(cfg.train, model)
    compute: dict[int, float] = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        timed = 0.0
        for k, (images, targets) in enumerate(batches):
            start = time.perf_counter()
            losses = criterion(model(images, targets.center_indices, targets.classes), targets)
            losses["loss"].backward()
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
            model, build_postprocessor(cfg, categories, num_classes),
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


def quickstart_config(
    minutes: float | None, overrides: list[str], *, threads: int | None = None
) -> Any:
    """The tiny preset, with a step budget for ``minutes`` when given (``--set`` values win).

    The step time is calibrated here (a few seconds) for ``threads`` torch threads, or for 1 and
    torch's default count when ``threads`` is None, and the faster setting is used; the
    calibration also sizes the budget when ``minutes`` is given and ``train.max_steps`` is not
    set. Sets the torch thread count.
    """
    import torch

    from maskconver.config import load_config

    cfg = load_config(PRESET, overrides)
    keys = {text.split("=", 1)[0].strip() for text in overrides}
    train, data = cfg.train, cfg.data
    counts = [threads] if threads else sorted({1, torch.get_num_threads()})
    chosen_threads, workers = counts[0], 1 if counts[0] == 1 else 0
    timed_budget = minutes is not None and "train.max_steps" not in keys
    if timed_budget or len(counts) > 1:
        cal = calibrate(cfg, counts)
        chosen_threads, workers, step_seconds = cal.plan()
        eval_seconds = cal.eval_image * data.synthetic_val
        print(f"quickstart: {step_seconds:.2f} s per step here ({chosen_threads} torch thread(s), "
              f"{workers} loader worker(s)), {eval_seconds:.1f} s per evaluation")
        if timed_budget and minutes is not None:
            train = dataclasses.replace(
                train, max_steps=budget_steps(minutes, step_seconds, eval_seconds)
            )
            print(f"quickstart: {train.max_steps} steps fit in {minutes:g} minutes")
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


def _check_output(out: Path, overwrite: bool) -> str | None:
    """None if ``out`` may be (re)used, else an error message.

    An earlier quickstart run (it leaves a ``MARKER`` file) is replaced, so the one command can be
    run again; any other non-empty folder needs ``--overwrite``, and only a maskconver run folder
    is ever deleted.
    """
    if not out.exists() or not any(out.iterdir()) or (out / MARKER).is_file():
        return None
    if not overwrite:
        return f"{out} is not empty; pass --overwrite to replace it or choose another --output-dir"
    if not ((out / "config.yaml").is_file() or (out / "checkpoints").is_dir()):
        return f"{out} does not look like a maskconver run; refusing to delete it"
    return None


def _fail(message: str) -> int:
    print(f"maskconver quickstart: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Run the whole quickstart; returns 0 on success, 2 on bad arguments.

    The torch thread count chosen for the run is restored afterwards (the command may run
    inside another Python process, e.g. a test).
    """
    import torch

    from maskconver.config import ConfigError

    wall_start = time.perf_counter()
    if args.threads is not None and args.threads < 1:
        return _fail(f"--threads must be >= 1, got {args.threads}")
    if args.minutes is not None and args.minutes <= 0:
        return _fail(f"--minutes must be > 0, got {args.minutes}")
    out: Path = args.output_dir
    problem = _check_output(out, args.overwrite)
    if problem:
        return _fail(problem)
    threads_before = torch.get_num_threads()
    try:
        cfg = quickstart_config(args.minutes, list(args.overrides), threads=args.threads)
        if cfg.data.root is not None:
            return _fail("the quickstart trains on synthetic data; use `maskconver train "
                         "--data-root` for a dataset")
        if out.exists() and any(out.iterdir()):
            print(f"quickstart: replacing the earlier run in {out}")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by `maskconver quickstart`; the next run replaces this folder\n")
        results = run_quickstart(cfg, out, progress=not args.no_progress)
    except ConfigError as e:
        return _fail(str(e))
    finally:
        torch.set_num_threads(threads_before)
    results["wall_time_s"] = time.perf_counter() - wall_start
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    print_summary(results, out)
    return EXIT_OK


def run_quickstart(cfg: Any, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate (with saved predictions), predict held-out scenes and plot; returns metrics."""
    import torch

    from maskconver.data.coco_panoptic import CocoPanopticDataset, standard_paths
    from maskconver.data.synthetic import write_synthetic_dataset
    from maskconver.engine.checkpoint import load_model
    from maskconver.engine.evaluate import evaluate_model
    from maskconver.engine.train import train
    from maskconver.evaluation.pq_files import evaluate_files

    print(f"quickstart: training the '{PRESET}' preset for {cfg.train.max_steps} steps "
          f"(batch {cfg.train.batch_size}, {cfg.augment.input_size[0]}px) into {out}")
    summary = train(cfg, out, progress=progress)
    best = out / "checkpoints" / "best"
    checkpoint = best if best.is_dir() else Path(str(summary["checkpoint"]))

    print("quickstart: writing the validation split in COCO panoptic format")
    data_root = out / "data"
    d = cfg.data
    write_synthetic_dataset(
        data_root, train=0, val=d.synthetic_val, seed=d.synthetic_seed,
        min_size=d.synthetic_min_size, max_size=d.synthetic_max_size, image_format="png",
        progress=progress,
    )
    model, run_cfg, categories, num_classes = load_model(checkpoint, use_ema=True)
    dataset = CocoPanopticDataset(data_root, VAL_SPLIT, label_space=run_cfg.model.label_space)
    pred_dir = out / "val_predictions"
    metrics = evaluate_model(
        model, dataset, cfg=run_cfg, categories=categories, num_classes=num_classes,
        batch_size=run_cfg.eval.batch_size, progress=progress, save_dir=pred_dir,
    )
    _, gt_json, gt_dir = standard_paths(data_root, VAL_SPLIT)
    files_metrics = evaluate_files(gt_json, gt_dir, pred_dir / "predictions.json", pred_dir / "panoptic")
    files_pq = float(files_metrics["all"]["pq"])

    draw_heldout_pictures(model, run_cfg, categories, num_classes, out)  # train() drew the curves
    return {
        "pq": {split: metrics[split] for split in ("all", "things", "stuff")},
        "per_class": metrics.get("per_class", {}),
        "files_check": {
            "pq": files_pq,
            "agrees": abs(files_pq - float(metrics["all"]["pq"])) <= PQ_AGREEMENT_TOLERANCE,
        },
        "train": {
            "steps": summary["steps"],
            "batch_size": cfg.train.batch_size,
            "input_size": list(cfg.augment.input_size),
            "seconds": summary["train_seconds"],
            "images_per_s": summary["images_per_s"],
            "torch_threads": torch.get_num_threads(),
            "loader_workers": cfg.data.num_workers,
            "final_losses": summary["final_losses"],
        },
        "eval": {
            "images": metrics["images"],
            "seconds": metrics["seconds"],
            "images_per_s": metrics["images"] / max(metrics["seconds"], 1e-9),
        },
        "checkpoint": str(checkpoint),
    }


def draw_heldout_pictures(model: Any, cfg: Any, categories: Any, num_classes: int, out: Path) -> None:
    """Predict held-out synthetic scenes; save inputs, overlays and GT-vs-prediction pictures."""
    from maskconver.build import build_eval_transforms, build_postprocessor
    from maskconver.data.image_io import save_image
    from maskconver.data.synthetic import SyntheticPanoptic
    from maskconver.predictor import Predictor
    from maskconver.visualize import overlay, side_by_side

    d = cfg.data
    heldout = SyntheticPanoptic(
        HELDOUT_IMAGES, seed=d.synthetic_seed, min_size=d.synthetic_min_size,
        max_size=d.synthetic_max_size, stream=HELDOUT_STREAM, label_space=cfg.model.label_space,
    )
    predictor = Predictor(
        model, cfg=cfg, categories=categories,
        postprocessor=build_postprocessor(cfg, categories, num_classes),
        transform=build_eval_transforms(cfg),
    )
    samples = [heldout[i] for i in range(len(heldout))]
    predictions = predictor.predict_batch([s.image for s in samples])
    pictures = out / "pictures"
    for index, (sample, pred) in enumerate(zip(samples, predictions)):
        name = f"heldout_{index:02d}"
        save_image(out / "heldout" / f"{name}.png", sample.image)
        # the scenes are ~100-160 px: enlarge (nearest neighbour) so labels stay readable
        image, gt, predicted = (_enlarge(a) for a in (sample.image, sample.panoptic, pred.panoptic))
        save_image(pictures / f"{name}_overlay.jpg", overlay(image, predicted, pred.segments, categories))
        save_image(
            pictures / f"{name}_gt_vs_pred.jpg",
            side_by_side(image, gt, sample.segments, predicted, pred.segments, categories),
        )


def _enlarge(array: Any) -> Any:
    """``[H, W, ...]`` -> ``[PICTURE_SCALE H, PICTURE_SCALE W, ...]`` by pixel repetition."""
    return array.repeat(PICTURE_SCALE, axis=0).repeat(PICTURE_SCALE, axis=1)


def _percent(value: float) -> str:
    return f"{100.0 * value:5.1f}"


def print_summary(results: dict[str, Any], out: Path) -> None:
    """Print PQ/SQ/RQ (all/things/stuff), timing and where the files are."""
    lines = ["", "quickstart finished", "", "           PQ     SQ     RQ   (synthetic val, %)"]
    for split in ("all", "things", "stuff"):
        m = results["pq"][split]
        lines.append(f"  {split:<7} {_percent(m['pq'])}  {_percent(m['sq'])}  {_percent(m['rq'])}")
    t, e = results["train"], results["eval"]
    check = results["files_check"]
    lines += [
        "",
        f"  training: {t['steps']} steps in {t['seconds'] / 60:.1f} min ({t['images_per_s']:.1f} images/s,"
        f" {t['torch_threads']} torch thread(s), {t['loader_workers']} loader worker(s))",
        f"  evaluation: {e['images']} images in {e['seconds']:.1f} s ({e['images_per_s']:.1f} images/s);"
        f" saved-file PQ {'agrees' if check['agrees'] else 'DIFFERS'} ({_percent(check['pq']).strip()})",
        f"  wall time: {results['wall_time_s'] / 60:.1f} min",
        "",
        f"  checkpoint:       {results['checkpoint']}",
        f"  val predictions:  {out / 'val_predictions'} (COCO panoptic, GT in {out / 'data'})",
        f"  pictures:         {out / 'pictures'}/",
        f"  training curves:  {out / 'training_curves.png'}",
        f"  metrics:          {out / 'metrics.json'}",
        "",
        "  next: maskconver predict --checkpoint "
        f"{results['checkpoint']} --input {out / 'heldout'} --output {out / 'predict'}",
    ]
    print("\n".join(lines))
