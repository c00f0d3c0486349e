"""The quickstart recipe study: which change moves the ``tiny`` quickstart at its fixed budget.

Every arm trains the ``tiny`` preset as it was before this study (``--base``, pinned in
``benchmarks/configs/tiny_stride8.yaml``) for its own ``train.max_steps`` (the quickstart's
budget, 3200 steps) with the arm's overrides, evaluating PQ on the synthetic
validation split at 25 / 50 / 75 / 100 % of the steps, exactly as ``maskconver quickstart`` trains
(precise BN is off at this length; checkpoints do not change the training stream). Wall time per
run is recorded too: an arm that costs more time per step is not "the same budget".

Arms (``--arms`` picks some; finished runs leave ``summary.json`` and are skipped):

* ``Q0``: the base as it is (the quickstart's recipe before this study);
* ``lr x3`` / ``lr x10``: learning rate x3 / x10 without gradient clipping (the ReMaX grid's
  largest effect at 1000 steps);
* ``mask_level 2``: mask features at stride 4 (``model.maskconver.mask_level=2``), centers stay
  at stride 8 (small shapes are under one stride-8 cell);
* ``level 2``: centers and mask features at stride 4 (about 1.8x the time per step);
* ``mask_level 2 + lr x3``: the two cheap changes together;
* ``mask_level 2 + zoom``: scenes seen 1.25x larger on average, in training (scale jitter
  0.75-1.75 instead of 0.5-1.5, same 128 px crops, so the same cost per step) and in evaluation
  (``eval.input_size`` 160 instead of 128);
* ``mask_level 2 + batch 4``: the same images in twice the optimizer steps of half the batch;
* ``mask_level 2 + copy-paste``: panoptic copy-paste (probability 0.5, the pasted scene jittered
  over the same 0.5-1.5 range): more instances per training image at little cost.

Example (the command behind ``docs/quickstart-recipe.md``)::

    python benchmarks/quickstart_recipe.py --out runs/quickstart_recipe --seeds 0 1 2 \\
        --arms Q0 "mask_level 2"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_common import plot_pq, run_grids, summarize  # noqa: E402

DEFAULT_BASE = Path(__file__).resolve().parent / "configs" / "tiny_stride8.yaml"


def arms(base_lr: float, base_steps: int) -> dict[str, list[str]]:
    """The study's arms on top of the base preset."""
    no_clip = "train.grad_clip=0"
    return {
        "Q0": [],
        "lr x3": [f"train.lr={base_lr * 3:g}", no_clip],
        "lr x10": [f"train.lr={base_lr * 10:g}", no_clip],
        "mask_level 2": ["model.maskconver.mask_level=2"],
        "level 2": ["model.maskconver.level=2"],
        "mask_level 2 + lr x3": [
            "model.maskconver.mask_level=2",
            f"train.lr={base_lr * 3:g}",
            no_clip,
        ],
        "mask_level 2 + zoom": [
            "model.maskconver.mask_level=2",
            "augment.scale_min=0.75",
            "augment.scale_max=1.75",
            "eval.input_size=160",
        ],
        "mask_level 2 + batch 4": [
            "model.maskconver.mask_level=2",
            "train.batch_size=4",
            f"train.max_steps={2 * base_steps}",
        ],
        "mask_level 2 + copy-paste": [
            "model.maskconver.mask_level=2",
            "augment.copy_paste=true",
            "augment.copy_paste_scale_min=0.5",
            "augment.copy_paste_scale_max=1.5",
        ],
    }


