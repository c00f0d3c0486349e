"""DR1Mask's instance prediction modules (``docs/dr1mask.md`` section 7): vector / factored / full.

Equal steps, equal seeds, the synthetic data, one torch thread. Two tasks:

* ``instance``: ``dr1mask_small_instance`` (things only, no unified loss), COCOeval mask AP /
  AP50 / AP75 of the detections' crop masks (the paper's Table 4 as the hypothesis: factored ~
  full > vector in AP at about vector cost);
* ``panoptic``: ``dr1mask_small`` (unified argmax merge, the paper's), PQ / PQ_th / PQ_st, plus
  the same final weights with the paste merge (crop masks pasted; the module's masks are used
  directly); Table 7 as the hypothesis: factored loses PQ_st, keeps PQ_th.

Each arm's cost: parameters, the per-instance embedding width and the part of it that makes the
mask (the paper's "196 parameters per channel" accounting: full attention K x R x R), and the
median latency of forward + instance post-processing at 128 x 128 (1 thread).

Writes ``<out>/results.md``, ``results.json`` and ``<out>/dr1mask_instance.png`` (copy the
picture to ``docs/images/``). Finished runs (``summary.json``) are never trained again, so the
grid resumes; ``--finished-only`` reports a partial grid. The command behind the docs::

    OMP_NUM_THREADS=1 nohup python benchmarks/ablate_dr1mask_instance.py \\
        --out runs/ablate_dr1mask_instance > runs/ablate_dr1mask_instance.log 2>&1 &
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_common import ablation_parser, arm_dir  # noqa: E402

MODULES = ("vector", "factored", "full")
BASES = {"instance": "dr1mask_small_instance", "panoptic": "dr1mask_small"}
# the whole grid (2 tasks x 3 modules x 3 seeds, 480 steps) in about 37 min on one thread
SHORT = [
    "train.warmup_steps=30",
    "data.synthetic_val=50",
    "train.max_eval_images=50",
    "model.dr1mask.attention_size=7",  # the instance preset's R (14 of 56 -> 7 of 28 crops)
]
EVALS = 2  # at 50 % and 100 % of the steps
LATENCY_SIZE = 128
LATENCY_RUNS = 20
PERCENT = 100.0


def arms() -> dict[str, tuple[str, list[str]]]:
    """``"<task> <module>"`` -> (base preset, overrides)."""
    return {
        f"{task} {module}": (base, [f"model.dr1mask.instance_module={module}"])
        for task, base in BASES.items()
        for module in MODULES
    }


def curve_point(record: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one eval record (instance: mask AP; panoptic: PQ)."""
    if "all/pq" not in record:
        return {k: record[f"mask_ap/{k}"] for k in ("ap", "ap50", "ap75")} | {
            "step": record["step"]
        }
    return {
        "step": record["step"],
        "pq": record["all/pq"],
        "pq_th": record["things/pq"],
        "pq_st": record["stuff/pq"],
    }


def paste_pq(run_dir: Path) -> dict[str, float]:
    """PQ of a panoptic run's final EMA weights with the paste merge (module's crop masks)."""
    from maskconver import build
    from maskconver.config import merge_overrides
    from maskconver.engine.checkpoint import load_checkpoint
    from maskconver.engine.data import build_dataset
    from maskconver.engine.evaluate import evaluate_model

    loaded = load_checkpoint(run_dir)
    cfg = merge_overrides(loaded.config, ["model.dr1mask.merge.mode=paste"])
    model = build.build_model(cfg.model, loaded.num_classes)
    state = loaded.ema_state if loaded.ema_state is not None else loaded.model_state
    model.load_state_dict(state)
    dataset = build_dataset(cfg, "val")
    metrics = evaluate_model(
        model,
        dataset,
        cfg=cfg,
        categories=loaded.categories,
        num_classes=loaded.num_classes,
        max_images=cfg.train.max_eval_images,
        progress=False,
    )
    return {
        "pq": metrics["all"]["pq"],
        "pq_th": metrics["things"]["pq"],
        "pq_st": metrics["stuff"]["pq"],
    }


