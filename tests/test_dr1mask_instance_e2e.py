"""DR1Mask's instance task end to end: COCO instance JSON -> train -> predict / evaluate -> AP.

A user-style COCO instance dataset (non-contiguous category ids, RLE and polygon masks, a crowd
region, two overlapping instances) is read directly from its JSON; ``train`` runs 2 steps with
the factored-attention preset, ``predict`` writes COCO instance results and ``evaluate`` computes
mask AP; pycocotools scoring the written results against the JSON gives the same numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskconver.cli import main
from maskconver.config import load_config
from maskconver.data.coco_instances import CocoInstanceDataset, ThingsOnly
from maskconver.data.synthetic import TRAIN_STREAM, VAL_STREAM, SyntheticPanoptic
from maskconver.evaluation.mask_ap import MaskAP
from maskconver.meta.dr1mask.instances import InstancePrediction
from maskconver.tasks.instance import (
    add_predictions,
    build_instance_dataset,
    coco_results,
    gt_record,
)

THING_IDS = {0: 3, 1: 7, 2: 12, 3: 40}  # synthetic thing class -> a non-contiguous COCO id
RUN = [
    "data.train_split=train",
    "data.val_split=val",
    "train.max_steps=2",
    "train.batch_size=2",
    "train.warmup_steps=1",
    "augment.input_size=[64, 64]",
    "eval.input_size=64",
    "model.dr1mask.mask_size=14",
    "model.dr1mask.score_threshold=0.0",
    "model.dr1mask.merge.mask_threshold=0.3",
]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def write_instances(root: Path, split: str, count: int, stream: int) -> Path:
    """Synthetic scenes as a COCO instance dataset (things only) under ``root``."""
    source = SyntheticPanoptic(count, seed=5, min_size=48, max_size=64, stream=stream)
    cats = source.categories
    things = [c for c in cats.categories if c.isthing]
    to_id = {c.id: THING_IDS[k] for k, c in enumerate(things)}
    (root / split).mkdir(parents=True)
    images, anns = [], []
    for i in range(count):
        sample = source[i]
        name = f"img{i}.png"
        Image.fromarray(sample.image).save(root / split / name)
        h, w = sample.panoptic.shape
        images.append({"id": 100 + 7 * i, "file_name": name, "height": h, "width": w})
        for seg in sample.segments:
            if seg.category_id not in to_id:
                continue
            mask = sample.panoptic == seg.id
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 100 + 7 * i,
                    "category_id": to_id[seg.category_id],
                    "segmentation": _rle(mask),
                    "area": int(mask.sum()),
                    "bbox": [0, 0, 1, 1],
                    "iscrowd": int(seg.iscrowd),
                }
            )
        # an overlapping polygon instance and a crowd box on every image
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": 100 + 7 * i,
                "category_id": THING_IDS[0],
                "segmentation": [[4.0, 4.0, 30.0, 4.0, 30.0, 26.0, 4.0, 26.0]],
                "area": 26.0 * 22.0,
                "bbox": [4, 4, 26, 22],
                "iscrowd": 0,
            }
        )
        crowd = np.zeros((h, w), bool)
        crowd[h - 12 :, w - 12 :] = True
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": 100 + 7 * i,
                "category_id": THING_IDS[1],
                "segmentation": _rle(crowd),
                "area": 144,
                "bbox": [w - 12, h - 12, 12, 12],
                "iscrowd": 1,
            }
        )
    categories = [{"id": v, "name": f"thing{v}", "supercategory": "x"} for v in THING_IDS.values()]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


@pytest.fixture(scope="module")
def instance_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco_instances")
    write_instances(root, "train", 4, TRAIN_STREAM)
    write_instances(root, "val", 3, VAL_STREAM)
    return root


def _pycocotools(gt_json: Path, results: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:6])


def test_the_json_is_read_as_things_with_the_overlaps_kept_for_evaluation(
    instance_root: Path,
) -> None:
    dataset = CocoInstanceDataset.from_root(instance_root, "val")
    assert [c.id for c in dataset.categories.categories] == sorted(THING_IDS.values())
    assert all(c.isthing for c in dataset.categories.categories)
    sample = dataset[0]
    assert sample.image_id == 100 and sample.panoptic.dtype == np.int32
    listed = sample.meta["instances"]
    data = json.loads((instance_root / "annotations" / "instances_val.json").read_text())
    assert len(listed) == sum(1 for a in data["annotations"] if a["image_id"] == 100)
    # every segment id in the map is listed, non-crowd painted first, crowd last
    ids = set(np.unique(sample.panoptic).tolist()) - {0}
    assert ids == {s.id for s in sample.segments}
    crowd = [s.iscrowd for s in sample.segments]
    assert crowd == sorted(crowd)
    # the overlapping polygon keeps its full mask for evaluation, not its painted part
    polygon = listed[-2]
    assert polygon["area"] == 26.0 * 22.0
    assert mask_utils.area(polygon["segmentation"]) >= 26 * 22


def test_project_mask_ap_equals_pycocotools_on_hand_built_predictions(
    instance_root: Path,
) -> None:
    gt_json = instance_root / "annotations" / "instances_val.json"
    dataset = CocoInstanceDataset.from_root(instance_root, "val")
    rng = np.random.default_rng(0)
    metric = MaskAP(dataset.categories)
    results = []
    for i in range(len(dataset)):
        sample = dataset[i]
        masks, cats, scores = [], [], []
        for ann in sample.meta["instances"]:
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            if rng.random() < 0.5:  # a shifted copy: partly right
                mask = np.roll(mask, 3, axis=1)
            masks.append(mask)
            cats.append(ann["category_id"] if rng.random() < 0.8 else THING_IDS[2])
            scores.append(float(rng.random()))
        h, w = sample.panoptic.shape
        pred = InstancePrediction(cats, scores, np.zeros((len(cats), 4)), np.stack(masks))
        record = gt_record(sample, dataset.categories, i)
        add_predictions(record, pred)
        metric.merge_state([record])
        results += coco_results(pred, sample.image_id)
    ours = metric.compute()
    theirs = _pycocotools(gt_json, results)
    keys = ("ap", "ap50", "ap75", "aps", "apm", "apl")
    np.testing.assert_allclose([ours[k] for k in keys], theirs, atol=1e-12)
    assert 0.05 < ours["ap"] < 0.95  # neither trivial case


def test_synthetic_instance_data_has_no_stuff() -> None:
    cfg = load_config("dr1mask_small_instance", ["data.synthetic_val=2"])
    dataset = build_instance_dataset(cfg, "val")
    assert isinstance(dataset, ThingsOnly)
    sample = dataset[0]
    assert all(dataset.categories.by_id[s.category_id].isthing for s in sample.segments)
    assert set(np.unique(sample.panoptic).tolist()) - {0, -1} == {s.id for s in sample.segments}


@pytest.fixture(scope="module")
def trained_run(instance_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("instance_run")
    args = ["train", "--config", "dr1mask_small_instance", "--data-root", str(instance_root)]
    args += ["--output-dir", str(run), "--no-progress"]
    for item in RUN:
        args += ["--set", item]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return run


def test_train_predict_evaluate_round_trip_matches_pycocotools(
    instance_root: Path, trained_run: Path, tmp_path: Path
) -> None:
    gt_json = instance_root / "annotations" / "instances_val.json"
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(trained_run), "--input", str(instance_root / "val")]
    assert main([*args, "--output", str(out), "--image-info", str(gt_json)]) == 0
    results = json.loads((out / "instances.json").read_text())
    assert results, "the untrained model's thresholds are open: there are instances"
    first = results[0]
    assert set(first) == {"image_id", "category_id", "score", "bbox", "segmentation"}
    assert first["image_id"] in (100, 107, 114)
    assert first["category_id"] in THING_IDS.values()
    assert isinstance(first["segmentation"]["counts"], str)
    metrics_path = tmp_path / "metrics.json"
    args = ["evaluate", "--checkpoint", str(trained_run), "--data-root", str(instance_root)]
    assert main([*args, "--split", "val", "--output", str(metrics_path)]) == 0
    ours = json.loads(metrics_path.read_text())["mask_ap"]
    theirs = _pycocotools(gt_json, results)
    keys = ("ap", "ap50", "ap75", "aps", "apm", "apl")
    np.testing.assert_allclose([ours[k] for k in keys], theirs, atol=1e-12)
    gt = json.loads(gt_json.read_text())["annotations"]
    assert ours["n"] == len({a["category_id"] for a in gt})  # the categories with ground truth
