"""ReMaX on kMaX-DeepLab: the ReMaX paper's claims as hypotheses, equal steps and seeds.

Arms (on top of ``--base``, the ``kmax_tiny`` preset by default, with the sigmoid mask-ID loss;
every arm sets its LR from ``--base-lr``, 5e-4 = deeplab2's kMaX LR, and its ReMaX switches):

* ``base clip``: the sigmoid baseline at the base LR with gradient clipping (``--clip``);
* ``base``: the baseline at the base LR without clipping;
* ``base x10``: the baseline at 10x the LR without clipping (ReMaX's 6e-3 is 12x deeplab2's);
* ``remax x10``: ReMaX (ReMask on the first 2 of the 3 decoder blocks, ReClass eta 0.1) at 10x
  the LR without clipping (the paper's recipe);
* ``remax``: ReMaX at the base LR without clipping.

Every run trains ``--steps`` optimizer steps and evaluates PQ at 25 / 50 / 75 / 100 % of them
(``benchmarks/ablation_common.py``; a finished run is skipped when the command runs again). The
report (``<out>/results.md``, ``results.json``, ``kmax_remax_curves.png``) has PQ mean and
spread per arm, the first evaluated step at which each arm reaches the ``base clip`` arm's final
PQ, the diverged runs, and the loss statistics ReMask is meant to damp (ReMaX Fig. 1 / 6): the
false-positive and false-negative parts of the sigmoid mask cross-entropy, on the first decoder
block's prediction as its loss sees it (relaxed by ReMask) and on the final prediction; their
ratio, and the largest FP value of a run relative to its median (a spike measure).

Example (the command behind ``docs/kmax-remax.md``; two processes share the 2 cores)::

    python benchmarks/ablate_kmax_remax.py --out runs/kmax_remax --arms "base clip" base remax
    python benchmarks/ablate_kmax_remax.py --out runs/kmax_remax --arms "base x10" "remax x10"
    python benchmarks/ablate_kmax_remax.py --out runs/kmax_remax --finished-only
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_common import ablation_parser, plot_pq, run_grids, summarize  # noqa: E402

BASELINE = "base clip"
REMAX = ["model.kmax.loss.remask_stages=2", "model.kmax.loss.reclass_eta=0.1"]
NO_REMAX = ["model.kmax.loss.remask_stages=0", "model.kmax.loss.reclass_eta=0"]
BASE_LR = 5e-4  # deeplab2's kMaX-DeepLab LR
LR_MULT = 10
FP_KEYS = ("stat_fp_ce_first", "stat_fp_ce")
FN_KEYS = ("stat_fn_ce_first", "stat_fn_ce")


def arms(base_lr: float, clip: float) -> dict[str, list[str]]:
    """The five arms of the module docstring."""
    low, high = f"train.lr={base_lr}", f"train.lr={base_lr * LR_MULT}"
    return {
        BASELINE: [f"train.grad_clip={clip}", low, *NO_REMAX],
        "base": ["train.grad_clip=0", low, *NO_REMAX],
        "base x10": ["train.grad_clip=0", high, *NO_REMAX],
        "remax x10": ["train.grad_clip=0", high, *REMAX],
        "remax": ["train.grad_clip=0", low, *REMAX],
    }


def loss_statistics(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table: mean FP / FN sigmoid CE (first block, final), FP/FN ratio, FP spikes.

    The spike measure is the largest logged FP value of the run's second half over that half's
    median (the first half is the loss's descent, not spikes); the last column is the final mask
    logits' standard deviation at the last logged step (how confident the sigmoid masks can be).
    """
    lines = [
        "| arm | FP CE first block | FN CE first block | FP / FN first | FP / FN final | "
        "max / median FP first, 2nd half | final mask-logit std |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        cells: dict[str, list[float]] = {
            "fp": [],
            "fn": [],
            "ratio": [],
            "final": [],
            "spike": [],
            "std": [],
        }
        for run in runs:
            rows = [r for r in run["train"] if all(k in r for k in FP_KEYS + FN_KEYS)]
            if not rows:
                continue
            fp = [r[FP_KEYS[0]] for r in rows]
            fn = [r[FN_KEYS[0]] for r in rows]
            cells["fp"].append(statistics.fmean(fp))
            cells["fn"].append(statistics.fmean(fn))
            cells["ratio"].append(statistics.fmean(fp) / max(statistics.fmean(fn), 1e-12))
            final_fp = statistics.fmean(r[FP_KEYS[1]] for r in rows)
            final_fn = statistics.fmean(r[FN_KEYS[1]] for r in rows)
            cells["final"].append(final_fp / max(final_fn, 1e-12))
            late = fp[len(fp) // 2 :]
            cells["spike"].append(max(late) / max(statistics.median(late), 1e-12))
            cells["std"].append(rows[-1].get("stat_mask_logit_std", float("nan")))
        if not cells["fp"]:
            continue

        def show(values: list[float], digits: int = 3) -> str:
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"

        lines.append(
            f"| {name} | {show(cells['fp'])} | {show(cells['fn'])} | {show(cells['ratio'], 1)} | "
            f"{show(cells['final'], 1)} | {show(cells['spike'], 2)} | {show(cells['std'], 2)} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """PQ against step per arm, and the first block's FP / FN cross-entropy against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    plot_pq(axes[0], results, list(results), "kMaX tiny: PQ (mean, min-max over seeds)")
    ax = axes[1]
    for name, runs in results.items():
        for run in runs[:1]:
            rows = [r for r in run["train"] if FP_KEYS[0] in r]
            steps = [r["step"] for r in rows]
            line = ax.plot(steps, [r[FP_KEYS[0]] for r in rows], label=f"{name} FP")[0]
            ax.plot(steps, [r[FN_KEYS[0]] for r in rows], "--", color=line.get_color(), label="FN")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("sigmoid mask CE, first block (seed 0)")
    ax.set_title("false-positive (solid) vs false-negative (dashed) loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="xx-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the arms and report."""
    p = ablation_parser(__doc__, out="runs/kmax_remax", base="kmax_tiny", steps=800)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip of 'base clip'")
    p.add_argument("--base-lr", type=float, default=BASE_LR, help="the arms' base learning rate")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    results = run_grids(
        [(arms(args.base_lr, args.clip), args.seeds)],
        base=args.base,
        extra=args.overrides,
        steps=args.steps,
        out=args.out,
        data_root=args.data_root,
        only=args.arms,
        finished_only=args.finished_only,
    )
    markdown, table = summarize(results, baseline=BASELINE)
    statistics_table = loss_statistics(results)
    print(markdown)
    print(statistics_table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(markdown + "\n\n" + statistics_table + "\n")
    (args.out / "results.json").write_text(json.dumps({"table": table, "runs": results}, indent=1))
    plot(results, args.out / "kmax_remax_curves.png")
    print(f"wrote {args.out / 'results.md'}, results.json and kmax_remax_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
