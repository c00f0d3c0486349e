"""The ReMaX ablation: equal steps, equal seeds, every arm of ``docs/remax.md``.

Arms (on top of ``--base``, the pinned ``benchmarks/configs/remax_base.yaml`` by default):

* main grid: A0 baseline; A1 + auxiliary semantic head (weight 0.5), no relaxation;
  A2 = A1 + ReMask; A3 = A1 + softmax mask-ID CE; A4 = A3 + ReMask; A5 = A0 + ReClass (0.1);
  A6 = A2 + ReClass;
* ``eta``: A6 with ReClass eta 0.05 and 0.2 (eta 0 is A2, 0.1 is A6);
* ``lr``: A0 and A6 at the base learning rate x1, x3, x10, with and without gradient clipping.

Every run trains ``--steps`` optimizer steps and evaluates PQ on the validation split at 25, 50,
75 and 100 % of them (EMA weights). A finished run leaves ``summary.json`` and is skipped when
the command runs again, so a grid can be interrupted and resumed or extended. The script prints
(and writes to ``<out>/results.md`` and ``results.json``) a table of PQ / PQ_th / PQ_st as mean
and spread over seeds, the first evaluated step at which each arm reaches A0's final mean PQ,
and diverged runs, and draws ``<out>/remax_curves.png`` (PQ against step, the LR sweep, and
ReMask's S statistics).

Example (the command behind ``docs/remax.md``)::

    python benchmarks/ablate_remax.py --grid all --out runs/ablate_remax

On your own data: ``--data-root DIR`` (COCO panoptic layout; ``--set`` to adjust the base).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_common import ablation_parser, load_finished, plot_pq, run_grids, summarize  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_BASE = HERE / "configs" / "remax_base.yaml"
SEMANTIC = ["model.maskconver.loss.semantic_weight=0.5"]
REMASK = ["model.maskconver.loss.remask=literal"]
RECLASS = ["model.maskconver.loss.reclass_eta=0.1"]
MAIN: dict[str, list[str]] = {
    "A0": [],
    "A1": SEMANTIC,
    "A2": SEMANTIC + REMASK,
    "A3": SEMANTIC + ["model.maskconver.loss.maskid=true"],
    "A4": SEMANTIC + ["model.maskconver.loss.remask=literal+maskid"],
    "A5": RECLASS,
    "A6": SEMANTIC + REMASK + RECLASS,
}
ETA: dict[str, list[str]] = {
    f"A6 eta={eta}": SEMANTIC + REMASK + [f"model.maskconver.loss.reclass_eta={eta}"]
    for eta in (0.05, 0.2)
}
LR_MULTS = (1, 3, 10)


def lr_arms(base_lr: float, base_clip: float) -> dict[str, list[str]]:
    """A0 and A6 at LR x1/x3/x10, clipped (the base's norm) and unclipped."""
    arms: dict[str, list[str]] = {}
    for name in ("A0", "A6"):
        for mult in LR_MULTS:
            for clip in (base_clip, 0.0):
                if mult == 1 and clip == base_clip:
                    continue  # that is the main grid's arm
                label = f"{name} lr x{mult} {'clip' if clip > 0 else 'no clip'}"
                arms[label] = MAIN[name] + [f"train.lr={base_lr * mult}", f"train.grad_clip={clip}"]
    return arms


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """PQ against step (main grid, LR sweep) and ReMask's S statistics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), dpi=110)
    main_names = [n for n in results if n in MAIN or n.startswith("A6 eta")]
    plot_pq(axes[0], results, main_names, "main grid + eta")
    axes[1].set_prop_cycle(color=plt.get_cmap("tab20").colors)  # 12 curves: no repeated colour
    plot_pq(axes[1], results, [n for n in results if " lr " in n] + ["A0", "A6"], "LR x clipping")
    ax = axes[2]
    for name in ("A2", "A6"):
        for r in results.get(name, [])[:1]:
            for key, style in (("stat_remask_s_own", "-"), ("stat_remask_s_other", "--")):
                rows = [t for t in r["train"] if key in t]
                label = f"{name} {key.removeprefix('stat_remask_')}"
                ax.plot([t["step"] for t in rows], [t[key] for t in rows], style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("mean S (ReMask factor)")
    ax.set_title("ReMask: S on the slot's own pixels vs elsewhere")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen grid and report."""
    p = ablation_parser(__doc__, out="runs/ablate_remax", base=str(DEFAULT_BASE), steps=1000)
    p.add_argument("--grid", choices=("main", "eta", "lr", "all"), default="main")
    p.add_argument(
        "--extra-seeds", type=int, nargs="+", default=[0], help="seeds of the eta and lr arms"
    )
    args = p.parse_args(argv)

    import torch

    from maskconver.config import load_config

    torch.set_num_threads(args.threads)
    base = load_config(args.base, args.overrides)
    grids: list[tuple[dict[str, list[str]], list[int]]] = []
    if args.grid in ("main", "all"):
        grids.append((MAIN, args.seeds))
    if args.grid in ("eta", "all"):
        grids.append((ETA, args.extra_seeds))
    if args.grid in ("lr", "all"):
        grids.append((lr_arms(base.train.lr, base.train.grad_clip), args.extra_seeds))
    results = run_grids(
        grids,
        base=args.base,
        extra=args.overrides,
        steps=args.steps,
        out=args.out,
        data_root=args.data_root,
        only=args.arms,
        finished_only=args.finished_only,
    )
    if "A0" not in results:  # eta / lr grids alone: the baseline of an earlier main grid
        results["A0"] = load_finished(args.out, "A0")
    markdown, table = summarize(results)
    print(markdown)
    (args.out / "results.md").write_text(markdown + "\n")
    (args.out / "results.json").write_text(json.dumps({"table": table, "runs": results}, indent=1))
    plot(results, args.out / "remax_curves.png")
    print(f"wrote {args.out / 'results.md'}, results.json and remax_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
