"""Semantic mIoU and mask AP of panoptic outputs: hand-derived values, pycocotools, the CLI.

Expected values are derived in the comments from the pixel tables written out in each test, or
come from independent references: a per-pixel NumPy computation of the semantic IoUs and
pycocotools' own ``COCO(file)`` + ``loadRes`` + ``COCOeval`` path on the same masks.
"""

from __future__ import annotations

import contextlib
import io
import json
import typing
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_UNTRAINED_RUN
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskconver import cli
from maskconver.config import EvalConfig, load_config
from maskconver.data.types import Category, SegmentInfo
from maskconver.evaluation.mask_ap import MaskAP
from maskconver.evaluation.metrics import METRIC_NAMES, PanopticMetrics, parse_metric_names
from maskconver.evaluation.pq import PanopticQuality
from maskconver.evaluation.semantic import SemanticIoU

EXIT_BAD_INPUT = 2
CATS = [
    Category(1, "cat", True),
    Category(2, "dog", True),
    Category(5, "sky", False),
    Category(9, "road", False),
]
AP_KEYS = ("ap", "ap50", "ap75", "aps", "apm", "apl")
RECALL_POINTS = 101  # COCOeval's 0:0.01:1


def seg(seg_id: int, category_id: int, *, iscrowd: bool = False, score: float = 1.0) -> SegmentInfo:
    return SegmentInfo(id=seg_id, category_id=category_id, iscrowd=iscrowd, score=score)


def _hand_images() -> list[tuple[np.ndarray, list[SegmentInfo], np.ndarray, list[SegmentInfo]]]:
    """Two images with void, a crowd segment, an unlisted gt id and a class only predicted."""
    # image 1: gt 10 cat, 11 cat (crowd), 50 sky, 0 void; pred 7 cat, 8 sky, 0 unlabelled
    gt1 = np.array([[10, 10, 50, 50], [0, 11, 50, 50]], dtype=np.int32)
    pred1 = np.array([[7, 7, 7, 8], [7, 0, 8, 8]], dtype=np.int32)
    # image 2: gt 20 dog, 60 sky, 99 (not in segments_info); pred 3 dog, 4 road
    gt2 = np.array([[20, 20, 60], [20, 99, 60]], dtype=np.int32)
    pred2 = np.array([[3, 4, 4], [3, 3, 4]], dtype=np.int32)
    return [
        (gt1, [seg(10, 1), seg(11, 1, iscrowd=True), seg(50, 5)], pred1, [seg(7, 1), seg(8, 5)]),
        (gt2, [seg(20, 2), seg(60, 5)], pred2, [seg(3, 2), seg(4, 9)]),
    ]


def test_semantic_iou_hand_derived() -> None:
    metric = SemanticIoU(CATS)
    for k, (gt, gt_segs, pred, pred_segs) in enumerate(_hand_images()):
        metric.update(gt, gt_segs, pred, pred_segs, image_id=k)
    result = metric.compute()
    # pixel pairs (gt class, pred class), void gt and gt id 99 ignored:
    # image 1: (cat,cat) x2, (sky,cat), (sky,sky) x3, (cat crowd, unlabelled); void gt -> skipped
    # image 2: (dog,dog) x2, (dog,road), (sky,road) x2; gt 99 -> skipped
    # cat:  tp 2, gt 3 (crowd pixel included), pred 3 -> IoU 2 / (3 + 3 - 2) = 1/2
    # dog:  tp 2, gt 3, pred 2 -> 2 / 3
    # sky:  tp 3, gt 6, pred 3 -> 3 / 6 = 1/2
    # road: tp 0, gt 0, pred 3 -> 0 (only predicted: still averaged)
    iou = {"1": 1 / 2, "2": 2 / 3, "5": 1 / 2, "9": 0.0}
    for cat_id, expected in iou.items():
        assert result["per_class"][cat_id]["iou"] == pytest.approx(expected, abs=1e-12)
    assert result["per_class"]["9"]["gt_pixels"] == 0
    assert result["per_class"]["9"]["pred_pixels"] == 3
    assert result["n"] == 4
    assert result["miou"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2 + 0) / 4, abs=1e-12)  # 5/12
    # fwIoU: gt pixels 3 + 3 + 6 = 12 -> (3/2 + 2 + 3) / 12 = 13/24
    assert result["fwiou"] == pytest.approx(13 / 24, abs=1e-12)
    assert result["pixel_accuracy"] == pytest.approx(7 / 12, abs=1e-12)  # (2 + 2 + 3) / 12
    assert result["macc"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 6) / 3, abs=1e-12)  # 11/18