def run_one(base: str, arm: list[str], extra: list[str], seed: int, steps: int, out: Path) -> Any:
    """Train one (arm, seed) unless ``out/summary.json`` exists; returns its summary."""
    done = out / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    from maskconver.config import load_config
    from maskconver.engine.logging import read_metrics
    from maskconver.engine.step import NonFiniteLossError
    from maskconver.engine.train import train

    overrides = [
        *SHORT,
        *extra,
        *arm,
        f"train.seed={seed}",
        f"train.max_steps={steps}",
        f"train.eval_every={max(1, steps // EVALS)}",
        f"train.ckpt_every={steps}",
        "train.keep_last=1",
    ]
    cfg = load_config(base, overrides)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    start = time.perf_counter()
    diverged = None
    try:
        train(cfg, out, progress=False)
    except NonFiniteLossError as e:
        diverged = str(e)
    records = read_metrics(out)
    curve = [curve_point(r) for r in records if r.get("kind") == "eval" and "error" not in r]
    summary: dict[str, Any] = {
        "base": base,
        "overrides": overrides,
        "seed": seed,
        "steps": steps,
        "diverged": diverged,
        "curve": curve,
        "train_seconds": time.perf_counter() - start,
    }
    if cfg.model.dr1mask.task == "panoptic" and not diverged:
        summary["paste"] = paste_pq(out)
    summary["seconds"] = time.perf_counter() - start
    done.write_text(json.dumps(summary))
    return summary


def cost(base: str, arm: list[str]) -> dict[str, Any]:
    """Parameters, embedding widths and the median forward + instance post-processing time."""
    import torch

    from maskconver import build
    from maskconver.config import load_config
    from maskconver.data.synthetic import synthetic_categories
    from maskconver.meta.dr1mask.build import build_instance_postprocessor

    cfg = load_config(base, [*arm, "model.dr1mask.task=instance"])
    categories = synthetic_categories()
    num_classes = categories.num_classes
    torch.manual_seed(0)
    model = build.build_model(cfg.model, num_classes).eval()
    post = build_instance_postprocessor(cfg, categories, num_classes)
    post.score_threshold = -1.0  # every one of the K detections: a fixed amount of work
    module = model.instance_module
    images = torch.rand(1, 3, LATENCY_SIZE, LATENCY_SIZE) * 255
    size = [(LATENCY_SIZE, LATENCY_SIZE)]
    times = []
    with torch.inference_mode():
        for i in range(LATENCY_RUNS + 3):
            start = time.perf_counter()
            post(model(images), size, size, (LATENCY_SIZE, LATENCY_SIZE))
            if i >= 3:
                times.append(time.perf_counter() - start)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "embedding_dim": module.embedding_dim,
        "mask_parameters": module.mask_parameters,
        "shared_parameters": sum(p.numel() for p in module.parameters()),
        "latency_ms": 1000 * statistics.median(times),
    }


def spread(values: list[float]) -> str:
    """``mean ± std`` in percent (``-`` when empty)."""
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{PERCENT * mean:.1f} ± {PERCENT * std:.1f}"


