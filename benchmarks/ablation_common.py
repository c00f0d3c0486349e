"""Shared machinery of the ablation scripts: one (arm, seed) run, the summary table.

A run trains ``steps`` optimizer steps of the base config plus the arm's overrides, evaluating
PQ at 25 / 50 / 75 / 100 % of them, and leaves ``summary.json`` (the eval curve, the logged
losses and ``stat_*`` statistics, the wall time); a finished run is never trained again, so a
grid can be interrupted and resumed or extended.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

EVALS = 4  # PQ at 25 / 50 / 75 / 100 % of the steps


def run_arm(
    base: str,
    arm: list[str],
    extra: list[str],
    seed: int,
    steps: int,
    out: Path,
    data_root: str | None,
) -> dict[str, Any]:
    """Train one (arm, seed) unless ``out/summary.json`` exists; returns its summary.

    ``steps`` is the run's length unless the arm sets ``train.max_steps`` itself (an arm that
    spends the same budget differently, e.g. half the batch for twice the steps).
    """
    done = out / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    from maskconver.config import load_config
    from maskconver.engine.logging import read_metrics
    from maskconver.engine.step import NonFiniteLossError
    from maskconver.engine.train import train

    own = [a.split("=", 1)[1] for a in arm if a.replace(" ", "").startswith("train.max_steps=")]
    steps = int(own[-1]) if own else steps
    every = max(1, steps // EVALS)
    overrides = [
        *extra,
        *arm,
        f"train.seed={seed}",
        f"train.max_steps={steps}",
        f"train.eval_every={every}",
        f"train.ckpt_every={steps}",
        "train.keep_last=1",
    ]
    cfg = load_config(base, overrides)
    if out.exists():  # an interrupted run: start it again from scratch
        import shutil

        shutil.rmtree(out)
    start = time.perf_counter()
    diverged = None
    try:
        train(cfg, out, data_root=data_root, progress=False)
    except NonFiniteLossError as e:
        diverged = str(e)
    records = read_metrics(out)
    curve = [
        {
            "step": r["step"],
            "pq": r["all/pq"],
            "pq_th": r["things/pq"],
            "pq_st": r["stuff/pq"],
        }
        for r in records
        if r.get("kind") == "eval"
    ]
    stats = [
        {k: v for k, v in r.items() if k == "step" or k.startswith(("loss", "stat_"))}
        for r in records
        if r.get("kind") == "train"
    ]
    summary = {
        "overrides": overrides,
        "seed": seed,
        "steps": steps,
        "diverged": diverged,
        "curve": curve,
        "train": stats,
        "seconds": time.perf_counter() - start,
    }
    done.write_text(json.dumps(summary))
    return summary


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def summarize(
    results: dict[str, list[dict[str, Any]]], baseline: str = "A0"
) -> tuple[str, dict[str, Any]]:
    """Markdown table and its numbers, one row per arm.

    "first step at <baseline>'s final PQ" is the first evaluated step at which the arm's mean
    PQ over seeds reaches the baseline arm's final mean PQ.
    """
    table: dict[str, Any] = {}
    base_runs = results.get(baseline, [])
    finals = [r["curve"][-1]["pq"] for r in base_runs if r["curve"] and not r["diverged"]]
    target = statistics.fmean(finals) if finals else math.nan
    lines = [
        f"| arm | seeds | PQ | PQ_th | PQ_st | first step at {baseline}'s final PQ | diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        finished = [r for r in runs if r["curve"] and not r["diverged"]]
        final = {k: [r["curve"][-1][k] for r in finished] for k in ("pq", "pq_th", "pq_st")}
        steps = sorted({p["step"] for r in finished for p in r["curve"]})
        mean_curve = [
            statistics.fmean(p["pq"] for r in finished for p in r["curve"] if p["step"] == s)
            for s in steps
        ]
        reach = next((s for s, v in zip(steps, mean_curve) if v >= target), None)
        diverged = sum(1 for r in runs if r["diverged"])
        table[name] = {
            "seeds": len(runs),
            "final": final,
            "mean_curve": list(zip(steps, mean_curve)),
            "first_step_at_a0_final": reach,
            "diverged": diverged,
        }
        lines.append(
            f"| {name} | {len(runs)} | {_spread(final['pq'])} | {_spread(final['pq_th'])} | "
            f"{_spread(final['pq_st'])} | {reach if reach is not None else 'not reached'} | "
            f"{diverged} |"
        )
    return "\n".join(lines), table


def run_grids(
    grids: list[tuple[dict[str, list[str]], list[int]]],
    *,
    base: str,
    extra: list[str],
    steps: int,
    out: Path,
    data_root: str | None,
    only: list[str] | None = None,
    finished_only: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Every (arm, seed) of every grid, in order; prints one line per finished run.

    ``only``: the arm names to run (others are left out); ``finished_only``: train nothing,
    report the runs that already have a ``summary.json`` (a partial grid's table).
    """
    if only is not None:
        known = {name for arms, _ in grids for name in arms}
        unknown = sorted(set(only) - known)
        if unknown:
            raise SystemExit(f"unknown arm(s) {unknown}; the grids hold {sorted(known)}")
        grids = [({n: a for n, a in arms.items() if n in only}, seeds) for arms, seeds in grids]
    results: dict[str, list[dict[str, Any]]] = {}
    total = sum(len(arms) * len(seeds) for arms, seeds in grids)
    done = 0
    for arms, seeds in grids:
        for name, arm in arms.items():
            for seed in seeds:
                run_dir = out / arm_dir(name) / f"seed{seed}"
                if finished_only and not (run_dir / "summary.json").is_file():
                    continue
                summary = run_arm(base, arm, extra, seed, steps, run_dir, data_root)
                results.setdefault(name, []).append(summary)
                done += 1
                last = summary["curve"][-1]["pq"] if summary["curve"] else float("nan")
                flag = " DIVERGED" if summary["diverged"] else ""
                print(
                    f"[{done}/{total}] {name} seed {seed}: PQ {100 * last:.1f} "
                    f"({summary['seconds']:.0f} s){flag}",
                    flush=True,
                )
    return results