def _reference_semantic(
    images: list[tuple[np.ndarray, list[SegmentInfo], np.ndarray, list[SegmentInfo]]],
    categories: list[Category],
) -> dict[int, float]:
    """Per-pixel NumPy IoU per category id (union > 0 only), from boolean masks."""
    gt_labels, pred_labels = [], []
    for gt, gt_segs, pred, pred_segs in images:
        gt_cat = np.zeros(gt.shape, dtype=np.int64)  # 0: no category
        for s in gt_segs:
            gt_cat[gt == s.id] = s.category_id
        pred_cat = np.zeros(pred.shape, dtype=np.int64)
        for s in pred_segs:
            pred_cat[pred == s.id] = s.category_id
        keep = gt_cat > 0
        gt_labels.append(gt_cat[keep])
        pred_labels.append(pred_cat[keep])
    g, p = np.concatenate(gt_labels), np.concatenate(pred_labels)
    out = {}
    for c in categories:
        inter = np.logical_and(g == c.id, p == c.id).sum()
        union = np.logical_or(g == c.id, p == c.id).sum()
        if union:
            out[c.id] = inter / union
    return out


def _random_images(
    seed: int, num_images: int = 5
) -> list[tuple[np.ndarray, list[SegmentInfo], np.ndarray, list[SegmentInfo]]]:
    """Blocky random gt maps over ``CATS`` (void, crowd) and perturbed, scored predictions.

    The prediction copies the gt ids, re-draws a third of the 4x4 blocks, and gives each id a
    category that is the gt one with probability 3/4, so there are matches and misses.
    """
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        grid = rng.integers(0, 7, (h // 4 + 1, w // 4 + 1))
        redraw = rng.random(grid.shape) < 1 / 3
        pred_grid = np.where(redraw, rng.integers(0, 9, grid.shape), grid)
        maps = [np.repeat(np.repeat(g, 4, 0), 4, 1)[:h, :w].astype(np.int32)
                for g in (grid, pred_grid)]  # fmt: skip
        gt_category = {i: CATS[int(rng.integers(len(CATS)))].id for i in range(1, 9)}
        gt_segs = [
            seg(i, gt_category[i], iscrowd=gt_category[i] == 1 and rng.random() < 0.3)
            for i in np.unique(maps[0]).tolist()
            if i
        ]
        pred_segs = []
        for i in np.unique(maps[1]).tolist():
            if i:
                keep = rng.random() < 3 / 4
                category = gt_category[i] if keep else CATS[int(rng.integers(len(CATS)))].id
                pred_segs.append(seg(i, category, score=float(rng.random())))
        images.append((maps[0], gt_segs, maps[1], pred_segs))
    return images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semantic_iou_equals_numpy_reference(seed: int) -> None:
    images = _random_images(seed)
    metric = SemanticIoU(CATS)
    for gt, gt_segs, pred, pred_segs in images:
        metric.update(gt, gt_segs, pred, pred_segs)
    result = metric.compute()
    reference = _reference_semantic(images, CATS)
    assert result["n"] == len(reference) > 0
    for cat_id, iou in reference.items():
        assert result["per_class"][str(cat_id)]["iou"] == pytest.approx(iou, abs=1e-12)
    assert result["miou"] == pytest.approx(np.mean(list(reference.values())), abs=1e-12)


def test_semantic_rejects_unknown_ids_and_categories() -> None:
    metric = SemanticIoU(CATS)
    gt = np.array([[1, 1]], dtype=np.int32)
    with pytest.raises(ValueError, match=r"image 7: predicted segment ids \[2\]"):
        metric.update(gt, [seg(1, 1)], np.array([[1, 2]]), [seg(1, 1)], image_id=7)
    with pytest.raises(ValueError, match="unknown category_id 4"):
        metric.update(gt, [seg(1, 4)], gt, [seg(1, 1)])
    with pytest.raises(ValueError, match="must be equal"):
        metric.update(gt, [seg(1, 1)], gt.T, [seg(1, 1)])


# ---------------------------------------------------------------------------------------------
# Mask AP


def _square_map(h: int, w: int, squares: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """``[h, w]`` id map with ``{id: (top, left, size)}`` squares on void."""
    ids = np.zeros((h, w), dtype=np.int32)
    for seg_id, (top, left, size) in squares.items():
        ids[top : top + size, left : left + size] = seg_id
    return ids


def _mask_ap(images: list[tuple[np.ndarray, list, np.ndarray, list]]) -> dict:
    metric = MaskAP(CATS)
    for gt, gt_segs, pred, pred_segs in images:
        metric.update(gt, gt_segs, pred, pred_segs)
    return metric.compute()


def _pycocotools_direct(
    images: list[tuple[np.ndarray, list, np.ndarray, list]], tmp_path: Path
) -> np.ndarray:
    """COCOeval stats through pycocotools' own path: a GT JSON file, ``loadRes``, ``COCOeval``."""
    thing = {c.id for c in CATS if c.isthing}
    coco_images, anns, dets = [], [], []
    for image_id, (gt, gt_segs, pred, pred_segs) in enumerate(images):
        coco_images.append({"id": image_id, "height": gt.shape[0], "width": gt.shape[1]})
        for s in gt_segs:
            if s.category_id not in thing:
                continue
            rle = mask_utils.encode(np.asfortranarray((gt == s.id).astype(np.uint8)))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": s.category_id,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "area": int(mask_utils.area(rle)),
                    "iscrowd": int(s.iscrowd),
                }
            )
        for s in pred_segs:
            if s.category_id not in thing:
                continue
            rle = mask_utils.encode(np.asfortranarray((pred == s.id).astype(np.uint8)))
            dets.append(
                {"image_id": image_id, "category_id": s.category_id, "segmentation": rle,
                 "score": s.score}
            )  # fmt: skip
    gt_file = tmp_path / "instances.json"
    categories = [{"id": c.id, "name": c.name} for c in CATS if c.isthing]
    gt_file.write_text(json.dumps({"images": coco_images, "annotations": anns,
                                   "categories": categories}))  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:6])


