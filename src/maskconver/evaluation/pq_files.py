"""PQ of COCO panoptic files (JSON + PNG folders), as panopticapi ``pq_compute`` scores them.

Ground truth and predictions are paired by ``image_id``; every ground-truth image needs a
prediction (extra predictions are ignored, as in panopticapi). Ground-truth areas come from the
JSON ``area`` fields when every segment of an image has one (panopticapi's behaviour), otherwise
from the PNG. Semantic mIoU and mask AP (``evaluation.metrics``) are added on request; mask AP
ranks predicted segments by their ``score`` (1.0 where a prediction has none).
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np

from maskconver.data.panoptic_png import read_panoptic_png
from maskconver.data.types import Category, SegmentInfo
from maskconver.evaluation.metrics import PanopticMetrics, format_summary

PERCENT = 100.0
MAX_LISTED_IDS = 10  # ids named in an error message before "... and N more"

Pair = tuple[dict, dict]  # (gt annotation, pred annotation)


def load_json(path: str | Path, what: str) -> dict:
    """Read a JSON object; errors name ``what`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def categories_from_json(items: list[dict], where: str) -> list[Category]:
    """COCO ``categories`` entries -> ``Category`` list (``isthing`` defaults to 1)."""
    try:
        return [
            Category(
                id=int(c["id"]), name=str(c.get("name", c["id"])), isthing=bool(c.get("isthing", 1))
            )
            for c in items
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: malformed 'categories' entry ({e!r})") from e


def segments_from_json(items: list[dict], where: str) -> list[SegmentInfo]:
    """COCO ``segments_info`` entries -> ``SegmentInfo`` list (``area`` -1, ``score`` 1 absent)."""
    try:
        return [
            SegmentInfo(
                id=int(s["id"]),
                category_id=int(s["category_id"]),
                iscrowd=bool(s.get("iscrowd", 0)),
                area=int(s.get("area", -1)),
                score=float(s.get("score", 1.0)),
            )
            for s in items
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: malformed segments_info entry ({e!r})") from e


def _score_pairs(
    pairs: list[Pair],
    gt_dir: str,
    pred_dir: str,
    categories: list[Category],
    metrics: tuple[str, ...] = ("pq",),
    first: int = 0,
) -> dict:
    """Score annotation pairs (``first``: index of the first pair); ``PanopticMetrics.state()``."""
    metric = PanopticMetrics(categories, metrics)
    for offset, (gt_ann, pred_ann) in enumerate(pairs):
        image_id = gt_ann["image_id"]
        where = f"image {image_id}"
        gt_segments = segments_from_json(gt_ann.get("segments_info", []), f"{where} (gt)")
        pred_segments = segments_from_json(pred_ann.get("segments_info", []), f"{where} (pred)")
        gt_map = read_panoptic_png(Path(gt_dir) / _file_name(gt_ann, "ground truth"))
        pred_map = read_panoptic_png(Path(pred_dir) / _file_name(pred_ann, "prediction"))
        metric.update(
            gt_map,
            gt_segments,
            pred_map,
            pred_segments,
            image_id=image_id,
            use_segment_area=all(s.area >= 0 for s in gt_segments),
            order=first + offset,
        )
    return metric.state()


def _file_name(ann: dict, what: str) -> str:
    try:
        return str(ann["file_name"])
    except KeyError:
        raise ValueError(
            f"{what} annotation of image {ann.get('image_id')} has no 'file_name'"
        ) from None


def _pairs(gt: dict, pred: dict, gt_json: str | Path, pred_json: str | Path) -> list[Pair]:
    """Pair annotations by ``image_id``; every ground-truth image needs a prediction."""
    for data, path in ((gt, gt_json), (pred, pred_json)):
        if not isinstance(data.get("annotations"), list):
            raise ValueError(f"{path} has no 'annotations' list")
        if any(not isinstance(a, dict) or "image_id" not in a for a in data["annotations"]):
            raise ValueError(f"{path}: every annotation needs an 'image_id'")
    pred_by_id = {a["image_id"]: a for a in pred["annotations"]}
    missing = [a["image_id"] for a in gt["annotations"] if a["image_id"] not in pred_by_id]
    if missing:
        more = len(missing) - MAX_LISTED_IDS
        listed = ", ".join(str(i) for i in missing[:MAX_LISTED_IDS])
        suffix = f" ... and {more} more" if more > 0 else ""
        raise ValueError(f"no prediction in {pred_json} for image ids {listed}{suffix}")
    return [(a, pred_by_id[a["image_id"]]) for a in gt["annotations"]]


def evaluate_files(
    gt_json: str | Path,
    gt_dir: str | Path,
    pred_json: str | Path,
    pred_dir: str | Path,
    *,
    workers: int = 0,
    metrics: tuple[str, ...] | list[str] = ("pq",),
    verbose: bool = False,
) -> dict:
    """PQ (and optionally mIoU and mask AP) of a COCO panoptic prediction set.

    Args:
        gt_json: ground-truth JSON (``images``, ``annotations``, ``categories``).
        gt_dir: folder of the ground-truth PNGs (named by each annotation's ``file_name``).
        pred_json: prediction JSON (``annotations`` with ``image_id``, ``file_name``,
            ``segments_info``); its categories, if any, are ignored.
        pred_dir: folder of the predicted PNGs.
        workers: processes to use; 0 or 1 scores in this process.
        metrics: names from ``evaluation.metrics.METRIC_NAMES`` (``"pq"`` always included).
        verbose: let COCOeval print its tables.

    Returns:
        ``PanopticMetrics.compute()``'s dict (fractions in [0, 1]); with ``metrics=("pq",)``
        exactly ``PanopticQuality.compute()``'s.

    Raises:
        FileNotFoundError: a JSON file or PNG is missing.
        ValueError: malformed JSON, a ground-truth image without prediction, or a segment
            mismatch between a PNG and its ``segments_info``.
    """
    gt = load_json(gt_json, "ground-truth JSON")
    pred = load_json(pred_json, "prediction JSON")
    if not isinstance(gt.get("categories"), list) or not gt["categories"]:
        raise ValueError(f"{gt_json} has no 'categories' list")
    categories = categories_from_json(gt["categories"], str(gt_json))
    pairs = _pairs(gt, pred, gt_json, pred_json)
    metric = PanopticMetrics(categories, metrics, verbose=verbose)
    names = metric.names
    if workers > 1 and len(pairs) > 1:
        chunks = [c.tolist() for c in np.array_split(np.arange(len(pairs)), workers) if len(c)]
        jobs = [
            ([pairs[i] for i in c], str(gt_dir), str(pred_dir), categories, names, c[0])
            for c in chunks
        ]
        # spawn, not fork: a fork of a process whose native runtimes (OpenVINO, LiteRT, torch)
        # already run threads can crash the child (seen as a segfault in the test suite)
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            for state in pool.starmap(_score_pairs, jobs):
                metric.merge_state(state)
    else:
        metric.merge_state(_score_pairs(pairs, str(gt_dir), str(pred_dir), categories, names))
    return metric.compute()


def format_table(metrics: dict) -> str:
    """A readable table of ``evaluate_files``/``PanopticMetrics.compute`` output (percent).

    The mIoU / mask AP summaries and per-class IoU / AP columns appear when present.
    """
    lines = [f"{'':10s}|{'PQ':>8s}{'SQ':>8s}{'RQ':>8s}{'N':>6s}", "-" * 40]
    for key, label in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        m = metrics[key]
        lines.append(
            f"{label:10s}|{m['pq'] * PERCENT:8.2f}{m['sq'] * PERCENT:8.2f}"
            f"{m['rq'] * PERCENT:8.2f}{m['n']:6d}"
        )
    summary = format_summary(metrics, PERCENT)
    if summary:
        lines += ["", summary]
    per_class = metrics.get("per_class", {})
    columns = [
        (key, label)
        for key, label in (("iou", "IoU"), ("ap", "AP"))
        if any(key in c for c in per_class.values())
    ]
    if per_class:
        width = max(len(str(c["name"])) for c in per_class.values())
        width = max(width, len("category"))
        lines += [
            "",
            f"{'id':>5s}  {'category':{width}s}{'PQ':>8s}{'SQ':>8s}{'RQ':>8s}"
            f"{'TP':>7s}{'FP':>7s}{'FN':>7s}" + "".join(f"{label:>8s}" for _, label in columns),
            "-" * (width + 52 + 8 * len(columns)),
        ]
        for cat_id, c in per_class.items():
            lines.append(
                f"{cat_id:>5s}  {c['name']:{width}s}{c['pq'] * PERCENT:8.2f}"
                f"{c['sq'] * PERCENT:8.2f}{c['rq'] * PERCENT:8.2f}"
                f"{c['tp']:7d}{c['fp']:7d}{c['fn']:7d}"
                + "".join(_cell(c.get(key)) for key, _ in columns)
            )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    """A per-class IoU / AP in percent; ``-`` where absent (AP of stuff) or -1 (no gt)."""
    if value is None or value < 0:
        return f"{'-':>8s}"
    return f"{value * PERCENT:8.2f}"
