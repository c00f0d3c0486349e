"""Where the thing segments of a panoptic prediction go wrong: recall by size, the error kinds.

For every non-crowd ground-truth thing segment of a COCO panoptic split, the predicted segment
with the highest IoU is found. The segment is *matched* when a prediction of its class has
IoU > 0.5 (the PQ match). Otherwise it is counted as one of:

* ``wrong class``: the best prediction has IoU > 0.5 but another class (a good mask, a wrong
  label);
* ``merged``: the best prediction has its class and covers > 70 % of it, but its IoU is <= 0.5
  (it also covers another segment: touching same-class instances merged);
* ``poor mask``: the best prediction overlaps it but neither of the above;
* ``missed``: no prediction overlaps it.

Recall is split by ground-truth area: tiny (< 12 x 12 px), medium (< 50 x 50 px), large.

Example (the quickstart's own output folders)::

    python benchmarks/thing_errors.py --gt runs/quickstart/data/annotations/panoptic_val2017 \\
        --pred runs/quickstart/val_predictions/predictions.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MATCH_IOU = 0.5
MERGE_COVER = 0.7
SIZE_BUCKETS = ((144, "tiny (< 12x12 px)"), (2500, "medium (< 50x50 px)"), (None, "large"))


def _ids(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _bucket(area: int) -> str:
    return next(name for limit, name in SIZE_BUCKETS if limit is None or area < limit)


def thing_errors(gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path) -> dict[str, Any]:
    """Per-size recall, error-kind counts and the (true, predicted) class pairs of wrong labels."""
    gt = json.loads(gt_json.read_text())
    pred = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
    cats = {c["id"]: c for c in gt["categories"]}
    recall: dict[str, list[int]] = {name: [0, 0] for _, name in SIZE_BUCKETS}
    kinds: Counter[str] = Counter()
    confusions: Counter[tuple[str, str, str]] = Counter()
    for g in gt["annotations"]:
        p = pred.get(g["image_id"])
        if p is None:
            raise SystemExit(f"{pred_json}: no prediction for image_id {g['image_id']}")
        gt_ids = _ids(gt_dir / g["file_name"])
        pred_ids = _ids(pred_dir / p["file_name"])
        for s in g["segments_info"]:
            if not cats[s["category_id"]]["isthing"] or s.get("iscrowd"):
                continue
            mask = gt_ids == s["id"]
            area = int(mask.sum())
            bucket = _bucket(area)
            recall[bucket][1] += 1
            best_iou, best, matched = 0.0, None, False
            for ps in p["segments_info"]:
                other = pred_ids == ps["id"]
                inter = int((mask & other).sum())
                if inter == 0:
                    continue
                iou = inter / int((mask | other).sum())
                matched |= iou > MATCH_IOU and ps["category_id"] == s["category_id"]
                if iou > best_iou:
                    best_iou, best = iou, (ps, inter)
            if matched:
                recall[bucket][0] += 1
            elif best is None:
                kinds["missed"] += 1
            elif best_iou > MATCH_IOU:
                kinds["wrong class"] += 1
                true, said = cats[s["category_id"]]["name"], cats[best[0]["category_id"]]["name"]
                confusions[(true, said, bucket)] += 1
            elif best[0]["category_id"] == s["category_id"] and best[1] / area > MERGE_COVER:
                kinds["merged"] += 1
            else:
                kinds["poor mask"] += 1
    return {"recall": recall, "kinds": dict(kinds), "confusions": confusions.most_common()}


def main(argv: list[str] | None = None) -> int:
    """Print the breakdown for one ground truth / prediction pair."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gt", type=Path, required=True, help="ground-truth PNG folder (JSON beside)")
    p.add_argument("--pred", type=Path, required=True, help="predictions.json (PNGs beside)")
    args = p.parse_args(argv)
    gt_dir = args.gt
    pred_dir = args.pred.parent / "panoptic"
    result = thing_errors(gt_dir.with_suffix(".json"), gt_dir, args.pred, pred_dir)
    for name, (hit, total) in result["recall"].items():
        print(f"{name:22s} recall {hit:4d} / {total:4d} = {hit / max(total, 1):.2f}")
    print("unmatched:", ", ".join(f"{k} {v}" for k, v in sorted(result["kinds"].items())))
    for (true, said, bucket), count in result["confusions"][:8]:
        print(f"  {true} predicted as {said} ({bucket}): {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