def test_perfect_prediction_has_ap_one_and_minus_one_for_empty_sizes(tmp_path: Path) -> None:
    # two cats and a dog, all 3x3 or 4x4 (small: < 32^2 px), predicted exactly; stuff ignored
    gt = _square_map(12, 12, {1: (0, 0, 3), 2: (5, 5, 4), 3: (0, 8, 3), 9: (10, 0, 2)})
    gt_segs = [seg(1, 1), seg(2, 1), seg(3, 2), seg(9, 5)]
    pred_segs = [seg(1, 1, score=0.9), seg(2, 1, score=0.3), seg(3, 2, score=0.5), seg(9, 5)]
    images = [(gt, gt_segs, gt.copy(), pred_segs)]
    result = _mask_ap(images)
    assert [result[k] for k in AP_KEYS] == [1.0, 1.0, 1.0, 1.0, -1.0, -1.0]
    assert result["n"] == 2
    # COCOeval's precision is tp / (tp + fp + eps): per-class means are 1 to rounding
    assert result["per_class"] == {
        "1": {"name": "cat", "ap": pytest.approx(1.0)},
        "2": {"name": "dog", "ap": pytest.approx(1.0)},
    }
    np.testing.assert_allclose([result[k] for k in AP_KEYS], _pycocotools_direct(images, tmp_path))


def test_false_positive_with_higher_score_halves_ap(tmp_path: Path) -> None:
    # one cat; detections by score: FP 0.9 (elsewhere), TP 0.8 (exact), at every IoU threshold.
    # precision/recall after each: (P 0, R 0), (P 1/2, R 1); the interpolated precision (max to
    # the right) is 1/2 at all 101 recall points -> AP = AP50 = AP75 = 1/2
    gt = _square_map(10, 10, {1: (0, 0, 3)})
    pred = _square_map(10, 10, {1: (0, 0, 3), 2: (6, 6, 3)})
    images = [(gt, [seg(1, 1)], pred, [seg(1, 1, score=0.8), seg(2, 1, score=0.9)])]
    result = _mask_ap(images)
    assert result["ap"] == result["ap50"] == result["ap75"] == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose([result[k] for k in AP_KEYS], _pycocotools_direct(images, tmp_path))


