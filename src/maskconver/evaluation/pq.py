"""Panoptic Quality with exactly the semantics of COCO panopticapi ``pq_compute``.

The rules reproduced from ``pq_compute_single_core`` (panopticapi/evaluation.py):

* ground-truth id 0 is VOID; a prediction's overlap with VOID is removed from the union;
* a (gt, pred) pair matches when the categories agree, the gt segment is not crowd and
  ``IoU = inter / (pred_area + gt_area - inter - void_overlap(pred)) > 0.5``;
* every unmatched non-crowd gt segment is a false negative (crowd segments never are);
* an unmatched prediction is ignored when more than half of its pixels lie on VOID plus the
  crowd segment of its own category (panopticapi keeps the *last* crowd segment of each category
  in ``segments_info`` order), otherwise it is a false positive;
* per class ``PQ = iou_sum / (tp + fp/2 + fn/2)``, ``SQ = iou_sum / tp``, ``RQ = tp / (tp + fp/2 +
  fn/2)``; categories with ``tp + fp + fn == 0`` are left out of the averages.

Instead of panopticapi's two ``np.unique`` sorts and per-pair Python loop, every image is reduced
to one small intersection matrix ``[num_gt + 2, num_pred + 1]`` (rows: void, gt segments, unknown
gt ids; columns: void, pred segments): each id is sent to a small index, and one ``bincount`` over
(gt index, pred index) pairs counts every intersection. Maps are piecewise constant, so pixels are
first grouped into runs of equal (gt, pred) ids in raster order (a few thousand per image instead
of ~10^5 pixels): only each run's ids are looked up (``searchsorted``) and the ``bincount`` is
weighted by run lengths. Maps with too many runs (noise) are indexed pixel by pixel through a
perfect hash of the image's few segment ids (verified pixel by pixel, so unknown ids are caught,
never aliased). Matching is then a vectorised test on that matrix; IoU values are the same IEEE
divisions of the same integers as panopticapi's, so results agree to rounding of the final sums.

The state is a float64 ``[num_categories, 4]`` tensor (iou_sum, tp, fp, fn), so a distributed run
reduces it with a single ``all_reduce(SUM)`` and ``load_state``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from maskconver.data.types import PADDING, VOID, Category, CategorySet, SegmentInfo

MATCH_IOU = 0.5  # a pair matches when IoU is strictly greater than this
IGNORE_FRACTION = 0.5  # an unmatched prediction more than this much on void + crowd is ignored
STATE_COLUMNS = ("iou_sum", "tp", "fp", "fn")
MAX_ID = 2**32 - 2  # ids are handled as uint32; 2^32 - 1 is the unknown-id sentinel
UNKNOWN_SENTINEL = 2**32 - 1
UINT32_MASK = 2**32 - 1
HASH_LOAD = 4  # at least this many hash slots per id (and so always an empty slot)
HASH_EXTRA_BITS = 8  # table doublings tried before giving up on an injective hash
MAX_PAIR_BITS = 20  # a joint (gt slot, pred slot) histogram of at most 2^20 bins
MAX_RUN_FRACTION = 0.25  # runs of equal (gt, pred) ids are counted when at most this many/pixel
HASH_SEED = 20240101  # fixed: the hash (not the result) would otherwise vary between runs
# odd 32-bit multipliers for multiplicative hashing: 2^32 / golden ratio, then fixed random ones
HASH_MULTIPLIERS = (2654435769, *(np.random.default_rng(HASH_SEED).integers(1, 2**31, 31) * 2 + 1))
_IOU, _TP, _FP, _FN = range(len(STATE_COLUMNS))


class PanopticQuality:
    """Accumulates PQ statistics image by image (COCO panopticapi semantics).

    Args:
        categories: the evaluated categories (dataset ids, ``isthing`` decides the split).
    """

    def __init__(self, categories: CategorySet | list[Category]) -> None:
        cats = categories.categories if isinstance(categories, CategorySet) else list(categories)
        if not cats:
            raise ValueError("PanopticQuality needs at least one category")
        ids = [c.id for c in cats]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate category ids: {sorted(ids)}")
        self.categories: list[Category] = sorted(cats, key=lambda c: c.id)
        self._row = {c.id: i for i, c in enumerate(self.categories)}
        self._stats = np.zeros((len(self.categories), len(STATE_COLUMNS)), dtype=np.float64)
        self._work = _Workspace()

    @property
    def num_categories(self) -> int:
        """Number of evaluated categories (rows of the state)."""
        return len(self.categories)

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._stats[:] = 0.0

    def state(self) -> torch.Tensor:
        """A copy of the statistics: float64 ``[num_categories, 4]`` (iou_sum, tp, fp, fn)."""
        return torch.from_numpy(self._stats.copy())

    def load_state(self, state: torch.Tensor | np.ndarray) -> None:
        """Replace the statistics (e.g. with the ``all_reduce(SUM)`` of every rank's state)."""
        self._stats = self._check_state(state).copy()

    def merge_state(self, state: torch.Tensor | np.ndarray) -> None:
        """Add another accumulator's statistics (same categories) to this one."""
        self._stats += self._check_state(state)

    def _check_state(self, state: torch.Tensor | np.ndarray) -> np.ndarray:
        arr = state.detach().cpu().numpy() if isinstance(state, torch.Tensor) else state
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != self._stats.shape:
            raise ValueError(
                f"PQ state has shape {tuple(arr.shape)}, expected {self._stats.shape} "
                f"([num_categories, {len(STATE_COLUMNS)}])"
            )
        return arr

    def update(
        self,
        gt_panoptic: np.ndarray,
        gt_segments: Sequence[SegmentInfo],
        pred_panoptic: np.ndarray,
        pred_segments: Sequence[SegmentInfo],
        *,
        image_id: int | str | None = None,
        use_segment_area: bool = False,
    ) -> None:
        """Add one image.

        Args:
            gt_panoptic: ``[H, W]`` integer gt segment ids (0 void; -1 padding counts as void).
            gt_segments: the gt segments (``id``, ``category_id``, ``iscrowd``; ``area`` only
                with ``use_segment_area``). Gt ids absent from ``gt_segments`` are, as in
                panopticapi, neither void nor matchable.
            pred_panoptic: ``[H, W]`` integer predicted segment ids (0 void, -1 as void).
            pred_segments: exactly the segments present in ``pred_panoptic``.
            image_id: named in error messages.
            use_segment_area: take gt areas from ``SegmentInfo.area`` (panopticapi reads them from
                the JSON) instead of counting pixels of ``gt_panoptic``.

        Raises:
            ValueError: shapes differ, unknown categories, duplicate ids, or predicted ids that
                are in the map but not in ``pred_segments`` (or the other way around).
        """
        where = f"image {image_id}" if image_id is not None else "image"
        gt = _flat_ids(gt_panoptic, f"{where}: gt_panoptic")
        pred = _flat_ids(pred_panoptic, f"{where}: pred_panoptic")
        if np.shape(gt_panoptic) != np.shape(pred_panoptic):
            raise ValueError(
                f"{where}: gt map {np.shape(gt_panoptic)} and prediction map "
                f"{np.shape(pred_panoptic)} differ in shape"
            )
        gt_ids, gt_rows = self._segment_table(gt_segments, f"{where}: ground truth")
        pred_ids, pred_rows = self._segment_table(pred_segments, f"{where}: prediction")
        num_gt, num_pred = len(gt_ids), len(pred_ids)

        # [num_gt + 2, num_pred + 1] pixel counts; rows: void, gt segments (sorted ids), unknown
        # gt ids; columns: void, pred segments (sorted ids)
        inter_all, pred_unknown = _intersections(gt, gt_ids, pred, pred_ids, self._work)
        if pred_unknown:
            bad = np.setdiff1d(np.unique(pred), np.append(pred_ids, VOID))[:10].tolist()
            raise ValueError(
                f"{where}: predicted segment ids {bad} are in the PNG/map but not in segments_info"
            )
        pred_area = inter_all[:, 1:].sum(axis=0)  # [num_pred]
        if (pred_area == 0).any():
            missing = pred_ids[pred_area == 0][:10].tolist()
            raise ValueError(
                f"{where}: predicted segment ids {missing} are in segments_info but not in the "
                "PNG/map"
            )
        if use_segment_area:
            gt_area = np.array([s.area for s in _sorted_by_id(gt_segments)], dtype=np.int64)
        else:
            gt_area = inter_all[1 : num_gt + 1].sum(axis=1)
        void_overlap = inter_all[VOID, 1:]  # [num_pred]
        inter = inter_all[1 : num_gt + 1, 1:]  # [num_gt, num_pred]
        gt_crowd = np.array([bool(s.iscrowd) for s in _sorted_by_id(gt_segments)], dtype=bool)

        # matching: same category, gt not crowd, IoU > 0.5 (unique by construction)
        union = pred_area[None, :] + gt_area[:, None] - inter - void_overlap[None, :]
        candidate = (gt_rows[:, None] == pred_rows[None, :]) & ~gt_crowd[:, None] & (inter > 0)
        iou = np.zeros(inter.shape, dtype=np.float64)
        np.divide(inter, union, out=iou, where=candidate & (union > 0))
        matched = candidate & (iou > MATCH_IOU)
        gt_hit, pred_hit = matched.any(axis=1), matched.any(axis=0)
        num_rows = self.num_categories
        stats = np.zeros_like(self._stats)
        stats[:, _TP] = np.bincount(gt_rows[gt_hit], minlength=num_rows)
        stats[:, _IOU] = np.bincount(
            gt_rows[gt_hit], weights=(iou * matched).sum(axis=1)[gt_hit], minlength=num_rows
        )
        stats[:, _FN] = np.bincount(gt_rows[~gt_hit & ~gt_crowd], minlength=num_rows)

        # unmatched predictions: ignored when > 50 % on void + the crowd of their category
        crowd_of_row = np.full(num_rows, -1, dtype=np.int64)
        for seg in gt_segments:  # input order: the last crowd segment wins
            if seg.iscrowd:
                crowd_of_row[self._row[seg.category_id]] = int(np.searchsorted(gt_ids, seg.id))
        crowd = crowd_of_row[pred_rows]
        crowd_overlap = np.where(
            crowd >= 0, inter[np.maximum(crowd, 0), np.arange(num_pred)] if num_gt else 0, 0
        )
        ignored = (void_overlap + crowd_overlap) / pred_area > IGNORE_FRACTION
        stats[:, _FP] = np.bincount(pred_rows[~pred_hit & ~ignored], minlength=num_rows)
        self._stats += stats

    def _segment_table(
        self, segments: Sequence[SegmentInfo], what: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted segment ids ``[S]`` and their category rows ``[S]``; validates the list."""
        ordered = _sorted_by_id(segments)
        ids = np.array([s.id for s in ordered], dtype=np.int64)
        if len(ids) and ids[0] <= VOID:
            raise ValueError(f"{what}: segment id {int(ids[0])} is reserved (0 void, -1 padding)")
        if len(ids) and ids[-1] > MAX_ID:
            raise ValueError(f"{what}: segment id {int(ids[-1])} is larger than {MAX_ID}")
        if len(ids) > 1 and (np.diff(ids) == 0).any():
            dup = ids[1:][np.diff(ids) == 0][:10].tolist()
            raise ValueError(f"{what}: duplicate segment ids {dup} in segments_info")
        rows = np.empty(len(ordered), dtype=np.int64)
        for k, s in enumerate(ordered):
            row = self._row.get(s.category_id)
            if row is None:
                raise ValueError(f"{what}: segment {s.id} has unknown category_id {s.category_id}")
            rows[k] = row
        return ids, rows

    def compute(self) -> dict:
        """PQ/SQ/RQ for all/things/stuff (fractions in [0, 1]) and per class.

        Returns:
            ``{"all"|"things"|"stuff": {"pq", "sq", "rq", "n"}, "per_class": {"<category_id>":
            {"name", "pq", "sq", "rq", "tp", "fp", "fn"}}}``; a split without any evaluable
            category reports zeros and ``n = 0``.
        """
        per_class: dict[str, dict[str, object]] = {}
        scores: list[tuple[bool, float, float, float] | None] = []
        for cat, (iou, tp, fp, fn) in zip(self.categories, self._stats.tolist()):
            if tp + fp + fn == 0:
                pq = sq = rq = 0.0
                scores.append(None)
            else:
                denom = tp + 0.5 * fp + 0.5 * fn
                pq, sq, rq = iou / denom, (iou / tp if tp else 0.0), tp / denom
                scores.append((cat.isthing, pq, sq, rq))
            per_class[str(cat.id)] = {
                "name": cat.name,
                "pq": pq,
                "sq": sq,
                "rq": rq,
                "tp": int(tp),
                "fp": int(fp),
                "fn": int(fn),
            }
        return {
            "all": _average(s for s in scores if s is not None),
            "things": _average(s for s in scores if s is not None and s[0]),
            "stuff": _average(s for s in scores if s is not None and not s[0]),
            "per_class": per_class,
        }


def _average(scores: Iterable[tuple[bool, float, float, float]]) -> dict[str, float | int]:
    """Mean PQ/SQ/RQ over ``(isthing, pq, sq, rq)`` tuples, summed in order as panopticapi."""
    pq = sq = rq = 0.0
    n = 0
    for _, p, s, r in scores:
        pq, sq, rq, n = pq + p, sq + s, rq + r, n + 1
    if n == 0:
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}


def _sorted_by_id(segments: Sequence[SegmentInfo]) -> list[SegmentInfo]:
    return sorted(segments, key=lambda s: s.id)


def _flat_ids(ids: np.ndarray, what: str) -> np.ndarray:
    """``[H, W]`` integer ids -> flat ``[H * W]`` uint32, padding (-1) folded into void."""
    arr = np.asarray(ids)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected an [H, W] id map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: expected integer segment ids, got dtype {arr.dtype}")
    flat = arr.reshape(-1)
    if flat.size == 0:
        return flat.astype(np.uint32)
    low, high = int(flat.min()), int(flat.max())
    if low < PADDING or high > MAX_ID:
        bad = low if low < PADDING else high
        raise ValueError(f"{what}: segment id {bad} outside [-1 (padding), {MAX_ID}]")
    if low == PADDING:
        flat = np.where(flat == PADDING, VOID, flat)
    if flat.dtype == np.int32:
        return flat.view(np.uint32)  # non-negative now: same bits, no copy
    return flat.astype(np.uint32, copy=False)


class _SlotHash:
    """Perfect multiplicative hash of a few ids (plus void) into ``2^bits`` slots.

    ``slot(x) = (x * multiplier mod 2^32) >> (32 - bits)`` with the first multiplier and smallest
    ``bits`` that are injective on ``{0} | segment_ids``. ``slot_of_dense[k]`` is the slot of the
    k-th id (0 void, then the sorted segment ids) and ``slot_of_dense[-1]`` an empty slot, where
    unknown ids are sent after verification.
    """

    def __init__(self, segment_ids: np.ndarray) -> None:
        keys = np.concatenate([[VOID], segment_ids]).astype(np.uint32)
        base_bits = int(np.ceil(np.log2(HASH_LOAD * len(keys))))
        for bits in range(base_bits, base_bits + HASH_EXTRA_BITS):
            self.shift = np.uint32(32 - bits)
            for multiplier in HASH_MULTIPLIERS:
                self.multiplier = np.uint32(multiplier)
                slots = (keys * self.multiplier) >> self.shift  # wraps modulo 2^32
                if len(np.unique(slots)) == len(keys):
                    break
            else:
                continue
            break
        else:
            raise RuntimeError(f"no injective hash for {len(keys)} segment ids")  # never seen
        self.bits = bits
        self.key_of_slot = np.full(1 << bits, UNKNOWN_SENTINEL, dtype=np.uint32)
        self.key_of_slot[slots] = keys
        empty = int(np.argmax(self.key_of_slot == UNKNOWN_SENTINEL))  # exists: load <= 1/4
        self.slot_of_dense = np.append(slots.astype(np.intp), empty)

    def slots(self, ids: np.ndarray, out: np.ndarray, work: _Workspace) -> bool:
        """Write the slot of every id ``[N]`` (uint32) into ``out`` (``[N]`` intp).

        Returns:
            whether any id is unknown; those are moved to the empty slot, so an unknown id
            never aliases a known one.
        """
        # (ids * multiplier mod 2^32) >> shift, computed in int64 so that the slots are ready
        # to index with (products < 2^56 do not overflow)
        np.multiply(ids, np.intp(self.multiplier), out=out, dtype=np.intp)
        out &= np.intp(UINT32_MASK)
        out >>= np.intp(self.shift)
        key, known = work.key[: len(ids)], work.known[: len(ids)]
        np.take(self.key_of_slot, out, out=key)
        np.equal(key, ids, out=known)
        if known.all():
            return False
        np.copyto(out, self.slot_of_dense[-1], where=~known)
        return True


class _Workspace:
    """Per-pixel buffers reused from image to image (fresh large arrays cost page faults)."""

    def __init__(self) -> None:
        self.size = 0
        self._grow(0)

    def _grow(self, size: int) -> None:
        self.size = size
        self.gt = np.empty(size, np.intp)
        self.pred = np.empty(size, np.intp)
        self.key = np.empty(size, np.uint32)
        self.known = np.empty(size, bool)
        self.change = np.empty(size, bool)
        self.pred_change = np.empty(size, bool)

    def ensure(self, size: int) -> None:
        """Make every buffer hold at least ``size`` pixels."""
        if size > self.size:
            self._grow(size)


def _intersections(
    gt: np.ndarray, gt_ids: np.ndarray, pred: np.ndarray, pred_ids: np.ndarray, work: _Workspace
) -> tuple[np.ndarray, bool]:
    """Pixel counts of every (gt, pred) pair with one ``bincount`` over index pairs.

    Args:
        gt: ``[N]`` uint32 ground-truth ids.
        gt_ids: ``[Sg]`` sorted ground-truth segment ids.
        pred: ``[N]`` uint32 predicted ids.
        pred_ids: ``[Sp]`` sorted predicted segment ids.
        work: scratch buffers.

    Returns:
        ``[Sg + 2, Sp + 1]`` int64 counts (rows: void, gt segments, unknown gt ids; columns:
        void, pred segments) and whether ``pred`` holds ids outside ``pred_ids``.
    """
    work.ensure(len(gt))
    starts = _run_starts(gt, pred, work)
    if starts is not None:
        return _run_intersections(gt, gt_ids, pred, pred_ids, starts)
    num_gt, num_pred, size = len(gt_ids), len(pred_ids), len(gt)
    gt_hash, pred_hash = _SlotHash(gt_ids), _SlotHash(pred_ids)
    gt_slots, pred_slots = work.gt[:size], work.pred[:size]
    if pred_hash.slots(pred, pred_slots, work):
        return np.zeros((num_gt + 2, num_pred + 1), np.int64), True
    gt_hash.slots(gt, gt_slots, work)
    if gt_hash.bits + pred_hash.bits > MAX_PAIR_BITS:  # many segments: count dense pairs instead
        gt_dense = _dense_of_slot(gt_hash, num_gt + 2) * (num_pred + 1)
        np.take(gt_dense, gt_slots, out=gt_slots)
        np.take(_dense_of_slot(pred_hash, num_pred + 1), pred_slots, out=pred_slots)
        gt_slots += pred_slots
        hist = np.bincount(gt_slots, minlength=(num_gt + 2) * (num_pred + 1))
        return hist.reshape(num_gt + 2, num_pred + 1), False
    gt_slots <<= pred_hash.bits
    gt_slots |= pred_slots
    hist = np.bincount(gt_slots, minlength=1 << (gt_hash.bits + pred_hash.bits))
    hist = hist.reshape(1 << gt_hash.bits, 1 << pred_hash.bits)
    return hist[np.ix_(gt_hash.slot_of_dense, pred_hash.slot_of_dense[:-1])], False


def _run_starts(gt: np.ndarray, pred: np.ndarray, work: _Workspace) -> np.ndarray | None:
    """First pixel of every run of equal (gt, pred) ids in raster order.

    Returns ``[R]`` intp, or None when there are more than ``MAX_RUN_FRACTION`` runs per pixel
    (or fewer than 2 pixels).
    """
    size = len(gt)
    if size < 2:
        return None
    work.ensure(size)
    change, pred_change = work.change[: size - 1], work.pred_change[: size - 1]
    np.not_equal(gt[1:], gt[:-1], out=change)
    np.not_equal(pred[1:], pred[:-1], out=pred_change)
    change |= pred_change
    num_runs = 1 + int(np.count_nonzero(change))
    if num_runs > MAX_RUN_FRACTION * size:
        return None
    starts = np.empty(num_runs, np.intp)
    starts[0] = 0
    starts[1:] = np.flatnonzero(change)
    starts[1:] += 1
    return starts


def _run_intersections(
    gt: np.ndarray, gt_ids: np.ndarray, pred: np.ndarray, pred_ids: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, bool]:
    """``_intersections`` from the runs starting at ``starts``.

    One id lookup per run and a ``bincount`` weighted by run lengths (float64 sums of integers
    < 2^53: exact).
    """
    num_gt, num_pred = len(gt_ids), len(pred_ids)
    lengths = np.diff(starts, append=len(gt))
    gt_index = _dense_index(gt[starts], gt_ids)  # 0 void, 1 + k segment k, num_gt + 1 unknown
    pred_index = _dense_index(pred[starts], pred_ids)
    gt_index *= num_pred + 2
    gt_index += pred_index
    hist = np.bincount(gt_index, weights=lengths, minlength=(num_gt + 2) * (num_pred + 2))
    hist = hist.reshape(num_gt + 2, num_pred + 2)
    if hist[:, num_pred + 1].any():
        return np.zeros((num_gt + 2, num_pred + 1), np.int64), True
    return hist[:, : num_pred + 1].astype(np.int64), False


def _dense_index(values: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Dense index of ids: ``[R]`` intp.

    0 for void, ``1 + k`` for ``segment_ids[k]``, ``len(segment_ids) + 1`` for any other id
    (``segment_ids`` sorted, all > 0).
    """
    num = len(segment_ids)
    pos = np.searchsorted(segment_ids, values)
    found = segment_ids[np.minimum(pos, num - 1)] == values if num else np.zeros(len(values), bool)
    index = np.where(found, pos + 1, num + 1)
    index[values == VOID] = 0
    return index


def _dense_of_slot(slot_hash: _SlotHash, size: int) -> np.ndarray:
    """Inverse of ``slot_of_dense[:size]``: slot -> dense index (``[2^bits]`` intp)."""
    table = np.zeros(1 << slot_hash.bits, dtype=np.intp)
    table[slot_hash.slot_of_dense[:size]] = np.arange(size)
    return table
