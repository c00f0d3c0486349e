"""Every metric of a panoptic evaluation behind one accumulator: PQ, semantic mIoU, mask AP.

``PanopticMetrics`` feeds each image to ``PanopticQuality`` (always) and, when named, to
``SemanticIoU`` (``"miou"``) and ``MaskAP`` (``"mask_ap"``). Nothing per pixel is kept: PQ
counts, one confusion matrix and one RLE per thing segment. ``compute`` returns PQ's dict with
two more summaries and the per-class numbers folded into PQ's per-class table::

    {"all", "things", "stuff",                          # PQ / SQ / RQ, unchanged
     "semantic": {"miou", "fwiou", "macc", "pixel_accuracy", "n"},          # with "miou"
     "mask_ap": {"ap", "ap50", "ap75", "aps", "apm", "apl", "n"},           # with "mask_ap"
     "per_class": {"<category_id>": {..., "iou", "ap" (thing categories)}}}

so a metric logger that drops ``per_class`` logs ``semantic/miou``, ``mask_ap/ap``, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from maskconver.data.types import Category, CategorySet, SegmentInfo
from maskconver.evaluation.mask_ap import MaskAP
from maskconver.evaluation.pq import PanopticQuality
from maskconver.evaluation.semantic import SemanticIoU

METRIC_NAMES = ("pq", "miou", "mask_ap")  # the choices of eval.metrics / --metrics
REQUIRED_METRIC = "pq"  # always computed: tables and the best checkpoint rank by it


def check_metric_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validated metric names in ``METRIC_NAMES`` order.

    Raises:
        ValueError: an unknown name, or ``"pq"`` missing.
    """
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: choose from {list(METRIC_NAMES)}")
    if REQUIRED_METRIC not in names:
        raise ValueError(f"metrics {list(names)} must include '{REQUIRED_METRIC}'")
    return tuple(n for n in METRIC_NAMES if n in names)


def parse_metric_names(text: str) -> tuple[str, ...]:
    """``"pq,miou"`` -> ``("pq", "miou")``; ``"all"`` names every metric (``ValueError``)."""
    if text.strip() == "all":
        return METRIC_NAMES
    return check_metric_names([part.strip() for part in text.split(",") if part.strip()])


class PanopticMetrics:
    """PQ plus the optional semantic and mask-AP accumulators, updated together.

    Args:
        categories: the evaluated categories.
        metrics: names from ``METRIC_NAMES`` (must include ``"pq"``).
        verbose: let COCOeval print its tables (mask AP).
    """

    def __init__(
        self,
        categories: CategorySet | Sequence[Category],
        metrics: Sequence[str] = METRIC_NAMES,
        *,
        verbose: bool = False,
    ) -> None:
        cats = categories.categories if isinstance(categories, CategorySet) else list(categories)
        self.names = check_metric_names(metrics)
        self.pq = PanopticQuality(cats)
        self.semantic = SemanticIoU(cats) if "miou" in self.names else None
        self.mask_ap = MaskAP(cats, verbose=verbose) if "mask_ap" in self.names else None

    def update(
        self,
        gt_panoptic: np.ndarray,
        gt_segments: Sequence[SegmentInfo],
        pred_panoptic: np.ndarray,
        pred_segments: Sequence[SegmentInfo],
        *,
        image_id: int | str | None = None,
        use_segment_area: bool = False,
        order: int | None = None,
    ) -> None:
        """Add one image to every accumulator (arguments as ``PanopticQuality.update``).

        ``order`` is the image's place in the dataset, for mask AP's tie-breaking between
        equal scores (default: after every image so far).
        """
        self.pq.update(
            gt_panoptic,
            gt_segments,
            pred_panoptic,
            pred_segments,
            image_id=image_id,
            use_segment_area=use_segment_area,
        )
        if self.semantic is not None:
            self.semantic.update(
                gt_panoptic, gt_segments, pred_panoptic, pred_segments, image_id=image_id
            )
        if self.mask_ap is not None:
            self.mask_ap.update(
                gt_panoptic,
                gt_segments,
                pred_panoptic,
                pred_segments,
                image_id=image_id,
                order=order,
            )

    def state(self) -> dict[str, Any]:
        """Picklable states by metric name (PQ and semantic tensors, mask-AP records)."""
        out: dict[str, Any] = {"pq": self.pq.state()}
        if self.semantic is not None:
            out["miou"] = self.semantic.state()
        if self.mask_ap is not None:
            out["mask_ap"] = self.mask_ap.state()
        return out

    def merge_state(self, state: dict[str, Any]) -> None:
        """Add another accumulator's ``state()`` (same categories and metrics)."""
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ValueError(f"metric state lacks {missing} (has {sorted(state)})")
        self.pq.merge_state(state["pq"])
        if self.semantic is not None:
            self.semantic.merge_state(state["miou"])
        if self.mask_ap is not None:
            self.mask_ap.merge_state(state["mask_ap"])

    def compute(self) -> dict[str, Any]:
        """PQ's dict with ``semantic`` / ``mask_ap`` summaries and per-class ``iou`` / ``ap``."""
        results: dict[str, Any] = dict(self.pq.compute())
        per_class: dict[str, dict[str, Any]] = results["per_class"]
        if self.semantic is not None:
            semantic = self.semantic.compute()
            for cat_id, entry in semantic.pop("per_class").items():
                per_class[cat_id]["iou"] = entry["iou"]
            results["semantic"] = semantic
        if self.mask_ap is not None:
            mask_ap = self.mask_ap.compute()
            for cat_id, entry in mask_ap.pop("per_class").items():
                per_class[cat_id]["ap"] = entry["ap"]
            results["mask_ap"] = mask_ap
        return results


def format_summary(metrics: dict[str, Any], percent: float = 100.0) -> str:
    """Lines for the ``semantic`` / ``mask_ap`` summaries present in ``metrics`` ("" if none)."""
    lines = []
    semantic = metrics.get("semantic")
    if semantic is not None:
        lines.append(
            f"Semantic  | mIoU {semantic['miou'] * percent:6.2f}  fwIoU "
            f"{semantic['fwiou'] * percent:6.2f}  mAcc {semantic['macc'] * percent:6.2f}  "
            f"pixel acc {semantic['pixel_accuracy'] * percent:6.2f}  ({semantic['n']} classes)"
        )
    mask_ap = metrics.get("mask_ap")
    if mask_ap is not None:
        names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        keys = ("ap", "ap50", "ap75", "aps", "apm", "apl")
        values = "  ".join(f"{n} {_ap_text(mask_ap[k], percent)}" for n, k in zip(names, keys))
        lines.append(f"Mask AP   | {values}  ({mask_ap['n']} thing classes)")
    return "\n".join(lines)


def _ap_text(value: float, percent: float) -> str:
    """An AP in percent, or ``-`` where COCOeval had nothing to score (-1)."""
    return f"{value * percent:6.2f}" if value >= 0 else f"{'-':>6s}"