def test_interpolated_precision_over_101_recall_points(tmp_path: Path) -> None:
    # two cats in two images; detections by score: TP 0.9, FP 0.8, TP 0.7
    # (R, P) after each: (1/2, 1), (1/2, 1/2), (1, 2/3); interpolated precision: 1 for recall
    # points 0.00..0.50 (51 points), 2/3 for 0.51..1.00 (50 points)
    gt = _square_map(10, 10, {1: (0, 0, 4)})
    pred_a = _square_map(10, 10, {1: (0, 0, 4), 2: (6, 6, 3)})
    pred_b = _square_map(10, 10, {5: (0, 0, 4)})
    images = [
        (gt, [seg(1, 1)], pred_a, [seg(1, 1, score=0.9), seg(2, 1, score=0.8)]),
        (gt.copy(), [seg(1, 1)], pred_b, [seg(5, 1, score=0.7)]),
    ]
    result = _mask_ap(images)
    expected = (51 * 1.0 + 50 * (2 / 3)) / RECALL_POINTS
    assert result["ap"] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose([result[k] for k in AP_KEYS], _pycocotools_direct(images, tmp_path))


def test_detection_on_a_crowd_region_is_ignored(tmp_path: Path) -> None:
    # a cat and a crowd of cats; the higher-scored detection lies inside the crowd: matched to
    # it (COCO crowd IoU = intersection / detection area = 1), ignored, so the TP gives AP 1
    gt = _square_map(10, 10, {1: (0, 0, 3), 2: (5, 5, 5)})
    pred = _square_map(10, 10, {1: (0, 0, 3), 2: (6, 6, 3)})
    pred_segs = [seg(1, 1, score=0.8), seg(2, 1, score=0.9)]
    crowd = [(gt, [seg(1, 1), seg(2, 1, iscrowd=True)], pred, pred_segs)]
    assert _mask_ap(crowd)["ap"] == pytest.approx(1.0, abs=1e-12)
    plain = [(gt, [seg(1, 1), seg(2, 1)], pred, pred_segs)]
    # as plain gt: FP 0.9 (IoU 9/25 with the big cat), TP 0.8; recall reaches 1/2 of the two
    # cats at precision 1/2, so 51 of the 101 recall points score 1/2
    plain_ap = _mask_ap(plain)["ap"]
    assert plain_ap == pytest.approx(51 * 0.5 / RECALL_POINTS, abs=1e-12)
    np.testing.assert_allclose(_pycocotools_direct(crowd, tmp_path)[0], 1.0)
    np.testing.assert_allclose(_pycocotools_direct(plain, tmp_path)[0], plain_ap)


def test_defined_values_without_predictions_or_things() -> None:
    gt = _square_map(8, 8, {1: (0, 0, 3), 9: (4, 4, 3)})
    # ground truth, no predictions: every cat missed -> 0 (dog has no gt -> left out)
    missed = _mask_ap([(gt, [seg(1, 1), seg(9, 5)], np.zeros_like(gt), [])])
    assert missed["ap"] == 0.0 and missed["n"] == 1 and missed["per_class"]["2"]["ap"] == -1.0
    # predictions but no thing ground truth: nothing to score -> -1
    no_gt = _mask_ap([(np.zeros_like(gt), [], gt, [seg(1, 1, score=0.5), seg(9, 5)])])
    assert [no_gt[k] for k in AP_KEYS] == [-1.0] * 6 and no_gt["n"] == 0
    # no images at all, and a stuff-only category set
    assert MaskAP(CATS).compute()["ap"] == -1.0
    stuff_only = MaskAP([Category(5, "sky", False)])
    stuff_only.update(gt, [seg(1, 5)], gt, [seg(1, 5)])
    assert stuff_only.compute() == {**dict.fromkeys(AP_KEYS, -1.0), "n": 0, "per_class": {}}


