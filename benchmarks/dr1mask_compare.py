"""DR1Mask vs MaskConver on the synthetic data (``docs/dr1mask.md``): equal steps and seeds.

Arms: ``MaskConver tiny`` (the ``tiny`` preset as it was then, stride-8 masks, pinned in
``benchmarks/configs/tiny_stride8.yaml``) and ``DR1Mask small`` (``dr1mask_small``: the
same backbone, data, augmentation and optimiser; 0.110 vs 0.091 GMACs at 128 x 128). Each
(arm, seed) trains ``--steps`` steps with PQ at 25 / 50 / 75 / 100 % (``ablation_common``).
Then every DR1Mask run's final EMA weights are evaluated again with the two panoptic merges
(``model.dr1mask.merge.mode``): the unified layer's argmax (stuff from the static columns, things
from one dynamic column per detection) and the paste of the crop-based vector-embedding
masks with stuff on the free pixels, at a few detection thresholds. Costs (parameters, MACs,
median latency of forward + post-processing, 1 thread, 128 x 128) come from
``maskconver benchmark``'s functions.

Example (the command behind ``docs/dr1mask.md``)::

    python benchmarks/dr1mask_compare.py --steps 1200 --seeds 0 1 --out /tmp/dr1mask_compare
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_common import arm_dir, run_arm, summarize  # noqa: E402

TINY_STRIDE8 = str(Path(__file__).resolve().parent / "configs" / "tiny_stride8.yaml")
ARMS: dict[str, tuple[str, list[str]]] = {
    "MaskConver tiny": (TINY_STRIDE8, []),
    "DR1Mask small": ("dr1mask_small", []),
}
MERGES = {
    "argmax": ["model.dr1mask.merge.mode=argmax"],
    "paste": ["model.dr1mask.merge.mode=paste"],
}
THRESHOLDS = [0.2, 0.3, 0.4]
LATENCY_SIZE = 128


def cost(preset: str, extra: list[str]) -> dict[str, Any]:
    """Parameters, MACs and median latency (forward + post-processing, 1 thread)."""
    from maskconver.benchmarking.measure import benchmark
    from maskconver.data.synthetic import synthetic_categories

    report = benchmark(
        preset,
        extra,
        size=(LATENCY_SIZE, LATENCY_SIZE),
        runs=30,
        warmup=5,
        num_classes=synthetic_categories().num_classes,
    )
    return {k: report[k] for k in ("params", "macs", "latency_ms")}


def merge_comparison(run_dir: Path) -> dict[str, dict[str, float]]:
    """PQ / PQ_th / PQ_st of a DR1Mask run's final checkpoint per merge and threshold."""
    from maskconver.config import merge_overrides
    from maskconver.engine.checkpoint import load_model
    from maskconver.engine.data import build_dataset
    from maskconver.engine.evaluate import evaluate_model

    checkpoint = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    model, cfg, categories, num_classes = load_model(checkpoint)
    val = build_dataset(cfg, "val")
    rows = {}
    for merge, overrides in MERGES.items():
        for threshold in THRESHOLDS:
            c = merge_overrides(
                cfg,
                [
                    *overrides,
                    f"model.dr1mask.merge.object_threshold={threshold}",
                    "eval.metrics=[pq]",
                ],
            )
            m = evaluate_model(
                model, val, cfg=c, categories=categories, num_classes=num_classes, progress=False
            )
            rows[f"{merge} @{threshold}"] = {
                "pq": m["all"]["pq"],
                "pq_th": m["things"]["pq"],
                "pq_st": m["stuff"]["pq"],
            }
    return rows


def main(argv: list[str] | None = None) -> int:
    """Train every (arm, seed), compare the merges, measure the costs, report."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("/tmp/dr1mask_compare"))
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    p.add_argument("--arms", nargs="+", default=list(ARMS), help="subset of the arms")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.arms:
        preset, extra = ARMS[name]
        for seed in args.seeds:
            run_dir = args.out / arm_dir(name) / f"seed{seed}"
            summary = run_arm(preset, [], extra, seed, args.steps, run_dir, args.data_root)
            results.setdefault(name, []).append(summary)
            last = summary["curve"][-1] if summary["curve"] else {}
            print(f"{name} seed {seed}: {last} ({summary['seconds']:.0f} s)", flush=True)
    markdown, table = summarize(results, baseline="MaskConver tiny")
    merges: dict[str, list[dict[str, dict[str, float]]]] = {}
    for seed in args.seeds:
        run_dir = args.out / arm_dir("DR1Mask small") / f"seed{seed}"
        if "DR1Mask small" in args.arms and (run_dir / "summary.json").is_file():
            merges.setdefault("DR1Mask small", []).append(merge_comparison(run_dir))
    lines = ["| merge @ object_threshold | PQ | PQ_th | PQ_st |", "|---|---|---|---|"]
    for rows in merges.values():
        for key in rows[0]:
            cells = []
            for metric in ("pq", "pq_th", "pq_st"):
                values = [100 * r[key][metric] for r in rows]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.fmean(values):.1f} ± {spread:.1f}")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    costs = {name: cost(*ARMS[name]) for name in args.arms}
    cost_lines = [
        "| arm | params (M) | MACs (G) @128 | latency (ms) @128, 1 thread |",
        "|---|---|---|---|",
    ]
    for name, c in costs.items():
        cost_lines.append(
            f"| {name} | {c['params'] / 1e6:.3f} | {c['macs'] / 1e9:.3f} | {c['latency_ms']:.1f} |"
        )
    report = "\n\n".join([markdown, "\n".join(lines), "\n".join(cost_lines)])
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"table": table, "merges": merges, "costs": costs, "runs": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
