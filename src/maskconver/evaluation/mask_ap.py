"""Mask AP of the thing segments of panoptic outputs, scored by pycocotools ``COCOeval``.

Each image's thing segments become COCO instance annotations with RLE masks
(``pycocotools.mask.encode``): ground-truth segments with ``iscrowd`` (COCOeval ignores a
detection matched to a crowd region instead of counting it as a false positive, and never counts
a missed crowd region), predicted segments with their ``score``. Stuff segments, void and
ground-truth ids absent from ``segments_info`` take no part. The numbers are COCOeval's
``iouType="segm"`` summary with its defaults (IoU 0.50:0.05:0.95, 101 recall points, at most 100
detections per image and category, small/medium/large at 32^2 and 96^2 pixels).

Where COCOeval has nothing to score it reports -1, and so does this module: a category without
ground truth is left out of the averages; AP is -1 when no category has ground truth (a stuff-only
dataset, no images) and APs/APm/APl are -1 when no ground truth falls in that size range.
Ground truth without any prediction scores 0.

Only RLEs are kept (one compressed mask per segment), never the maps. The state is the list of
per-image records, so ranks or workers merge by concatenation; ``order`` fixes the image order
(COCOeval breaks score ties by image order) independently of how images were split.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskconver.data.types import Category, CategorySet, SegmentInfo

MISSING = -1.0  # COCOeval's value where there is no ground truth to score
SUMMARY_KEYS = ("ap", "ap50", "ap75", "aps", "apm", "apl")  # COCOeval.stats[0:6]
ALL_AREAS = 0  # COCOeval area-range index of "all"
MAX_DETS_INDEX = -1  # COCOeval maxDets index of 100 detections


@dataclass
class ImageRecord:
    """One image's thing segments as RLEs (picklable: merged across ranks and workers).

    Attributes:
        order: sort key of the image (COCOeval breaks score ties by image order).
        height: map height.
        width: map width.
        gt: ``(category_id, iscrowd, area, rle)`` per ground-truth thing segment.
        pred: ``(category_id, score, area, rle)`` per predicted thing segment.
    """

    order: int
    height: int
    width: int
    gt: list[tuple[int, bool, int, dict[str, Any]]] = field(default_factory=list)
    pred: list[tuple[int, float, int, dict[str, Any]]] = field(default_factory=list)


class MaskAP:
    """Accumulates thing-segment RLEs image by image; ``compute`` runs ``COCOeval`` once.

    Args:
        categories: the dataset categories (only ``isthing`` ones are evaluated).
        verbose: let COCOeval print its progress and summary table.
    """

    def __init__(
        self, categories: CategorySet | Sequence[Category], *, verbose: bool = False
    ) -> None:
        cats = categories.categories if isinstance(categories, CategorySet) else list(categories)
        self.categories: list[Category] = sorted(cats, key=lambda c: c.id)
        self.things = [c for c in self.categories if c.isthing]
        self._isthing = {c.id: c.isthing for c in self.categories}
        self.verbose = verbose
        self._records: list[ImageRecord] = []

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._records = []

    def state(self) -> list[ImageRecord]:
        """The per-image records (a shallow copy of the list)."""
        return list(self._records)

    def load_state(self, state: Sequence[ImageRecord]) -> None:
        """Replace the records (e.g. with every rank's records, gathered)."""
        self._records = list(state)

    def merge_state(self, state: Sequence[ImageRecord]) -> None:
        """Append another accumulator's records."""
        self._records.extend(state)

    def update(
        self,
        gt_panoptic: np.ndarray,
        gt_segments: Sequence[SegmentInfo],
        pred_panoptic: np.ndarray,
        pred_segments: Sequence[SegmentInfo],
        *,
        image_id: int | str | None = None,
        order: int | None = None,
    ) -> None:
        """Add one image.

        Args:
            gt_panoptic: ``[H, W]`` integer gt segment ids.
            gt_segments: the gt segments (``id``, ``category_id``, ``iscrowd``).
            pred_panoptic: ``[H, W]`` integer predicted segment ids.
            pred_segments: the predicted segments (``id``, ``category_id``, ``score``).
            image_id: named in error messages.
            order: the image's place in the dataset (default: after every image so far).

        Raises:
            ValueError: shapes differ or a category is unknown.
        """
        where = f"image {image_id}" if image_id is not None else "image"
        gt, pred = np.asarray(gt_panoptic), np.asarray(pred_panoptic)
        if gt.ndim != 2 or gt.shape != pred.shape:
            raise ValueError(
                f"{where}: gt map {gt.shape} and prediction map {pred.shape} must be equal [H, W]"
            )
        gt_things = self._things_of(gt_segments, f"{where} (ground truth)")
        pred_things = self._things_of(pred_segments, f"{where} (prediction)")
        height, width = gt.shape
        record = ImageRecord(
            order=len(self._records) if order is None else order, height=height, width=width
        )
        for seg, rle, area in zip(gt_things, *_encode(gt, gt_things)):
            record.gt.append((seg.category_id, bool(seg.iscrowd), area, rle))
        for seg, rle, area in zip(pred_things, *_encode(pred, pred_things)):
            if area > 0:  # a listed segment absent from the map cannot be matched: dropped
                record.pred.append((seg.category_id, float(seg.score), area, rle))
        self._records.append(record)

    def _things_of(self, segments: Sequence[SegmentInfo], what: str) -> list[SegmentInfo]:
        things = []
        for seg in segments:
            isthing = self._isthing.get(seg.category_id)
            if isthing is None:
                raise ValueError(
                    f"{what}: segment {seg.id} has unknown category_id {seg.category_id}"
                )
            if isthing:
                things.append(seg)
        return things

    def compute(self) -> dict:
        """COCOeval's segm summary (fractions in [0, 1], -1 where nothing can be scored).

        Returns:
            ``{"ap", "ap50", "ap75", "aps", "apm", "apl", "n", "per_class": {"<category_id>":
            {"name", "ap"}}}`` over the thing categories; ``n`` counts the categories with
            ground truth (those averaged).
        """
        empty = {key: MISSING for key in SUMMARY_KEYS}
        per_class = {str(c.id): {"name": c.name, "ap": MISSING} for c in self.things}
        if not self.things or not self._records:
            return {**empty, "n": 0, "per_class": per_class}
        gt_coco, pred_coco = self._coco_sets()
        evaluator = COCOeval(gt_coco, pred_coco, iouType="segm")
        quiet = (
            contextlib.nullcontext() if self.verbose else contextlib.redirect_stdout(io.StringIO())
        )
        with quiet:
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        summary = {key: float(v) for key, v in zip(SUMMARY_KEYS, evaluator.stats)}
        # precision: [iou thresholds, recall points, categories (sorted ids), areas, max dets]
        precision = evaluator.eval["precision"][:, :, :, ALL_AREAS, MAX_DETS_INDEX]
        evaluated = 0
        for k, cat_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k]
            values = values[values > MISSING]
            if values.size:
                per_class[str(cat_id)]["ap"] = float(values.mean())
                evaluated += 1
        return {**summary, "n": evaluated, "per_class": per_class}

    def _coco_sets(self) -> tuple[COCO, COCO]:
        """In-memory ground-truth and detection ``COCO`` objects (image ids 0..N-1 by order)."""
        images: list[dict[str, Any]] = []
        gt_anns: list[dict[str, Any]] = []
        pred_anns: list[dict[str, Any]] = []
        records = sorted(self._records, key=lambda r: r.order)  # stable: ties keep their order
        for image_id, record in enumerate(records):
            images.append({"id": image_id, "height": record.height, "width": record.width})
            for category_id, iscrowd, area, rle in record.gt:
                gt_anns.append(
                    {
                        "id": len(gt_anns) + 1,  # COCOeval treats id 0 as "no match"
                        "image_id": image_id,
                        "category_id": category_id,
                        "segmentation": rle,
                        "area": area,
                        "iscrowd": int(iscrowd),
                    }
                )
            for category_id, score, area, rle in record.pred:
                pred_anns.append(
                    {
                        "id": len(pred_anns) + 1,
                        "image_id": image_id,
                        "category_id": category_id,
                        "segmentation": rle,
                        "area": area,
                        "score": score,
                        "iscrowd": 0,
                    }
                )
        categories = [{"id": c.id, "name": c.name} for c in self.things]
        return _coco(images, gt_anns, categories), _coco(images, pred_anns, categories)