def arm_dir(name: str) -> str:
    """Folder name of an arm (``"A6 lr x3 clip"`` -> ``"A6_lr_x3_clip"``)."""
    return name.replace(" ", "_").replace("=", "")


def load_finished(out: Path, name: str) -> list[dict[str, Any]]:
    """Summaries of an arm's finished runs under ``out`` (e.g. the baseline of another grid)."""
    folder = out / arm_dir(name)
    if not folder.is_dir():
        return []
    return [
        json.loads((d / "summary.json").read_text())
        for d in sorted(folder.iterdir())
        if (d / "summary.json").is_file()
    ]


def plot_pq(
    ax: Any, results: dict[str, list[dict[str, Any]]], names: list[str], title: str
) -> None:
    """Mean PQ against step per arm, with the min-max band over seeds."""
    for name in names:
        runs = [r for r in results.get(name, []) if r["curve"]]
        if not runs:
            continue
        steps = sorted({p["step"] for r in runs for p in r["curve"]})
        per_step = [[p["pq"] for r in runs for p in r["curve"] if p["step"] == s] for s in steps]
        mean = [100 * statistics.fmean(v) for v in per_step]
        line = ax.plot(steps, mean, marker="o", label=name)[0]
        if len(runs) > 1:
            low = [100 * min(v) for v in per_step]
            high = [100 * max(v) for v in per_step]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel("PQ (%) on the validation split")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")


def ablation_parser(doc: str | None, *, out: str, base: str, steps: int) -> argparse.ArgumentParser:
    """The options every ablation script shares (each adds its own grid choices).

    ``--out``, ``--base``, ``--data-root``, ``--steps``, ``--seeds``, ``--threads``, ``--arms``,
    ``--finished-only`` and ``--set`` (into ``overrides``).
    """
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--base", default=base, help="preset name or YAML of the base")
    p.add_argument("--data-root", default=None, help="COCO panoptic root (default: synthetic)")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="main-grid seeds")
    p.add_argument("--threads", type=int, default=1, help="torch threads (fixed: reproducible)")
    p.add_argument("--arms", nargs="+", default=None, help="run only these arms of the grids")
    p.add_argument(
        "--finished-only", action="store_true", help="train nothing: report the finished runs"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="overrides applied to every arm",
    )
    return p
