"""``maskconver quickstart``: train, evaluate and predict on the synthetic dataset in one command.

What it does, in order (everything lands in ``--output-dir``):

1. loads the ``tiny`` preset (or ``--config``: ``kmax_tiny``, ``dr1mask_small`` or any preset or
   YAML file that trains on the synthetic data; plus ``--set`` overrides) and trains for its
   ``train.max_steps`` (a fixed budget, so the PQ does not depend on the machine's load, only on
   the torch thread count: a different count is a different floating-point trajectory; about
   12-14 minutes on a 2-core CPU); ``--minutes M`` instead sizes the budget so that training
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
import json
import shutil
import time
from pathlib import Path
from typing import Any

from maskconver.commands.common import add_overrides, positive_float, positive_int
from maskconver.errors import EXIT_OK, fail
from maskconver.locking import file_lock

PRESET = "tiny"
DEFAULT_OUTPUT = Path("runs/quickstart")
HELDOUT_IMAGES = 6
HELDOUT_STREAM = 2  # synthetic sample stream disjoint from train (0) and val (1)
PICTURE_SCALE = 3  # pictures are drawn at 3x the scene size
VAL_SPLIT = "val2017"
PQ_AGREEMENT_TOLERANCE = 1e-9
MARKER = ".maskconver-quickstart"  # marks a folder the quickstart may replace on the next run


def register(subparsers: Any) -> None:
    """Add the ``quickstart`` subcommand."""
    p = subparsers.add_parser(
        "quickstart",
        help="train + evaluate + predict on synthetic data in one command (about 12-14 minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="run folder")
    p.add_argument(
        "--config",
        default=PRESET,
        help=f"preset name or YAML file to train (default: {PRESET}; kmax_tiny trains "
        "kMaX-DeepLab, dr1mask_small DR1Mask)",
    )
    p.add_argument(
        "--minutes",
        type=positive_float,
        default=None,
        help="size the step budget to train for about this many minutes here (default: the "
        "preset's fixed train.max_steps, which reproduces the reported PQ)",
    )
    add_overrides(p, "train.lr=0.003")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --output-dir that holds another maskconver run (an earlier "
        "quickstart run is always replaced)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: time 1 thread against torch's default thread count "
        "and take the faster)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    """Run the whole quickstart; returns 0 on success, 2 on bad arguments.

    The torch thread count chosen for the run is restored afterwards (the command may run
    inside another Python process, e.g. a test). A second quickstart into the same folder
    while one runs fails at once (``locking.file_lock``, beside the folder).
    """
    wall_start = time.perf_counter()
    if args.threads is not None and args.threads < 1:
        return fail("quickstart", f"--threads must be >= 1, got {args.threads}")
    if args.minutes is not None and args.minutes <= 0:
        return fail("quickstart", f"--minutes must be > 0, got {args.minutes}")
    # one quickstart per folder at a time: the lock lies beside it (a rerun replaces the folder)
    with file_lock(args.output_dir, "quickstart"):
        return run_locked(args, wall_start)


def run_locked(args: argparse.Namespace, wall_start: float) -> int:
    """``run`` once it holds the lock of ``--output-dir``."""
    import torch

    from maskconver.config import ConfigError, load_config
    from maskconver.engine.budget import plan_run

    out: Path = args.output_dir
    problem = _check_output(out, args.overwrite)
    if problem:
        return fail("quickstart", problem)
    threads_before = torch.get_num_threads()
    try:
        cfg = plan_run(
            load_config(args.config, list(args.overrides)),
            args.minutes,
            explicit={text.split("=", 1)[0].strip() for text in args.overrides},
            threads=args.threads,
        )
        if cfg.data.root is not None:
            return fail(
                "quickstart",
                "the quickstart trains on synthetic data; use `maskconver train "
                "--data-root` for a dataset",
            )
        if out.exists() and any(out.iterdir()):
            print(f"quickstart: replacing the earlier run in {out}")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(
            "written by `maskconver quickstart`; the next run replaces this folder\n"
        )
        results = run_quickstart(cfg, out, progress=not args.no_progress, preset=args.config)
    except ConfigError as e:
        return fail("quickstart", str(e))
    finally:
        torch.set_num_threads(threads_before)
    results["wall_time_s"] = time.perf_counter() - wall_start
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    print_summary(results, out)
    return EXIT_OK


def run_quickstart(
    cfg: Any, out: Path, *, progress: bool = True, preset: str = PRESET
) -> dict[str, Any]:
    """Train, evaluate (saving predictions), predict held-out scenes, plot; returns metrics.

    ``preset`` is only named in the messages (``cfg`` is already loaded).
    """
    import torch

    from maskconver.data.coco_panoptic import CocoPanopticDataset, standard_paths
    from maskconver.data.synthetic import write_synthetic_dataset
    from maskconver.engine.checkpoint import load_model
    from maskconver.engine.evaluate import evaluate_model
    from maskconver.engine.train import train
    from maskconver.evaluation.pq_files import evaluate_files

    print(
        f"quickstart: training the '{preset}' preset for {cfg.train.max_steps} steps "
        f"(batch {cfg.train.batch_size}, {cfg.augment.input_size[0]}px) into {out}"
    )
    summary = train(cfg, out, progress=progress)
    best = out / "checkpoints" / "best"
    checkpoint = best if best.is_dir() else Path(str(summary["checkpoint"]))

    print("quickstart: writing the validation split in COCO panoptic format")
    data_root = out / "data"
    d = cfg.data
    write_synthetic_dataset(
        data_root,
        train=0,
        val=d.synthetic_val,
        seed=d.synthetic_seed,
        min_size=d.synthetic_min_size,
        max_size=d.synthetic_max_size,
        image_format="png",
        progress=progress,
    )
    model, run_cfg, categories, num_classes = load_model(checkpoint, use_ema=True)
    dataset = CocoPanopticDataset(data_root, VAL_SPLIT, label_space=run_cfg.model.label_space)
    pred_dir = out / "val_predictions"
    metrics = evaluate_model(
        model,
        dataset,
        cfg=run_cfg,
        categories=categories,
        num_classes=num_classes,
        batch_size=run_cfg.eval.batch_size,
        progress=progress,
        save_dir=pred_dir,
    )
    _, gt_json, gt_dir = standard_paths(data_root, VAL_SPLIT)
    files_metrics = evaluate_files(
        gt_json, gt_dir, pred_dir / "predictions.json", pred_dir / "panoptic"
    )
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


def draw_heldout_pictures(
    model: Any, cfg: Any, categories: Any, num_classes: int, out: Path
) -> None:
    """Predict held-out synthetic scenes; save inputs, overlays and GT-vs-prediction pictures."""
    from maskconver.build import build_eval_transforms, build_postprocessor
    from maskconver.data.image_io import save_image
    from maskconver.data.synthetic import SyntheticPanoptic
    from maskconver.predictor import Predictor
    from maskconver.visualize import save_prediction_pictures

    d = cfg.data
    heldout = SyntheticPanoptic(
        HELDOUT_IMAGES,
        seed=d.synthetic_seed,
        min_size=d.synthetic_min_size,
        max_size=d.synthetic_max_size,
        stream=HELDOUT_STREAM,
        label_space=cfg.model.label_space,
    )
    predictor = Predictor(
        model,
        cfg=cfg,
        categories=categories,
        postprocessor=build_postprocessor(cfg, categories, num_classes),
        transform=build_eval_transforms(cfg),
    )
    samples = [heldout[i] for i in range(len(heldout))]
    predictions = predictor.predict_batch([s.image for s in samples])
    for index, (sample, pred) in enumerate(zip(samples, predictions)):
        name = f"heldout_{index:02d}"
        save_image(out / "heldout" / f"{name}.png", sample.image)
        # the scenes are ~100-160 px: enlarged so labels stay readable
        save_prediction_pictures(
            out / "pictures", name, sample, pred, categories, scale=PICTURE_SCALE
        )


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
        f"  training: {t['steps']} steps in {t['seconds'] / 60:.1f} min "
        f"({t['images_per_s']:.1f} images/s, {t['torch_threads']} torch thread(s), "
        f"{t['loader_workers']} loader worker(s))",
        f"  evaluation: {e['images']} images in {e['seconds']:.1f} s "
        f"({e['images_per_s']:.1f} images/s); saved-file PQ "
        f"{'agrees' if check['agrees'] else 'DIFFERS'} ({_percent(check['pq']).strip()})",
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
