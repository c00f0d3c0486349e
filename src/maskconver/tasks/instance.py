"""DR1Mask's instance-segmentation task (``model.dr1mask.task: instance``; docs/dr1mask.md 7).

The least invasive reading of "instance segmentation" in a panoptic codebase:

* **data**: the COCO instance JSON read directly (``data.coco_instances.CocoInstanceDataset``:
  ``<root>/<split>/`` + ``<root>/annotations/instances_<split>.json``), or the synthetic scenes
  with their stuff turned to void (``ThingsOnly``): panoptic samples with thing segments only,
  so targets, transforms, batching and the training loop are the panoptic ones;
* **training**: DR1Mask's losses with ``unified_weight: 0`` in the instance presets (there is no
  stuff and the instance mode has no unified layer to train);
* **evaluation**: COCOeval mask AP (``evaluation.mask_ap.MaskAP``) of the model's instances
  (``meta.dr1mask.instances``), overlapping masks allowed, against the annotations as the JSON
  has them (``meta["instances"]``) or, for the synthetic scenes, the thing segments;
* **prediction**: COCO instance results (``image_id``, ``category_id``, ``score``, ``bbox``,
  compressed-RLE ``segmentation``), the format ``COCO.loadRes`` reads.

Hooks: ``engine.data.build_dataset`` / ``check_data_splits`` and ``engine.evaluate.evaluate_model``
call this module when ``is_instance_task(cfg)``; the command bodies are in ``instance_cli.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import nn

from maskconver.config import Config, ConfigError
from maskconver.data.types import CategorySet, PanopticSample, copy_sample
from maskconver.evaluation.mask_ap import ImageRecord, MaskAP

RESULTS_JSON = "instances.json"


def is_instance_task(cfg: Config) -> bool:
    """True for a DR1Mask config with ``model.dr1mask.task: instance``."""
    return cfg.model.meta_architecture == "dr1mask" and cfg.model.dr1mask.task == "instance"


def build_instance_dataset(cfg: Config, split: str, data_root: str | None = None) -> Any:
    """The ``split`` dataset of an instance-task run (``.categories`` holds its categories).

    Args:
        cfg: the run config.
        split: ``"train"`` or ``"val"``.
        data_root: COCO root (``annotations/instances_<split>.json``); overrides ``data.root``.
            None and no ``data.root``: the synthetic scenes without their stuff.
    """
    from maskconver.data.coco_instances import CocoInstanceDataset, ThingsOnly

    if split not in ("train", "val"):
        raise ConfigError(f"unknown split {split!r} (expected 'train' or 'val')")
    d = cfg.data
    root = data_root if data_root is not None else d.root
    if root is None:
        from maskconver.data.synthetic import TRAIN_STREAM, VAL_STREAM, SyntheticPanoptic

        return ThingsOnly(
            SyntheticPanoptic(
                d.synthetic_train if split == "train" else d.synthetic_val,
                seed=d.synthetic_seed,
                min_size=d.synthetic_min_size,
                max_size=d.synthetic_max_size,
                stream=TRAIN_STREAM if split == "train" else VAL_STREAM,
                label_space=cfg.model.label_space,
            )
        )
    name = d.train_split if split == "train" else d.val_split
    return CocoInstanceDataset.from_root(root, name, label_space=cfg.model.label_space)


def check_instance_splits(cfg: Config) -> None:
    """Refuse a ``data.root`` without both splits' instance JSON (before a run writes anything)."""
    from maskconver.data.coco_instances import CocoInstanceDataset

    if cfg.data.root is not None:
        for name in (cfg.data.train_split, cfg.data.val_split):
            CocoInstanceDataset.from_root(cfg.data.root, name)


def gt_record(sample: PanopticSample, categories: CategorySet, order: int) -> ImageRecord:
    """A ``MaskAP`` record of a sample's ground truth (JSON annotations, else thing segments)."""
    height, width = sample.panoptic.shape
    record = ImageRecord(order=order, height=height, width=width)
    listed = sample.meta.get("instances")
    if isinstance(listed, list):
        for ann in listed:
            record.gt.append((ann["category_id"], ann["iscrowd"], ann["area"], ann["segmentation"]))
        return record
    for seg in sample.segments:
        if not categories.by_id[seg.category_id].isthing:
            continue
        mask = sample.panoptic == seg.id
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        record.gt.append((seg.category_id, bool(seg.iscrowd), int(mask.sum()), rle))
    return record