@pytest.mark.parametrize("seed", [3, 4])
def test_mask_ap_equals_pycocotools_on_random_images(tmp_path: Path, seed: int) -> None:
    images = _random_images(seed, num_images=6)
    result = _mask_ap(images)
    direct = _pycocotools_direct(images, tmp_path)
    assert direct[0] > 0  # not vacuous: some matches
    np.testing.assert_allclose([result[k] for k in AP_KEYS], direct, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The accumulator


def test_incremental_equals_batch_and_merged_halves() -> None:
    images = _random_images(5, num_images=6)
    whole = PanopticMetrics(CATS)
    for gt, gt_segs, pred, pred_segs in images:
        whole.update(gt, gt_segs, pred, pred_segs)
    result = whole.compute()
    # "batch": the six maps side by side as one image (semantic counts are per pixel)
    height = max(g.shape[0] for g, *_ in images)
    blocks: list[list] = [[], [], [], []]
    for k, (gt, gt_segs, pred, pred_segs) in enumerate(images):
        offset = 100 * (k + 1)
        pad = ((0, height - gt.shape[0]), (0, 0))
        blocks[0].append(np.pad(np.where(gt > 0, gt + offset, 0), pad))
        blocks[2].append(np.pad(np.where(pred > 0, pred + offset, 0), pad))
        blocks[1] += [seg(s.id + offset, s.category_id, iscrowd=s.iscrowd) for s in gt_segs]
        blocks[3] += [seg(s.id + offset, s.category_id, score=s.score) for s in pred_segs]
    batch = SemanticIoU(CATS)
    batch.update(np.hstack(blocks[0]), blocks[1], np.hstack(blocks[2]), blocks[3])
    batched = batch.compute()
    assert _nested_close(result["semantic"], {k: v for k, v in batched.items() if k != "per_class"})
    assert result["mask_ap"]["ap"] > 0  # (the batch reference of mask AP: pycocotools tests)
    # two accumulators on the halves, in the other order, merged (ranks / workers)
    first, second = PanopticMetrics(CATS), PanopticMetrics(CATS)
    for k, (gt, gt_segs, pred, pred_segs) in reversed(list(enumerate(images))):
        part = first if k < 3 else second
        part.update(gt, gt_segs, pred, pred_segs, order=k)
    first.merge_state(second.state())
    merged = first.compute()
    assert _nested_close(merged, result)
    # the default layout: PQ's numbers untouched, per-class iou everywhere, ap for things
    pq_only = PanopticQuality(CATS)
    for gt, gt_segs, pred, pred_segs in images:
        pq_only.update(gt, gt_segs, pred, pred_segs)
    expected_pq = pq_only.compute()
    for split in ("all", "things", "stuff"):
        assert result[split] == expected_pq[split]
    for cat in CATS:
        entry = result["per_class"][str(cat.id)]
        assert {k: entry[k] for k in expected_pq["per_class"][str(cat.id)]} == (
            expected_pq["per_class"][str(cat.id)]
        )
        assert "iou" in entry and ("ap" in entry) == cat.isthing
    assert set(result) == {"all", "things", "stuff", "per_class", "semantic", "mask_ap"}


def _nested_close(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_nested_close(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-12
    return a == b


def test_metric_names_config_and_parsing() -> None:
    assert EvalConfig().metrics == list(METRIC_NAMES)
    hint = typing.get_type_hints(EvalConfig)["metrics"]
    assert typing.get_args(typing.get_args(hint)[0]) == METRIC_NAMES  # one list of names
    assert load_config("tiny", ["eval.metrics=[pq]"]).eval.metrics == ["pq"]
    with pytest.raises(ValueError, match="not one of"):
        load_config("tiny", ["eval.metrics=[pq, ap]"])
    with pytest.raises(ValueError, match="eval.metrics must be a list with 'pq'"):
        load_config("tiny", ["eval.metrics=[miou]"])
    assert parse_metric_names("all") == METRIC_NAMES
    assert parse_metric_names("mask_ap, pq") == ("pq", "mask_ap")
    with pytest.raises(ValueError, match="must include 'pq'"):
        parse_metric_names("miou")
    assert set(PanopticMetrics(CATS, ["pq"]).compute()) == {"all", "things", "stuff", "per_class"}


# ---------------------------------------------------------------------------------------------
# The command line


@pytest.fixture
def _only_evaluate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {"evaluate": "evaluate"})


def _perfect_prediction_files(root: Path, tmp_path: Path) -> list[str]:
    """Files-mode arguments scoring the synthetic val split against itself, with scores."""
    gt_json = root / "annotations" / "panoptic_val2017.json"
    gt_dir = root / "annotations" / "panoptic_val2017"
    pred = json.loads(gt_json.read_text())
    for ann in pred["annotations"]:
        for k, s in enumerate(ann["segments_info"]):
            s["score"] = 1.0 - 0.01 * k
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps({"annotations": pred["annotations"]}))
    return ["--gt-json", str(gt_json), "--gt-dir", str(gt_dir), "--pred-json", str(pred_json),
            "--pred-dir", str(gt_dir)]  # fmt: skip


@pytest.mark.usefixtures("_only_evaluate")
def test_files_mode_perfect_predictions_score_100_everywhere(
    synthetic_coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _perfect_prediction_files(synthetic_coco_root, tmp_path)
    out = tmp_path / "metrics.json"
    assert cli.main(["evaluate", *args, "--metrics", "all", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(out.read_text())
    assert metrics["all"]["pq"] == 1.0 and metrics["semantic"]["miou"] == 1.0
    assert metrics["semantic"]["pixel_accuracy"] == metrics["semantic"]["fwiou"] == 1.0
    assert metrics["mask_ap"]["ap"] == metrics["mask_ap"]["ap50"] == 1.0
    assert metrics["mask_ap"]["n"] > 0 and metrics["semantic"]["n"] > 0
    assert "mIoU 100.00" in printed and "AP 100.00" in printed and "IoU" in printed
    # default files mode: all metrics; --metrics pq gives panopticapi's layout alone
    assert cli.main(["evaluate", *args, "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == metrics
    capsys.readouterr()
    assert cli.main(["evaluate", *args, "--metrics", "pq", "--output", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {"all", "things", "stuff", "per_class"}
    assert "mIoU" not in capsys.readouterr().out


@pytest.mark.usefixtures("_only_evaluate")
def test_bad_metric_name_is_an_argparse_error(
    synthetic_coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _perfect_prediction_files(synthetic_coco_root, tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", *args, "--metrics", "pq,boxap"])
    assert info.value.code == EXIT_BAD_INPUT
    assert "unknown metrics ['boxap']" in capsys.readouterr().err


def test_training_log_and_model_mode_carry_the_metrics(
    synthetic_coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from maskconver.build import build_model
    from maskconver.data.coco_panoptic import CocoPanopticDataset
    from maskconver.engine.checkpoint import save_checkpoint
    from maskconver.engine.evaluate import run_evaluation
    from maskconver.engine.logging import MetricLogger, read_metrics

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config("tiny", [*SMALL_UNTRAINED_RUN, "train.max_eval_images=2"])
        dataset = CocoPanopticDataset(synthetic_coco_root, "val2017")
        torch.manual_seed(0)
        model = build_model(cfg.model, dataset.categories.num_classes)
        run = tmp_path / "run"
        # the training loop's evaluation and logger (train() calls exactly this at eval steps)
        log = MetricLogger(run, enabled=True, tensorboard=False)
        run_evaluation(model, dataset, cfg=cfg, categories=dataset.categories,
                       num_classes=dataset.categories.num_classes, device="cpu", progress=False,
                       step=1, log=log)  # fmt: skip
        (record,) = [r for r in read_metrics(run) if r["kind"] == "eval"]
        for key in ("all/pq", "semantic/miou", "semantic/fwiou", "mask_ap/ap", "mask_ap/ap50"):
            assert key in record and -1.0 <= record[key] <= 1.0, key
        assert not any(key.startswith("per_class") for key in record)
        assert "semantic/miou" in capsys.readouterr().out  # the printed eval line
        checkpoint = save_checkpoint(run / "checkpoints", model=model, ema=None, optimizer=None,
                                     step=1, config=cfg, categories=dataset.categories,
                                     num_classes=dataset.categories.num_classes)  # fmt: skip
        # model mode: printed, written, and equal to files mode on the saved predictions
        out, saved = tmp_path / "metrics.json", tmp_path / "saved"
        argv = ["evaluate", "--checkpoint", str(checkpoint),
                "--data-root", str(synthetic_coco_root), "--save-predictions", str(saved),
                "--output", str(out), "--batch-size", "2"]  # fmt: skip
        assert cli.main(argv) == 0
        assert "Semantic  | mIoU" in capsys.readouterr().out
        model_metrics = json.loads(out.read_text())
        files_out = tmp_path / "files.json"
        ann = synthetic_coco_root / "annotations"
        assert cli.main(["evaluate", "--gt-json", str(ann / "panoptic_val2017.json"),
                         "--gt-dir", str(ann / "panoptic_val2017"),
                         "--pred-json", str(saved / "predictions.json"),
                         "--pred-dir", str(saved / "panoptic"), "--metrics", "all",
                         "--output", str(files_out)]) == 0  # fmt: skip
        files_metrics = json.loads(files_out.read_text())
        for key in ("all", "semantic", "mask_ap", "per_class"):
            assert _nested_close(model_metrics[key], files_metrics[key]), key
        assert model_metrics["semantic"]["n"] > 0
        assert cli.main([*argv, "--metrics", "pq"]) == 0
        assert "semantic" not in json.loads(out.read_text())
    finally:
        torch.set_num_threads(threads)


def test_rle_from_runs_equals_mask_encode() -> None:
    from maskconver.evaluation.mask_ap import _encode

    rng = np.random.default_rng(6)
    for trial in range(50):
        h, w = (int(v) for v in rng.integers(1, 25, 2))
        ids = rng.integers(0, 4, (h, w)).astype(np.int32)
        if trial % 2:
            ids = np.repeat(ids, 3, axis=0)  # long vertical runs
        segments = [seg(i, 1) for i in range(6)]  # 0 (void) and 4, 5 (absent) included
        rles, areas = _encode(ids, segments)
        for s, rle, area in zip(segments, rles, areas, strict=True):
            expected = mask_utils.encode(np.asfortranarray((ids == s.id).astype(np.uint8)))
            assert rle == expected, (trial, s.id)
            assert area == int(mask_utils.area(expected)) == int((ids == s.id).sum())


DDP_WORKER = """
import json, sys
import torch
from maskconver.build import build_model
from maskconver.config import load_config
from maskconver.data.synthetic import SyntheticPanoptic
from maskconver.data.types import SegmentInfo
from maskconver.engine.distributed import get_rank, get_world_size, init_distributed
from maskconver.engine.evaluate import _reduce_metrics, evaluate_model
from maskconver.evaluation.metrics import PanopticMetrics

out, overrides = sys.argv[1], sys.argv[2:]
torch.set_num_threads(1)
distributed = "RANK" in __import__("os").environ
if distributed:
    init_distributed("cpu")
cfg = load_config("tiny", overrides)
dataset = SyntheticPanoptic(5, seed=3, min_size=64, max_size=80, crowd_prob=0.3)
torch.manual_seed(0)
model = build_model(cfg.model, dataset.categories.num_classes)
result = evaluate_model(model, dataset, cfg=cfg, categories=dataset.categories,
                        num_classes=dataset.categories.num_classes, batch_size=2, progress=False)
# degraded copies of the ground truth as predictions (some segments dropped, some relabelled),
# so that mask AP and mIoU are between 0 and 1: each rank scores its strided shard
metric = PanopticMetrics(dataset.categories)
cats = dataset.categories.categories
other = {c.id: [d.id for d in cats if d.isthing == c.isthing and d.id != c.id] for c in cats}
for i in range(get_rank(), len(dataset), get_world_size()):
    sample = dataset[i]
    pred, segments = sample.panoptic.copy(), []
    for j, s in enumerate(sample.segments):
        if j % 3 == 2:
            pred[pred == s.id] = 0
            continue
        category = other[s.category_id][0] if j % 4 == 3 else s.category_id
        segments.append(SegmentInfo(s.id, category, score=1.0 - 0.05 * j - 0.01 * i))
    metric.update(sample.panoptic, sample.segments, pred, segments, order=i)
if get_world_size() > 1:
    _reduce_metrics(metric, "cpu")
degraded = metric.compute()
if get_rank() == 0:
    keep = ("all", "things", "stuff", "semantic", "mask_ap", "per_class", "images")
    json.dump({"model": {k: result[k] for k in keep}, "degraded": degraded}, open(out, "w"))
"""


@pytest.mark.slow
def test_two_ranks_give_the_single_process_metrics(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single, double = tmp_path / "single.json", tmp_path / "double.json"
    subprocess.run([sys.executable, str(script), str(single), *SMALL_UNTRAINED_RUN], check=True,
                   env=env, timeout=240)  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2"]  # fmt: skip
    proc = subprocess.run([*torchrun, str(script), str(double), *SMALL_UNTRAINED_RUN],
                          capture_output=True, text=True, env=env, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert one["model"]["images"] == two["model"]["images"] == 5
    assert _nested_close(one, two)
    degraded = one["degraded"]  # not vacuous: numbers strictly between 0 and 1
    assert 0 < degraded["mask_ap"]["ap"] < 1 and 0 < degraded["semantic"]["miou"] < 1
