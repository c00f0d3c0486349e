"""MaskConver and kMaX-DeepLab side by side: PQ at equal training wall time, and latency.

Train both with the same wall-clock budget on this machine at the same time (one torch thread
each, so they share the load alike), then compare::

    maskconver quickstart --minutes 8 --threads 1 --output-dir runs/wall_tiny &
    maskconver quickstart --config kmax_tiny --minutes 8 --threads 1 \\
        --output-dir runs/wall_kmax &
    wait
    python benchmarks/kmax_vs_maskconver.py runs/wall_tiny runs/wall_kmax

The script reads each quickstart's ``metrics.json`` (steps, training seconds, PQ on the 100
synthetic validation images) and times the two trained models on the same held-out scenes,
interleaved image by image (torch eager, and onnxruntime with the merge in the graph when it is
installed), printing medians, their ratio and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

IMAGES = 30


def _summary(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "steps": metrics["train"]["steps"],
        "train_s": metrics["train"]["seconds"],
        "pq": metrics["pq"]["all"]["pq"],
        "pq_th": metrics["pq"]["things"]["pq"],
        "pq_st": metrics["pq"]["stuff"]["pq"],
    }


def main(argv: list[str] | None = None) -> int:
    """Compare two quickstart runs (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", type=Path, nargs=2, help="two quickstart output folders")
    p.add_argument("--images", type=int, default=IMAGES, help="held-out scenes timed")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from maskconver.benchmarking.measure import cpu_model
    from maskconver.data.synthetic import SyntheticPanoptic
    from maskconver.predictor import Predictor

    torch.set_num_threads(args.threads)
    scenes = SyntheticPanoptic(args.images, seed=123, stream=2)
    images = [scenes[i].image for i in range(args.images)]
    contenders: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    for run in args.runs:
        name = run.name
        rows[name] = _summary(run)
        checkpoint = run / "checkpoints" / "best"
        contenders[f"{name} torch"] = Predictor.from_checkpoint(checkpoint)
        try:
            from maskconver.export.onnx import export_onnx

            path = Path(tempfile.mkdtemp()) / f"{name}.onnx"
            export_onnx(checkpoint, path)
            contenders[f"{name} onnxruntime"] = Predictor.from_onnx(path, threads=args.threads)
        except ImportError as e:
            print(f"{name}: no onnxruntime row ({e})")
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for image in images[:2]:  # warm-up
        for predictor in contenders.values():
            predictor(image)
    for image in images:
        for key, predictor in contenders.items():
            start = time.perf_counter()
            predictor(image)
            times[key].append(1000 * (time.perf_counter() - start))
    print(f"CPU: {cpu_model()}, {args.threads} thread(s), {args.images} held-out scenes")
    print("| model | steps | train s | PQ | PQ_th | PQ_st |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['steps']} | {row['train_s']:.0f} | {100 * row['pq']:.1f} | "
            f"{100 * row['pq_th']:.1f} | {100 * row['pq_st']:.1f} |"
        )
    print("\n| deployment | median ms / image |\n|---|---|")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for key, ms in medians.items():
        print(f"| {key} | {ms:.1f} |")
    names = [run.name for run in args.runs]
    for backend in ("torch", "onnxruntime"):
        a, b = (medians.get(f"{n} {backend}") for n in names)
        if a and b:
            print(f"{backend}: {names[1]} / {names[0]} = {b / a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