def add_predictions(record: ImageRecord, prediction: Any) -> None:
    """Append an ``InstancePrediction``'s non-empty masks to a ``MaskAP`` record."""
    for category_id, score, mask in zip(
        prediction.category_ids, prediction.scores, prediction.masks, strict=True
    ):
        area = int(mask.sum())
        if area:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            record.pred.append((category_id, float(score), area, rle))


def coco_results(prediction: Any, image_id: int | str) -> list[dict[str, Any]]:
    """COCO instance results of one image (``COCO.loadRes`` format; RLE counts as text)."""
    out = []
    for category_id, score, box, mask in zip(
        prediction.category_ids, prediction.scores, prediction.boxes, prediction.masks, strict=True
    ):
        if not mask.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append(
            {
                "image_id": image_id,
                "category_id": int(category_id),
                "score": float(score),
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "segmentation": rle,
            }
        )
    return out


def predict_instances(
    model: nn.Module,
    postprocessor: Any,
    samples: Sequence[PanopticSample],
    device: str | torch.device = "cpu",
) -> list[Any]:
    """Forward + instance post-processing of samples that went through the eval transform.

    Returns:
        One ``InstancePrediction`` per sample at its original size.
    """
    from maskconver.inference import images_to_tensor

    images = images_to_tensor([s.image for s in samples]).to(device)
    with torch.inference_mode():
        outputs = model(images)
        return list(
            postprocessor(
                outputs,
                valid_sizes=[tuple(s.meta["valid_size"]) for s in samples],  # type: ignore[arg-type]
                output_sizes=[tuple(s.meta["orig_size"]) for s in samples],  # type: ignore[arg-type]
                input_size=(int(images.shape[-2]), int(images.shape[-1])),
            )
        )


def evaluate_instances(
    model: Any,
    dataset: Any,
    *,
    cfg: Config,
    categories: CategorySet,
    num_classes: int,
    batch_size: int = 8,
    max_images: int = 0,
    device: str | torch.device = "cpu",
    save_dir: Path | None = None,
    transform: Any = None,
    skip_bad: bool = False,
    **_: Any,
) -> dict[str, Any]:
    """Mask AP of a DR1Mask model in the instance task (``evaluate_model``'s contract).

    Args:
        model: the ``DR1Mask`` module (other backends have no instance output).
        dataset: ``PanopticSample`` source (original-resolution ground truth).
        cfg: the run config.
        categories: the dataset categories.
        num_classes: the model's class channels.
        batch_size: images per forward.
        max_images: only the first N images (0: all).
        device: where the forward runs.
        save_dir: if given, write ``<save_dir>/instances.json`` (COCO results).
        transform: the eval transform (default: the config's).
        skip_bad: skip unreadable samples (counted) instead of stopping.

    Returns:
        ``{"mask_ap": {"ap", "ap50", ..., "n"}, "per_class", "images", "skipped", "seconds"}``.
    """
    import json

    from maskconver.build import build_eval_transforms
    from maskconver.data.coco_panoptic import DatasetError
    from maskconver.meta.dr1mask.build import build_instance_postprocessor

    if not isinstance(model, nn.Module):
        raise ValueError("the instance task evaluates a torch module (no exported backend)")
    start = time.perf_counter()
    total = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    transform = transform if transform is not None else build_eval_transforms(cfg)
    postprocessor = build_instance_postprocessor(cfg, categories, num_classes)
    metric = MaskAP(categories)
    results: list[dict[str, Any]] = []
    was_training = model.training
    model.eval().to(device)
    skipped = 0
    try:
        for first in range(0, total, batch_size):
            originals, positions = [], []
            for i in range(first, min(first + batch_size, total)):
                try:
                    originals.append(dataset[i])
                    positions.append(i)
                except (DatasetError, OSError):
                    if not skip_bad:
                        raise
                    skipped += 1
            if not originals:
                continue
            inputs = [transform(copy_sample(s)) for s in originals]
            predictions = predict_instances(model, postprocessor, inputs, device)
            for sample, pred, position in zip(originals, predictions, positions, strict=True):
                record = gt_record(sample, categories, position)
                add_predictions(record, pred)
                metric.merge_state([record])
                if save_dir is not None:
                    results.extend(coco_results(pred, sample.image_id))
    finally:
        model.train(was_training)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / RESULTS_JSON).write_text(json.dumps(results))
    mask_ap = metric.compute()
    per_class = mask_ap.pop("per_class")
    return {
        "mask_ap": mask_ap,
        "per_class": per_class,
        "images": total - skipped,
        "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
