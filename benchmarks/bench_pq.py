"""Time PQ evaluation: maskconver vs the official panopticapi vs hotcoco, on the same files.

Builds (or reuses from ``--cache-dir``) a COCO panoptic set of synthetic scenes (default 500
images of 320x480, crowd segments and void included) and predictions made by perturbing the
ground truth (dropped, shifted, eroded, dilated, relabelled, split and spurious segments). Each
evaluator runs ``--repeats`` times, interleaved; medians and ratios are printed, and the three
evaluators' PQ/SQ/RQ must agree to 1e-9.

    python benchmarks/bench_pq.py [--num-images 500] [--repeats 3] [--cache-dir DIR]

The official code is ``panopticapi-lite`` (``pip install --no-deps panopticapi-lite``; it pins
numpy<2), run as it ships: a ``multiprocessing.Pool`` with ``cpu_count()`` workers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

from maskconver.data import panoptic_png
from maskconver.data.synthetic import generate_sample, synthetic_categories
from maskconver.data.types import VOID, SegmentInfo
from maskconver.data.writer import CocoPanopticWriter
from maskconver.evaluation.pq_files import evaluate_files

CROWD_PROB = 0.1
ACTIONS = ("keep", "drop", "shift", "erode", "dilate", "relabel", "split")
ACTION_PROBS = (0.4, 0.1, 0.15, 0.1, 0.1, 0.05, 0.1)
MAX_SHIFT = 6  # pixels
MAX_MORPH_ITERATIONS = 3
MAX_SPURIOUS = 3
SPURIOUS_SIZE = (8, 60)  # pixels, per side
TOLERANCE = 1e-9
SPLITS = (("all", "All"), ("things", "Things"), ("stuff", "Stuff"))
OFFICIAL = "panopticapi pq_compute (official)"


def perturb(
    rng: np.random.Generator, panoptic: np.ndarray, segments: list[SegmentInfo], cat_ids: list[int]
) -> tuple[np.ndarray, list[SegmentInfo]]:
    """A plausible prediction ``[H, W]`` from a gt map: segments painted in random order."""
    height, width = panoptic.shape
    layers: list[tuple[np.ndarray, int]] = []
    for seg in segments:
        mask, cat = panoptic == seg.id, seg.category_id
        action = rng.choice(ACTIONS, p=ACTION_PROBS)
        if action == "drop":
            continue
        if action == "shift":
            offset = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2)
            mask = ndimage.shift(mask, offset, order=0)
        elif action in ("erode", "dilate"):
            morph = ndimage.binary_erosion if action == "erode" else ndimage.binary_dilation
            mask = morph(mask, iterations=int(rng.integers(1, MAX_MORPH_ITERATIONS + 1)))
        elif action == "relabel":
            cat = int(rng.choice(cat_ids))
        elif action == "split":
            rows = np.nonzero(mask.any(axis=1))[0]
            top = mask.copy()
            top[int(np.median(rows)) :] = False
            layers.append((top, cat))
            mask = mask & ~top
        layers.append((mask, cat))
    for _ in range(int(rng.integers(0, MAX_SPURIOUS + 1))):
        mask = np.zeros((height, width), bool)
        dy, dx = rng.integers(*SPURIOUS_SIZE, size=2)
        y0, x0 = int(rng.integers(0, height - dy)), int(rng.integers(0, width - dx))
        mask[y0 : y0 + dy, x0 : x0 + dx] = True
        layers.append((mask, int(rng.choice(cat_ids))))
    pred = np.zeros((height, width), np.int32)
    for k in rng.permutation(len(layers)):
        pred[layers[k][0]] = k + 1
    present = [int(i) for i in np.unique(pred) if i != VOID]
    return pred, [SegmentInfo(id=i, category_id=layers[i - 1][1]) for i in present]


def build_set(root: Path, num_images: int, height: int, width: int, seed: int) -> Path:
    """Write ``root/{gt,pred}.json`` and ``root/{gt,pred}/*.png`` unless already complete."""
    if (root / "pred.json").is_file():
        return root
    rng = np.random.default_rng(seed)
    categories = synthetic_categories()
    cat_ids = [c.id for c in categories.categories]
    start = time.perf_counter()
    with (
        CocoPanopticWriter(root / "gt.json", root / "gt", categories) as gt_writer,
        CocoPanopticWriter(root / "pred.json", root / "pred", categories) as pred_writer,
    ):
        for index in range(num_images):
            sample = generate_sample(rng, height, width, crowd_prob=CROWD_PROB)
            pred, pred_segments = perturb(rng, sample.panoptic, sample.segments, cat_ids)
            name = f"{index:012d}.png"
            gt_writer.add(index, name, sample.panoptic, sample.segments)
            pred_writer.add(index, name, pred, pred_segments)
    print(f"built {num_images} images in {time.perf_counter() - start:.1f} s under {root}")
    return root


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout at the file-descriptor level (the official code prints from workers)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def evaluators(root: Path) -> dict[str, tuple[Callable[[], dict], bool]]:
    """Name -> (call returning ``{"All"|"Things"|"Stuff": {"pq","sq","rq","n"}}``, whether all of
    its work runs inside this process, so that its CPU time is measurable)."""
    gt_json, pred_json = str(root / "gt.json"), str(root / "pred.json")
    gt_dir, pred_dir = str(root / "gt"), str(root / "pred")

    def ours(workers: int) -> Callable[[], dict]:
        def call() -> dict:
            out = evaluate_files(gt_json, gt_dir, pred_json, pred_dir, workers=workers)
            return {theirs: out[key] for key, theirs in SPLITS}

        return call

    calls: dict[str, tuple[Callable[[], dict], bool]] = {
        "maskconver (1 process)": (ours(0), True),
        "maskconver (workers=2)": (ours(2), False),
    }
    try:
        from panopticapi.evaluation import pq_compute, pq_compute_single_core

        def official_one_core() -> dict:
            with open(gt_json) as f:
                gt = json.load(f)
            with open(pred_json) as f:
                pred = {a["image_id"]: a for a in json.load(f)["annotations"]}
            categories = {c["id"]: c for c in gt["categories"]}
            pairs = [(a, pred[a["image_id"]]) for a in gt["annotations"]]
            stat = pq_compute_single_core(0, pairs, gt_dir, pred_dir, categories)
            return {
                name: stat.pq_average(categories, isthing=isthing)[0]
                for name, isthing in (("All", None), ("Things", True), ("Stuff", False))
            }

        calls[OFFICIAL] = (lambda: pq_compute(gt_json, pred_json, gt_dir, pred_dir), False)
        calls["panopticapi single core (in-process)"] = (official_one_core, True)
    except ImportError as e:
        print(f"panopticapi not available ({e}); pip install --no-deps panopticapi-lite")
    try:
        from hotcoco.panoptic import pq_compute as hotcoco

        # Rust threads inside this process: process CPU time counts them all
        calls["hotcoco"] = (lambda: hotcoco(gt_json, pred_json, gt_dir, pred_dir), True)
    except ImportError as e:
        print(f"hotcoco not available ({e})")
    return calls


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the set, time every evaluator, check agreement; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/maskconver_bench_pq"))
    args = parser.parse_args(argv)
    root = args.cache_dir / f"n{args.num_images}_{args.height}x{args.width}_seed{args.seed}"
    build_set(root, args.num_images, args.height, args.width, args.seed)
    calls = evaluators(root)
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name, (_, inside) in calls.items() if inside}
    results: dict[str, dict] = {}
    for _ in range(args.repeats):  # interleaved, so drifts in machine speed hit all alike
        for name, (call, inside) in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            with quiet():
                results[name] = call()
            wall[name].append(time.perf_counter() - start)
            if inside:
                cpu[name].append(time.process_time() - start_cpu)

    n = args.num_images
    print(
        f"\n{n} images {args.height}x{args.width}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, median of {args.repeats} interleaved runs"
    )
    decoder = f"pyspng {panoptic_png.pyspng.__version__}" if panoptic_png.pyspng else "Pillow"
    print(f"  maskconver PNG decoder: {decoder}")
    print(
        f"  {'evaluator':38s} {'wall s':>7s} {'ms/img':>7s} {'vs official':>11s}"
        f" {'CPU ms/img':>10s}   wall runs"
    )
    official = statistics.median(wall[OFFICIAL]) if OFFICIAL in wall else float("nan")
    for name, ts in wall.items():
        median = statistics.median(ts)
        cpu_ms = f"{1e3 * statistics.median(cpu[name]) / n:10.2f}" if name in cpu else " " * 10
        print(
            f"  {name:38s} {median:7.2f} {1e3 * median / n:7.2f} {official / median:10.2f}x"
            f" {cpu_ms}   {', '.join(f'{t:.2f}' for t in ts)}"
        )
    one_core = "panopticapi single core (in-process)"
    if one_core in cpu:
        ratio = statistics.median(cpu[one_core]) / statistics.median(cpu["maskconver (1 process)"])
        print(f"  CPU time per image, official single core / maskconver: {ratio:.2f}x")

    base_name, base = next(iter(results.items()))
    ok = True
    for name, res in results.items():
        for _, split in SPLITS:
            if res[split]["n"] != base[split]["n"]:
                ok = False
            for m in ("pq", "sq", "rq"):
                if abs(res[split][m] - base[split][m]) > TOLERANCE:
                    ok = False
                    print(f"  MISMATCH {name} {split} {m}: {res[split][m]} vs {base[split][m]}")
    all_pq = ", ".join(f"{name}: {res['All']['pq']:.12f}" for name, res in results.items())
    print(f"  PQ (All): {all_pq}")
    print("  all evaluators agree to 1e-9" if ok else f"  evaluators DISAGREE with {base_name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