def tables(results: dict[str, list[dict[str, Any]]], costs: dict[str, Any]) -> str:
    """The markdown report: instance AP, panoptic PQ (argmax and paste), costs."""
    lines = [
        "| instance module | seeds | mask AP | AP50 | AP75 | latency (ms) @128, 1 thread |",
        "|---|---|---|---|---|---|",
    ]
    for module in MODULES:
        runs = [r for r in results.get(f"instance {module}", []) if r["curve"]]
        final = {k: [r["curve"][-1][k] for r in runs] for k in ("ap", "ap50", "ap75")}
        c = costs.get(f"instance {module}")
        lines.append(
            f"| {module} | {len(runs)} | {spread(final['ap'])} | {spread(final['ap50'])} | "
            f"{spread(final['ap75'])} | {c['latency_ms']:.1f} |"
            if c
            else f"| {module} | {len(runs)} | - | - | - | - |"
        )
    lines += [
        "",
        "| instance module (panoptic) | seeds | PQ | PQ_th | PQ_st | paste: PQ | PQ_th | PQ_st |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for module in MODULES:
        runs = [r for r in results.get(f"panoptic {module}", []) if r["curve"]]
        final = {k: [r["curve"][-1][k] for r in runs] for k in ("pq", "pq_th", "pq_st")}
        paste = {k: [r["paste"][k] for r in runs if "paste" in r] for k in ("pq", "pq_th", "pq_st")}
        lines.append(
            f"| {module} | {len(runs)} | {spread(final['pq'])} | {spread(final['pq_th'])} | "
            f"{spread(final['pq_st'])} | {spread(paste['pq'])} | {spread(paste['pq_th'])} | "
            f"{spread(paste['pq_st'])} |"
        )
    lines += [
        "",
        "| instance module | params (instance task) | embedding width E | of it, mask values "
        "per instance | shared module parameters |",
        "|---|---|---|---|---|",
    ]
    for module in MODULES:
        c = costs.get(f"instance {module}")
        if c:
            lines.append(
                f"| {module} | {c['params'] / 1e6:.3f} M | {c['embedding_dim']} | "
                f"{c['mask_parameters']} | {c['shared_parameters']} |"
            )
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Mask AP (instance) and PQ (panoptic) against step, mean over seeds, per module."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=110)
    panels = [("instance", "ap", "mask AP (%)"), ("panoptic", "pq_th", "PQ_th (%)")]
    panels.append(("panoptic", "pq_st", "PQ_st (%)"))
    for ax, (task, key, label) in zip(axes, panels, strict=True):
        for module in MODULES:
            runs = [r for r in results.get(f"{task} {module}", []) if r["curve"]]
            if not runs:
                continue
            steps = sorted({p["step"] for r in runs for p in r["curve"]})
            values = [[p[key] for r in runs for p in r["curve"] if p["step"] == s] for s in steps]
            mean = [PERCENT * statistics.fmean(v) for v in values]
            line = ax.plot(steps, mean, marker="o", label=module)[0]
            ax.fill_between(
                steps,
                [PERCENT * min(v) for v in values],
                [PERCENT * max(v) for v in values],
                color=line.get_color(),
                alpha=0.15,
            )
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(f"{task}: {label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the grid (resumable), measure each module's cost, report."""
    p = ablation_parser(__doc__, out="runs/ablate_dr1mask_instance", base="", steps=480)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    grid = arms()
    if args.arms:
        unknown = sorted(set(args.arms) - set(grid))
        if unknown:
            raise SystemExit(f"unknown arm(s) {unknown}; the grid holds {sorted(grid)}")
        grid = {k: v for k, v in grid.items() if k in args.arms}
    results: dict[str, list[dict[str, Any]]] = {}
    total, done = len(grid) * len(args.seeds), 0
    for seed in args.seeds:  # seed-major: a partial grid has every arm at the first seeds
        for name, (base, arm) in grid.items():
            run_dir = args.out / arm_dir(name) / f"seed{seed}"
            if args.finished_only and not (run_dir / "summary.json").is_file():
                continue
            summary = run_one(base, arm, args.overrides, seed, args.steps, run_dir)
            results.setdefault(name, []).append(summary)
            done += 1
            last = summary["curve"][-1] if summary["curve"] else {}
            shown = ", ".join(f"{k} {PERCENT * v:.1f}" for k, v in last.items() if k != "step")
            print(f"[{done}/{total}] {name} seed {seed}: {shown} ({summary['seconds']:.0f} s)")
            sys.stdout.flush()
    costs = {name: cost(base, arm) for name, (base, arm) in grid.items() if "instance" in name}
    report = tables(results, costs)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report + "\n")
    (args.out / "results.json").write_text(json.dumps({"costs": costs, "runs": results}, indent=1))
    plot(results, args.out / "dr1mask_instance.png")
    print(f"wrote {args.out / 'results.md'}, results.json and dr1mask_instance.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
