"""PanopticQuality: hand-computed cases, state algebra, errors, and parity with hotcoco.

Hand cases use three categories: 1 "person" (thing), 2 "car" (thing), 3 "sky" (stuff).
``M`` is the map written row by row; ``IoU = inter / (pred_area + gt_area - inter - void(pred))``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from maskconver.data.panoptic_png import write_panoptic_png
from maskconver.data.types import Category, CategorySet, SegmentInfo
from maskconver.evaluation import pq as pq_module
from maskconver.evaluation.pq import PanopticQuality
from maskconver.evaluation.pq_files import evaluate_files, format_table

PERSON, CAR, SKY = 1, 2, 3
CATS = [Category(PERSON, "person", True), Category(CAR, "car", True), Category(SKY, "sky", False)]


def seg(sid: int, cat: int, crowd: bool = False) -> SegmentInfo:
    return SegmentInfo(id=sid, category_id=cat, iscrowd=crowd)


def M(*rows: str) -> np.ndarray:
    """Map from strings of space-separated ids, one string per row."""
    return np.array([[int(v) for v in r.split()] for r in rows], dtype=np.int32)


def score(gt, gt_segs, pred, pred_segs) -> dict:
    pq = PanopticQuality(CATS)
    pq.update(gt, gt_segs, pred, pred_segs, image_id="test")
    return pq.compute()


def test_true_positives_thing_and_stuff() -> None:
    gt = M("1 1 1 2 2 2", "1 1 1 2 2 2", "1 1 1 2 2 2", "1 1 1 2 2 2")
    pred = M("5 5 5 5 6 6", "5 5 5 5 6 6", "5 5 5 5 6 6", "5 5 5 5 6 6")
    out = score(gt, [seg(1, PERSON), seg(2, SKY)], pred, [seg(5, PERSON), seg(6, SKY)])
    # person: inter(1,5)=12, union=16+12-12=16 -> IoU 3/4, TP -> PQ=SQ=3/4, RQ=1
    # sky: inter(2,6)=8, union=8+12-8=12 -> IoU 2/3, TP -> PQ=SQ=2/3
    # car: nothing anywhere -> excluded from every average
    assert out["per_class"]["1"] == {
        "name": "person",
        "pq": 0.75,
        "sq": 0.75,
        "rq": 1.0,
        "tp": 1,
        "fp": 0,
        "fn": 0,
    }
    assert out["per_class"]["3"]["pq"] == pytest.approx(2 / 3, abs=1e-15)
    assert out["per_class"]["2"] == {
        "name": "car",
        "pq": 0.0,
        "sq": 0.0,
        "rq": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
    }
    assert out["all"] == pytest.approx(
        {"pq": (0.75 + 2 / 3) / 2, "sq": (0.75 + 2 / 3) / 2, "rq": 1.0, "n": 2}
    )
    assert out["things"] == {"pq": 0.75, "sq": 0.75, "rq": 1.0, "n": 1}
    assert out["stuff"]["n"] == 1 and out["stuff"]["pq"] == pytest.approx(2 / 3, abs=1e-15)


def test_wrong_class_is_one_fn_and_one_fp() -> None:
    gt = M("1 1 2 2", "1 1 2 2")
    pred = M("5 5 6 6", "5 5 6 6")
    out = score(gt, [seg(1, PERSON), seg(2, SKY)], pred, [seg(5, CAR), seg(6, SKY)])
    # person gt 1 has no same-class prediction -> FN; car pred 5 (0 void, no crowd) -> FP
    # person: tp0 fp0 fn1 -> PQ 0; car: tp0 fp1 fn0 -> PQ 0; sky: IoU 1 -> PQ 1
    assert out["per_class"]["1"]["fn"] == 1 and out["per_class"]["1"]["pq"] == 0.0
    assert out["per_class"]["2"]["fp"] == 1 and out["per_class"]["2"]["pq"] == 0.0
    assert out["all"] == {"pq": 1 / 3, "sq": 1 / 3, "rq": 1 / 3, "n": 3}
    assert out["things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}


def test_fp_and_fn_counts_in_rq() -> None:
    gt = M("1 1 0 0", "1 1 0 4", "0 0 0 4")
    pred = M("5 5 0 0", "5 5 0 0", "7 7 0 0")
    out = score(gt, [seg(1, PERSON), seg(4, PERSON)], pred, [seg(5, PERSON), seg(7, PERSON)])
    # gt 1 (4 px) vs pred 5 (4 px): IoU 1 -> TP. gt 4 (2 px): no overlap -> FN.
    # pred 7 (2 px) lies on void 2/2 = 1 > 0.5 -> ignored, not FP.
    # person: tp1 fp0 fn1 -> PQ = 1 / (1 + 0.5) = 2/3, SQ 1, RQ 2/3
    person = out["per_class"]["1"]
    assert (person["tp"], person["fp"], person["fn"]) == (1, 0, 1)
    assert person["pq"] == pytest.approx(2 / 3, abs=1e-15) and person["sq"] == 1.0


def test_void_is_removed_from_the_union() -> None:
    gt = M("0 0 1 1", "0 0 1 1")
    pred = M("5 5 5 5", "5 5 5 5")
    out = score(gt, [seg(1, PERSON)], pred, [seg(5, PERSON)])
    # inter 4, pred area 8, gt area 4, void(pred) 4 -> union 8+4-4-4 = 4 -> IoU 1
    assert out["per_class"]["1"]["pq"] == 1.0 and out["per_class"]["1"]["tp"] == 1


def test_prediction_mostly_on_void_is_not_fp_but_half_is() -> None:
    gt = M("0 0 0 2", "0 0 0 2", "2 2 2 2")
    mostly = M("5 5 5 5", "0 0 0 0", "0 0 0 0")  # pred 5: 4 px, 3 on void -> 3/4 > 1/2: ignored
    half = M("5 5 0 0", "0 0 0 5", "0 0 0 5")  # pred 5: 4 px, 2 on void -> 2/4 not > 1/2: FP
    gts = [seg(2, SKY)]
    out = score(gt, gts, mostly, [seg(5, CAR)])
    assert out["per_class"]["2"]["fp"] == 0
    out = score(gt, gts, half, [seg(5, CAR)])
    assert out["per_class"]["2"]["fp"] == 1
    # sky gt 2 (6 px) is never matched -> FN in both
    assert out["per_class"]["3"]["fn"] == 1


def test_crowd_region_of_same_class_ignores_prediction_and_is_never_fn() -> None:
    gt = M("9 9 9 2", "9 9 9 2", "2 2 2 2")
    pred = M("5 5 5 5", "0 0 0 0", "0 0 0 0")
    gts = [seg(9, PERSON, crowd=True), seg(2, SKY)]
    # pred 5 (4 px): 3 px on the person crowd 9, 1 on sky -> (0 void + 3 crowd)/4 > 1/2
    out = score(gt, gts, pred, [seg(5, PERSON)])
    assert out["per_class"]["1"] == {
        "name": "person",
        "pq": 0.0,
        "sq": 0.0,
        "rq": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
    }
    assert out["things"]["n"] == 0  # crowd alone never makes a category evaluable
    # a car on the person crowd: the crowd only covers its own class -> FP
    out = score(gt, gts, pred, [seg(5, CAR)])
    assert out["per_class"]["2"]["fp"] == 1
    # a person prediction exactly on the crowd (IoU 1) is still no TP: crowd never matches
    out = score(gt, gts, M("5 5 5 0", "5 5 5 0", "0 0 0 0"), [seg(5, PERSON)])
    assert out["per_class"]["1"]["tp"] == 0 and out["per_class"]["1"]["fp"] == 0


def test_only_last_crowd_segment_of_a_category_counts_as_panopticapi() -> None:
    gt = M("8 8 9 9", "2 2 2 2")
    gts = [seg(8, PERSON, crowd=True), seg(9, PERSON, crowd=True), seg(2, SKY)]
    # panopticapi keeps one crowd id per category: the last in segments_info order (9).
    # pred 5 on crowd 8 (2 px) + sky (1 px): crowd overlap counted = 0 -> 0/3 -> FP
    pred = M("5 5 0 0", "5 0 0 0")
    assert score(gt, gts, pred, [seg(5, PERSON)])["per_class"]["1"]["fp"] == 1
    # the same prediction on crowd 9 -> 2/3 > 1/2 -> ignored
    pred = M("0 0 5 5", "5 0 0 0")
    assert score(gt, gts, pred, [seg(5, PERSON)])["per_class"]["1"]["fp"] == 0


def test_iou_exactly_half_is_not_a_match() -> None:
    gt = M("1 1 1 1", "0 0 0 0")
    pred = M("5 5 0 0", "0 0 0 0")
    # inter 2, union 2+4-2 = 4 -> IoU 0.5, not > 0.5: gt FN, pred (0 void) FP
    person = score(gt, [seg(1, PERSON)], pred, [seg(5, PERSON)])["per_class"]["1"]
    assert (person["tp"], person["fp"], person["fn"], person["pq"]) == (0, 1, 1, 0.0)
    # one more pixel: inter 3, union 3+4-3 = 4 -> IoU 3/4 -> TP
    pred = M("5 5 5 0", "0 0 0 0")
    person = score(gt, [seg(1, PERSON)], pred, [seg(5, PERSON)])["per_class"]["1"]
    assert (person["tp"], person["fp"], person["fn"], person["pq"]) == (1, 0, 0, 0.75)


def test_padding_counts_as_void_and_json_areas_are_used_on_request() -> None:
    gt = M("-1 1 1", "-1 1 1")
    pred = M("5 5 5", "5 5 5")
    # padding is void: union 6+4-4-2 = 4 -> IoU 1
    assert score(gt, [seg(1, PERSON)], pred, [seg(5, PERSON)])["per_class"]["1"]["sq"] == 1.0
    # with use_segment_area the gt area is taken as given (panopticapi reads the JSON):
    # area 6 -> union 6+6-4-2 = 6 -> IoU 2/3
    pq = PanopticQuality(CategorySet(CATS))
    gts = [SegmentInfo(id=1, category_id=PERSON, area=6)]
    pq.update(gt, gts, pred, [seg(5, PERSON)], use_segment_area=True)
    assert pq.compute()["per_class"]["1"]["sq"] == pytest.approx(2 / 3, abs=1e-15)


def test_empty_splits_and_empty_images_do_not_crash() -> None:
    pq = PanopticQuality(CATS)
    zero = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    out = pq.compute()
    assert out["all"] == zero and out["things"] == zero and out["stuff"] == zero
    pq.update(np.zeros((3, 3), np.int32), [], np.zeros((3, 3), np.int32), [])
    assert pq.compute()["all"] == zero


def test_state_merge_load_and_reset() -> None:
    images = [
        (M("1 1 2 2"), [seg(1, PERSON), seg(2, SKY)], M("5 5 5 6"), [seg(5, PERSON), seg(6, SKY)]),
        (M("1 1 1 0"), [seg(1, CAR)], M("5 5 0 0"), [seg(5, CAR)]),
    ]
    both = PanopticQuality(CATS)
    parts = [PanopticQuality(CATS), PanopticQuality(CATS)]
    for part, image in zip(parts, images):
        both.update(*image)
        part.update(*image)
    state = both.state()
    assert state.dtype == torch.float64 and state.shape == (3, 4)
    # person: inter 2, union 3+2-2 = 3 -> IoU 2/3 TP; car: inter 2, union 2+3-2 = 3 -> 2/3 TP
    # sky: pred 6 (1 px) vs gt 2 (2 px): inter 1, union 2 -> 1/2, no match -> fp 1, fn 1
    expected = torch.tensor([[2 / 3, 1, 0, 0], [2 / 3, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.float64)
    torch.testing.assert_close(state, expected, rtol=0, atol=1e-15)
    merged = PanopticQuality(CATS)
    merged.merge_state(parts[0].state())
    merged.merge_state(parts[1].state())  # == one all_reduce(SUM)
    assert merged.compute() == both.compute()
    loaded = PanopticQuality(CATS)
    loaded.load_state(state)
    assert loaded.compute() == both.compute()
    loaded.reset()
    assert loaded.state().abs().sum() == 0
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        loaded.load_state(torch.zeros(2, 4))


@pytest.mark.parametrize(
    ("pred", "pred_segs", "message"),
    [
        (M("5 7"), [seg(5, PERSON)], r"image test: predicted segment ids \[7\] are in the PNG"),
        (M("5 5"), [seg(5, PERSON), seg(6, CAR)], r"image test: .* ids \[6\] are in segments_info"),
        (M("5 5"), [seg(5, 99)], r"image test: prediction: segment 5 has unknown category_id 99"),
        (M("5 5"), [seg(5, PERSON), seg(5, CAR)], r"duplicate segment ids \[5\]"),
        (M("5 5 5"), [seg(5, PERSON)], r"differ in shape"),
    ],
)
def test_bad_input_raises_naming_the_image(pred, pred_segs, message) -> None:
    with pytest.raises(ValueError, match=message):
        score(M("1 1"), [seg(1, PERSON)], pred, pred_segs)


@pytest.mark.parametrize(
    ("max_pair_bits", "run_length"), [(pq_module.MAX_PAIR_BITS, 1), (0, 1), (0, 20)]
)
def test_pair_counts_equal_a_brute_force_count(
    max_pair_bits: int, run_length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the intersection matrix must equal np.add.at over (row, column) of every pixel; rows: void,
    # sorted gt ids, unknown gt ids. Pixel-wise random ids are counted pixel by pixel (hashed,
    # and with max_pair_bits 0 the dense fallback); runs of 20 equal pixels go the run path
    monkeypatch.setattr(pq_module, "MAX_PAIR_BITS", max_pair_bits)
    rng = np.random.default_rng(0)
    work = pq_module._Workspace()
    for _ in range(10):
        gt_ids = np.sort(
            rng.choice(np.arange(1, MAX_PNG_ID), size=int(rng.integers(0, 200)), replace=False)
        )
        pred_ids = np.sort(
            rng.choice(np.arange(1, MAX_PNG_ID), size=int(rng.integers(0, 200)), replace=False)
        )
        num_runs = int(rng.integers(1, 3000))
        unknown = [5 * MAX_PNG_ID, 123]  # not segments: must land in the unknown row
        gt = rng.choice(np.concatenate([gt_ids, [0], unknown]), size=num_runs).astype(np.uint32)
        pred = rng.choice(np.append(pred_ids, 0), size=num_runs).astype(np.uint32)
        gt, pred = np.repeat(gt, run_length), np.repeat(pred, run_length)
        rows = np.where(
            np.isin(gt, gt_ids),
            np.searchsorted(gt_ids, gt) + 1,
            np.where(gt == 0, 0, len(gt_ids) + 1),
        )
        cols = np.where(pred == 0, 0, np.searchsorted(pred_ids, pred) + 1)
        expected = np.zeros((len(gt_ids) + 2, len(pred_ids) + 1), np.int64)
        np.add.at(expected, (rows, cols), 1)
        used_runs = pq_module._run_starts(gt, pred, work) is not None
        assert used_runs == (run_length > 1 and len(gt) > 1)
        counts, pred_unknown = pq_module._intersections(gt, gt_ids, pred, pred_ids, work)
        assert not pred_unknown
        assert counts.dtype == np.int64
        np.testing.assert_array_equal(counts, expected)
        pred[len(pred) // 2] = 7 * MAX_PNG_ID + 1  # an id outside pred_ids: reported, any path
        assert pq_module._intersections(gt, gt_ids, pred, pred_ids, work)[1]


# ---------------------------------------------------------------------------------------------
# Parity with hotcoco (which reproduces panopticapi's pq_compute) on random perturbed sets.

THINGS = {3: "cat", 7: "dog", 12: "bus", 40: "kite"}
STUFF = {5: "grass", 90: "sky", 101: "wall"}
MAX_PNG_ID = 256**3


def _categories(with_stuff: bool) -> list[dict]:
    cats = [{"id": k, "name": v, "isthing": 1, "color": [k, 2 * k, 3]} for k, v in THINGS.items()]
    if with_stuff:
        cats += [{"id": k, "name": v, "isthing": 0, "color": [k, 0, 0]} for k, v in STUFF.items()]
    return cats


def _random_rect(rng: np.random.Generator, h: int, w: int) -> tuple[slice, slice]:
    y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
    dy, dx = int(rng.integers(3, h // 2)), int(rng.integers(3, w // 2))
    return slice(y0, y0 + dy), slice(x0, x0 + dx)


def _random_gt(
    rng: np.random.Generator, h: int, w: int, with_stuff: bool
) -> tuple[np.ndarray, list[dict]]:
    """Stuff bands, thing rectangles/ellipses on top (some crowd), then void patches."""
    labels = np.zeros((h, w), np.int64)  # category per pixel
    inst = np.zeros((h, w), np.int64)  # instance key per pixel
    crowd_keys: set[int] = set()
    if with_stuff:
        cuts = np.sort(rng.choice(np.arange(4, w - 4), size=2, replace=False))
        for a, b in zip([0, *cuts], [*cuts, w]):
            labels[:, a:b] = rng.choice(list(STUFF))
    yy, xx = np.mgrid[:h, :w]
    for key in range(1, int(rng.integers(3, 9))):
        ys, xs = _random_rect(rng, h, w)
        mask = np.zeros((h, w), bool)
        mask[ys, xs] = True
        if rng.random() < 0.5:  # an ellipse inside the rectangle
            cy, cx = (ys.start + ys.stop) / 2, (xs.start + xs.stop) / 2
            ry, rx = max((ys.stop - ys.start) / 2, 1), max((xs.stop - xs.start) / 2, 1)
            mask &= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        labels[mask] = rng.choice(list(THINGS))
        inst[mask] = key
        if rng.random() < 0.2:
            crowd_keys.add(key)
    for _ in range(int(rng.integers(0, 3))):
        labels[_random_rect(rng, h, w)] = 0
    ids = np.zeros((h, w), np.int32)
    segments = []
    pairs = np.unique(np.stack([labels.ravel(), inst.ravel()]), axis=1).T
    new_ids = rng.choice(np.arange(1, MAX_PNG_ID), size=len(pairs), replace=False)
    for (cat, key), sid in zip(pairs.tolist(), new_ids.tolist()):
        if cat == 0:
            continue
        mask = (labels == cat) & (inst == key)
        ids[mask] = sid
        ys, xs = np.nonzero(mask)
        segments.append(
            {
                "id": sid,
                "category_id": cat,
                "iscrowd": int(key in crowd_keys and cat in THINGS),
                "area": int(mask.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
            }
        )
    return ids, segments


def _perturb(
    rng: np.random.Generator, gt: np.ndarray, segments: list[dict], cat_ids: list[int]
) -> tuple[np.ndarray, list[dict]]:
    """Predictions: each gt segment kept, dropped, shifted, eroded, dilated, relabelled or split;
    plus spurious rectangles. Painted in random order, so later segments occlude earlier ones."""
    h, w = gt.shape
    layers: list[tuple[np.ndarray, int]] = []
    for s in segments:
        mask = gt == s["id"]
        cat = s["category_id"]
        action = rng.choice(["keep", "drop", "shift", "erode", "dilate", "relabel", "split"])
        if action == "drop":
            continue
        if action == "shift":
            offset = (int(rng.integers(-3, 4)), int(rng.integers(-3, 4)))
            mask = ndimage.shift(mask, offset, order=0)
        elif action == "erode":
            mask = ndimage.binary_erosion(mask, iterations=int(rng.integers(1, 3)))
        elif action == "dilate":
            mask = ndimage.binary_dilation(mask, iterations=int(rng.integers(1, 3)))
        elif action == "relabel":
            cat = int(rng.choice(cat_ids))
        elif action == "split":
            cols = np.nonzero(mask.any(0))[0]
            cut = int(np.median(cols)) if len(cols) else 0
            left = mask.copy()
            left[:, cut:] = False
            layers.append((left, cat))
            mask = mask & ~left
        layers.append((mask, cat))
    for _ in range(int(rng.integers(0, 4))):
        mask = np.zeros((h, w), bool)
        mask[_random_rect(rng, h, w)] = True
        layers.append((mask, int(rng.choice(cat_ids))))
    pred = np.zeros((h, w), np.int32)
    cat_of: dict[int, int] = {}
    new_ids = rng.choice(np.arange(1, MAX_PNG_ID), size=max(len(layers), 1), replace=False)
    for k in rng.permutation(len(layers)):
        mask, cat = layers[k]
        pred[mask] = new_ids[k]
        cat_of[int(new_ids[k])] = cat
    present = [int(i) for i in np.unique(pred) if i != 0]
    return pred, [{"id": i, "category_id": cat_of[i]} for i in present]


def write_random_set(
    root: Path, seed: int, num_images: int = 6, with_stuff: bool = True
) -> tuple[Path, Path, Path, Path]:
    """A random GT/prediction pair of COCO panoptic sets under ``root``."""
    rng = np.random.default_rng(seed)
    cats = _categories(with_stuff)
    cat_ids = [c["id"] for c in cats]
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_anns, pred_anns, images = [], [], []
    for k in range(num_images):
        h, w = int(rng.integers(24, 48)), int(rng.integers(24, 64))
        gt, segments = _random_gt(rng, h, w, with_stuff)
        pred, pred_segments = _perturb(rng, gt, segments, cat_ids)
        image_id = 1000 + 7 * k
        name = f"{image_id:012d}.png"
        write_panoptic_png(gt_dir / name, gt)
        write_panoptic_png(pred_dir / name, pred)
        jpg = name.replace(".png", ".jpg")
        images.append({"id": image_id, "file_name": jpg, "height": h, "width": w})
        gt_anns.append({"image_id": image_id, "file_name": name, "segments_info": segments})
        pred_anns.append({"image_id": image_id, "file_name": name, "segments_info": pred_segments})
    gt_json, pred_json = root / "gt.json", root / "pred.json"
    gt_json.write_text(json.dumps({"images": images, "annotations": gt_anns, "categories": cats}))
    pred_json.write_text(json.dumps({"annotations": pred_anns[::-1]}))  # order must not matter
    return gt_json, gt_dir, pred_json, pred_dir


def _assert_same_as_hotcoco(ours: dict, theirs: dict) -> None:
    for key, their_key in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        if theirs[their_key]["n"] == 0:  # hotcoco reports -1 for an empty split; we report 0
            assert ours[key] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
            continue
        assert ours[key]["n"] == theirs[their_key]["n"]
        for m in ("pq", "sq", "rq"):
            assert ours[key][m] == pytest.approx(theirs[their_key][m], abs=1e-9), (key, m)
    per_class = {str(k): v for k, v in theirs["per_class"].items()}
    assert set(per_class) == set(ours["per_class"])
    for cid, theirs_c in per_class.items():
        ours_c = ours["per_class"][cid]
        for m in ("tp", "fp", "fn"):
            assert ours_c[m] == theirs_c[m], (cid, m)
        for m in ("pq", "sq", "rq"):
            expected = max(theirs_c[m], 0.0)  # -1 (hotcoco) == 0 (panopticapi) for empty ones
            assert ours_c[m] == pytest.approx(expected, abs=1e-9), (cid, m)


@pytest.mark.parametrize(("seed", "with_stuff"), [(0, True), (1, True), (2, True), (3, False)])
def test_matches_hotcoco_pq_compute(tmp_path: Path, seed: int, with_stuff: bool) -> None:
    hotcoco_panoptic = pytest.importorskip("hotcoco.panoptic")
    paths = write_random_set(tmp_path, seed, with_stuff=with_stuff)
    ours = evaluate_files(*paths)
    gt_json, gt_dir, pred_json, pred_dir = (str(p) for p in paths)
    theirs = hotcoco_panoptic.pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    _assert_same_as_hotcoco(ours, theirs)
    assert ours["all"]["n"] > 0
    if not with_stuff:
        assert ours["stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_workers_give_the_same_result_and_table_lists_classes(tmp_path: Path) -> None:
    paths = write_random_set(tmp_path, seed=5)
    single = evaluate_files(*paths)
    parallel = evaluate_files(*paths, workers=2)
    # per-worker states are summed, so only float rounding of the IoU sums may differ
    for key in ("all", "things", "stuff"):
        assert parallel[key] == pytest.approx(single[key], abs=1e-12)
    for cid, c in single["per_class"].items():
        assert parallel["per_class"][cid] == pytest.approx(c, abs=1e-12)
    table = format_table(single)
    assert "All" in table and "Things" in table and "Stuff" in table
    for name in list(THINGS.values()) + list(STUFF.values()):
        assert name in table
    assert f"{single['all']['pq'] * 100:.2f}" in table


def test_missing_prediction_names_the_images(tmp_path: Path) -> None:
    gt_json, gt_dir, pred_json, pred_dir = write_random_set(tmp_path, seed=7, num_images=3)
    pred = json.loads(pred_json.read_text())
    dropped = [a["image_id"] for a in pred["annotations"][:2]]
    pred["annotations"] = pred["annotations"][2:]
    pred_json.write_text(json.dumps(pred))
    with pytest.raises(ValueError, match="no prediction .* for image ids") as info:
        evaluate_files(gt_json, gt_dir, pred_json, pred_dir)
    for image_id in dropped:
        assert str(image_id) in str(info.value)
