"""Semantic-segmentation IoU of panoptic outputs, accumulated in an int64 confusion matrix.

Every pixel of a panoptic map gets the category of its segment, so a panoptic prediction is
also a semantic one. The rules, fixed here once:

* ground-truth void (id 0), padding (-1) and ids absent from ``segments_info`` have no
  category: those pixels are ignored (detectron2's ``SemSegEvaluator`` ``ignore_label``,
  mmsegmentation's ``ignore_index``);
* crowd segments are labelled with their category like any other segment (a semantic label
  does not know instances; panopticapi's ``panoptic2semantic_segmentation`` converter does the
  same);
* a predicted void pixel on a labelled ground-truth pixel is a miss of that class: it counts in
  the class's ground-truth pixels but in no class's predicted pixels (semantic evaluators never
  see void predictions; dropping them would reward leaving pixels unlabelled);
* per class ``IoU = tp / (gt + pred - tp)`` over the whole dataset (one confusion matrix, not a
  mean of per-image IoUs); ``miou`` averages the classes that occur in the ground truth **or**
  the prediction (``gt + pred - tp > 0``: mmsegmentation's ``nanmean`` rule; detectron2 averages
  only classes with ground-truth pixels, so a class that is only ever predicted costs its false
  positives here but not there); ``fwiou`` weights each IoU by the class's share of ground-truth
  pixels; ``pixel_accuracy = sum(tp) / sum(gt)``; ``macc`` is the mean per-class accuracy
  ``tp / gt`` over classes with ground truth.

A split without any evaluable class reports zeros and ``n = 0``, as ``PanopticQuality`` does.

The state is the int64 ``[C + 1, C + 1]`` matrix (rows ground truth, columns prediction, index
``C`` void), so a distributed run reduces it with one ``all_reduce(SUM)`` and ``load_state``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maskconver.data.types import PADDING, VOID, Category, CategorySet, SegmentInfo


class SemanticIoU:
    """Accumulates the semantic confusion matrix of panoptic maps image by image.

    Args:
        categories: the evaluated categories (dataset ids; things and stuff alike).
    """

    def __init__(self, categories: CategorySet | Sequence[Category]) -> None:
        cats = categories.categories if isinstance(categories, CategorySet) else list(categories)
        if not cats:
            raise ValueError("SemanticIoU needs at least one category")
        ids = [c.id for c in cats]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate category ids: {sorted(ids)}")
        self.categories: list[Category] = sorted(cats, key=lambda c: c.id)
        self._index = {c.id: k for k, c in enumerate(self.categories)}
        size = len(self.categories) + 1
        self._confusion = np.zeros((size, size), dtype=np.int64)

    @property
    def void_index(self) -> int:
        """Row/column of void (unlabelled) pixels: the number of categories."""
        return len(self.categories)

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._confusion[:] = 0

    def state(self) -> torch.Tensor:
        """A copy of the confusion matrix: int64 ``[C + 1, C + 1]`` (rows gt, columns pred)."""
        return torch.from_numpy(self._confusion.copy())

    def load_state(self, state: torch.Tensor | np.ndarray) -> None:
        """Replace the matrix (e.g. with the ``all_reduce(SUM)`` of every rank's state)."""
        self._confusion = self._check_state(state).copy()

    def merge_state(self, state: torch.Tensor | np.ndarray) -> None:
        """Add another accumulator's matrix (same categories) to this one."""
        self._confusion += self._check_state(state)

    def _check_state(self, state: torch.Tensor | np.ndarray) -> np.ndarray:
        arr = state.detach().cpu().numpy() if isinstance(state, torch.Tensor) else state
        arr = np.asarray(arr)
        if arr.shape != self._confusion.shape or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"semantic state has shape {tuple(arr.shape)} and dtype {arr.dtype}, expected "
                f"integers of shape {self._confusion.shape} ([num_categories + 1] squared)"
            )
        return arr.astype(np.int64, copy=False)

    def update(
        self,
        gt_panoptic: np.ndarray,
        gt_segments: Sequence[SegmentInfo],
        pred_panoptic: np.ndarray,
        pred_segments: Sequence[SegmentInfo],
        *,
        image_id: int | str | None = None,
    ) -> None:
        """Add one image.

        Args:
            gt_panoptic: ``[H, W]`` integer gt segment ids (0 void, -1 padding).
            gt_segments: the gt segments (``id``, ``category_id``); ids of the map that are not
                listed are ignored like void.
            pred_panoptic: ``[H, W]`` integer predicted segment ids (0 and -1 unlabelled).
            pred_segments: the segments of ``pred_panoptic``.
            image_id: named in error messages.

        Raises:
            ValueError: shapes differ, a category is unknown, or a predicted id of the map has
                no entry in ``pred_segments``.
        """
        where = f"image {image_id}" if image_id is not None else "image"
        gt, pred = np.asarray(gt_panoptic), np.asarray(pred_panoptic)
        if gt.ndim != 2 or gt.shape != pred.shape:
            raise ValueError(
                f"{where}: gt map {gt.shape} and prediction map {pred.shape} must be equal [H, W]"
            )
        for arr, what in ((gt, "gt_panoptic"), (pred, "pred_panoptic")):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{where}: {what} must hold integer ids, got dtype {arr.dtype}")
        gt_flat, pred_flat = gt.reshape(-1), pred.reshape(-1)
        starts = _run_starts(gt_flat, pred_flat)
        lengths = np.diff(starts, append=gt_flat.size)
        gt_label = self._labels(gt_flat[starts], gt_segments, f"{where} (ground truth)")
        pred_label = self._labels(pred_flat[starts], pred_segments, f"{where} (prediction)")
        unknown = pred_label < 0
        if unknown.any():
            bad = np.unique(pred_flat[starts][unknown])[:10].tolist()
            raise ValueError(f"{where}: predicted segment ids {bad} are not in segments_info")
        gt_label[gt_label < 0] = self.void_index  # unlisted gt ids: no category, ignored
        size = self.void_index + 1
        counts = np.bincount(gt_label * size + pred_label, weights=lengths, minlength=size * size)
        self._confusion += counts.reshape(size, size).astype(np.int64)  # exact: sums < 2^53

    def _labels(self, ids: np.ndarray, segments: Sequence[SegmentInfo], what: str) -> np.ndarray:
        """Category index of every id ``[R]``: void/padding -> C, unlisted ids -> -1."""
        seg_ids = np.array([s.id for s in segments], dtype=np.int64)
        classes = np.empty(len(segments), dtype=np.int64)
        for k, seg in enumerate(segments):
            index = self._index.get(seg.category_id)
            if index is None:
                raise ValueError(
                    f"{what}: segment {seg.id} has unknown category_id {seg.category_id}"
                )
            classes[k] = index
        order = np.argsort(seg_ids, kind="stable")
        seg_ids, classes = seg_ids[order], classes[order]
        if len(seg_ids) > 1 and (np.diff(seg_ids) == 0).any():
            raise ValueError(f"{what}: duplicate segment ids in segments_info")
        values = ids.astype(np.int64)
        labels = np.full(len(values), -1, dtype=np.int64)
        if len(seg_ids):
            pos = np.minimum(np.searchsorted(seg_ids, values), len(seg_ids) - 1)
            found = seg_ids[pos] == values
            labels[found] = classes[pos[found]]
        labels[(values == VOID) | (values == PADDING)] = self.void_index
        return labels

    def compute(self) -> dict:
        """Summary and per-class IoU (fractions in [0, 1]).

        Returns:
            ``{"miou", "fwiou", "macc", "pixel_accuracy", "n", "per_class": {"<category_id>":
            {"name", "iou", "gt_pixels", "pred_pixels"}}}``; ``n`` counts the classes averaged
            by ``miou``; a class that is in neither ground truth nor prediction has IoU 0 there.
        """
        void = self.void_index
        labelled = self._confusion[:void].astype(np.float64)  # rows of labelled gt pixels
        tp = np.diagonal(labelled[:, :void]).copy()
        gt = labelled.sum(axis=1)  # predicted void included: a miss
        pred = labelled[:, :void].sum(axis=0)
        union = gt + pred - tp
        valid = union > 0
        iou = np.zeros_like(tp)
        np.divide(tp, union, out=iou, where=valid)
        has_gt = gt > 0
        acc = np.zeros_like(tp)
        np.divide(tp, gt, out=acc, where=has_gt)
        total = gt.sum()
        summary = {
            "miou": float(iou[valid].mean()) if valid.any() else 0.0,
            "fwiou": float((gt * iou).sum() / total) if total > 0 else 0.0,
            "macc": float(acc[has_gt].mean()) if has_gt.any() else 0.0,
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else 0.0,
            "n": int(valid.sum()),
        }
        per_class = {
            str(cat.id): {
                "name": cat.name,
                "iou": float(iou[k]),
                "gt_pixels": int(gt[k]),
                "pred_pixels": int(pred[k]),
            }
            for k, cat in enumerate(self.categories)
        }
        return {**summary, "per_class": per_class}


def _run_starts(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """First index of every run of equal (gt, pred) ids in ``[N]`` flat maps: ``[R]`` intp.

    Panoptic maps are piecewise constant, so there are far fewer runs than pixels and every id is
    looked up once per run instead of once per pixel.
    """
    if gt.size == 0:
        return np.zeros(0, dtype=np.intp)
    change = (gt[1:] != gt[:-1]) | (pred[1:] != pred[:-1])
    return np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.intp)