def _coco(images: list[dict], annotations: list[dict], categories: list[dict]) -> COCO:
    """A ``COCO`` index over in-memory lists (``loadRes`` refuses an empty detection list)."""
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):  # "creating index..."
        coco.createIndex()
    return coco


def _encode(
    panoptic: np.ndarray, segments: Sequence[SegmentInfo]
) -> tuple[list[dict[str, Any]], list[int]]:
    """Compressed RLEs and pixel areas of the given segments of a ``[H, W]`` id map.

    COCO RLE counts alternate zeros and ones in column-major order. The map is cut once into
    runs of equal ids in that order; a segment's counts are the gaps between its runs and their
    lengths, so no ``[H, W]`` mask is built per segment (``mask.encode`` on one boolean mask per
    segment costs about 30 times more on COCO-sized maps). ``frPyObjects`` compresses the counts.
    """
    if not segments:
        return [], []
    height, width = panoptic.shape
    flat = np.ascontiguousarray(panoptic.T).reshape(-1)  # column-major pixel order
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    ends = np.append(starts[1:], flat.size)
    values = flat[starts]
    order = np.argsort(values, kind="stable")  # runs grouped by id, in pixel order per id
    sorted_values = values[order]
    rles, areas = [], []
    for seg in segments:
        lo, hi = np.searchsorted(sorted_values, [seg.id, seg.id + 1])
        runs = order[lo:hi]
        run_starts, run_ends = starts[runs], ends[runs]
        counts = np.empty(2 * len(runs) + 1, dtype=np.int64)
        counts[0:-1:2] = run_starts - np.concatenate([[0], run_ends[:-1]])  # zeros before a run
        counts[1::2] = run_ends - run_starts  # the run
        counts[-1] = flat.size - (run_ends[-1] if len(runs) else 0)  # trailing zeros
        if counts[-1] == 0 and len(runs):
            counts = counts[:-1]  # as mask.encode writes it: no empty trailing run
        uncompressed = {"size": [height, width], "counts": counts.tolist()}
        rle = mask_utils.frPyObjects(uncompressed, height, width)
        rles.append(rle)
        areas.append(int(counts[1::2].sum()))
    return rles, areas