def seconds_column(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown rows: arm, final PQ_th per seed, mean training seconds."""
    lines = ["| arm | PQ per seed | PQ_th per seed | mean train seconds |", "|---|---|---|---|"]
    for name, runs in results.items():
        done = [r for r in runs if r["curve"]]
        pq = ", ".join(f"{100 * r['curve'][-1]['pq']:.1f}" for r in done)
        th = ", ".join(f"{100 * r['curve'][-1]['pq_th']:.1f}" for r in done)
        secs = statistics.fmean(r["seconds"] for r in done) if done else float("nan")
        lines.append(f"| {name} | {pq} | {th} | {secs:.0f} |")
    return "\n".join(lines)


def _batch(run: dict[str, Any], base_batch: int) -> int:
    sizes = [o.split("=", 1)[1] for o in run["overrides"] if o.startswith("train.batch_size=")]
    return int(sizes[-1]) if sizes else base_batch


def plot(results: dict[str, list[dict[str, Any]]], path: Path, base_batch: int) -> None:
    """PQ and PQ_th against training images seen per arm (mean, min-max band over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    names = list(results)
    for ax, key, title in ((axes[0], "pq", "PQ (all classes)"), (axes[1], "pq_th", "PQ_th")):
        by_images = {
            n: [
                {
                    **r,
                    "curve": [
                        {"step": p["step"] * _batch(r, base_batch) / 1000, "pq": p[key]}
                        for p in r["curve"]
                    ],
                }
                for r in runs
            ]
            for n, runs in results.items()
        }
        plot_pq(ax, by_images, names, title)
        ax.set_xlabel("training images seen (thousands)")
    axes[1].set_ylabel("PQ_th (%) on the validation split")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def eval_sizes(checkpoint: Path, data_root: Path, sizes: list[int], threads: int) -> int:
    """PQ of one checkpoint (EMA weights) at several evaluation input sizes."""
    import torch

    from maskconver.config import merge_overrides
    from maskconver.data.coco_panoptic import CocoPanopticDataset
    from maskconver.engine.checkpoint import load_model
    from maskconver.engine.evaluate import evaluate_model

    torch.set_num_threads(threads)
    model, cfg, categories, num_classes = load_model(checkpoint, use_ema=True)
    dataset = CocoPanopticDataset(data_root, "val2017", label_space=cfg.model.label_space)
    print("| eval.input_size | PQ | PQ_th | PQ_st |\n|---|---|---|---|")
    for size in sizes:
        pq = evaluate_model(
            model,
            dataset,
            cfg=merge_overrides(cfg, [f"eval.input_size={size}"]),
            categories=categories,
            num_classes=num_classes,
            batch_size=1,
            progress=False,
            metrics=["pq"],
        )
        row = [100 * pq[part]["pq"] for part in ("all", "things", "stuff")]
        print(f"| {size} | " + " | ".join(f"{v:.1f}" for v in row) + " |", flush=True)
    return 0


def time_arms(args: argparse.Namespace) -> int:
    """Seconds per training step (batch preparation + optimizer step) of each chosen arm."""
    from maskconver.config import load_config
    from maskconver.engine.budget import calibrate

    base = load_config(args.base)
    lines = ["| arm | data s/step | compute s/step, 1 thread | 2 threads |", "|---|---|---|---|"]
    for name, arm in arms(base.train.lr, base.train.max_steps).items():
        if args.arms is not None and name not in args.arms:
            continue
        cal = calibrate(load_config(args.base, arm), [1, 2], steps=args.time_steps)
        lines.append(f"| {name} | {cal.data:.3f} | {cal.compute[1]:.3f} | {cal.compute[2]:.3f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the chosen arms and report."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/quickstart_recipe"))
    p.add_argument("--base", default=str(DEFAULT_BASE), help="preset name or YAML of the base")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads (fixed: reproducible)")
    p.add_argument("--arms", nargs="+", default=None, help="run only these arms")
    p.add_argument(
        "--finished-only", action="store_true", help="train nothing: report the finished runs"
    )
    p.add_argument(
        "--time-steps",
        type=int,
        default=0,
        help="train nothing: time this many optimizer steps of each chosen arm at 1 and 2 torch "
        "threads (run it on an idle machine) and print seconds per step",
    )
    p.add_argument(
        "--eval-sizes",
        type=int,
        nargs="+",
        default=None,
        help="train nothing: evaluate --checkpoint on --data-root at these eval.input_size values",
    )
    p.add_argument("--checkpoint", type=Path, help="checkpoint of --eval-sizes")
    p.add_argument("--data-root", type=Path, help="COCO panoptic root of --eval-sizes (val2017)")
    args = p.parse_args(argv)
    if args.time_steps:
        return time_arms(args)
    if args.eval_sizes:
        if args.checkpoint is None or args.data_root is None:
            p.error("--eval-sizes needs --checkpoint and --data-root")
        return eval_sizes(args.checkpoint, args.data_root, args.eval_sizes, args.threads)

    import torch

    from maskconver.config import load_config

    torch.set_num_threads(args.threads)
    base = load_config(args.base)
    results = run_grids(
        [(arms(base.train.lr, base.train.max_steps), args.seeds)],
        base=args.base,
        extra=[],
        steps=base.train.max_steps,
        out=args.out,
        data_root=None,
        only=args.arms,
        finished_only=args.finished_only,
    )
    markdown, table = summarize(results, baseline="Q0")
    markdown += "\n\n" + seconds_column(results)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(markdown + "\n")
    (args.out / "results.json").write_text(json.dumps({"table": table, "runs": results}, indent=1))
    plot(results, args.out / "quickstart_recipe.png", base.train.batch_size)
    print(f"wrote {args.out / 'results.md'}, results.json and quickstart_recipe.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
