"""Command bodies of the instance task: ``evaluate`` and ``predict`` of an instance checkpoint.

``commands/evaluate.py`` and ``commands/predict.py`` hand over here when the checkpoint's config
has ``model.dr1mask.task: instance`` (``tasks/instance.py``): ``evaluate`` prints and writes
COCOeval mask AP, ``predict`` writes one ``instances.json`` of COCO instance results (RLE masks)
into ``--output``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from maskconver.config import Config
from maskconver.data.types import CategorySet
from maskconver.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, fail, one_line
from maskconver.files import write_text_atomic
from maskconver.tasks.instance import (
    RESULTS_JSON,
    coco_results,
    evaluate_instances,
    is_instance_task,
    predict_instances,
)


def is_instance_checkpoint(path: str | Path | None) -> bool:
    """True when ``path`` is a checkpoint whose config is an instance-task DR1Mask.

    Anything unreadable answers False: the panoptic command then reports it.
    """
    if not path:
        return False
    from maskconver.config import load_config
    from maskconver.engine.checkpoint import CONFIG_FILE, resolve_checkpoint_dir

    try:  # the config only: the weights are read once, by the command that runs
        return is_instance_task(load_config(str(resolve_checkpoint_dir(path) / CONFIG_FILE)))
    except Exception:  # noqa: BLE001 - the panoptic path reports a bad checkpoint
        return False


def format_mask_ap(results: dict[str, Any]) -> str:
    """One line of COCOeval's summary in percent (``-`` where nothing was scored)."""
    m = results["mask_ap"]
    names = (("AP", "ap"), ("AP50", "ap50"), ("AP75", "ap75"), ("APs", "aps"), ("APm", "apm"))
    parts = [f"{n} {m[k] * 100:.2f}" if m[k] >= 0 else f"{n} -" for n, k in names]
    return f"Mask AP | {'  '.join(parts)}  ({m['n']} thing classes, {results['images']} images)"


def evaluate_instance_checkpoint(
    model: Any,
    cfg: Config,
    categories: CategorySet,
    num_classes: int,
    data_root: str,
    split: str,
    args: argparse.Namespace,
) -> int:
    """``maskconver evaluate --checkpoint`` of an instance checkpoint (mask AP)."""
    from maskconver.data.coco_instances import CocoInstanceDataset
    from maskconver.data.coco_panoptic import DatasetError

    try:
        dataset = CocoInstanceDataset.from_root(data_root, split, label_space=cfg.model.label_space)
    except DatasetError as e:
        return fail("evaluate", one_line(e))
    unknown = sorted({c.id for c in dataset.categories.categories} - set(categories.by_id))
    if unknown:
        return fail(
            "evaluate",
            f"dataset {data_root} has category ids {unknown} that the checkpoint does not know",
        )
    save = getattr(args, "save_predictions", None)
    try:
        results = evaluate_instances(
            model,
            dataset,
            cfg=cfg,
            categories=categories,
            num_classes=num_classes,
            batch_size=int(getattr(args, "batch_size", None) or cfg.eval.batch_size),
            max_images=int(getattr(args, "max_images", 0) or 0),
            device=getattr(args, "device", None) or "cpu",
            save_dir=Path(save) if save else None,
        )
    except (DatasetError, ValueError) as e:
        return fail("evaluate", one_line(e))
    print(format_mask_ap(results))
    output = getattr(args, "output", None)
    if output:
        write_text_atomic(output, json.dumps(results, indent=2))
        print(f"metrics: {output}")
    return EXIT_OK


def predict_instance_files(args: argparse.Namespace, paths: list[Path], ids: list[Any]) -> int:
    """``maskconver predict`` of an instance checkpoint: ``<output>/instances.json``.

    Args:
        args: the ``predict`` arguments (``checkpoint``, ``output``, ``device``, ``batch_size``,
            ``no_ema``, ``score_threshold``, ``overwrite``).
        paths: the input images.
        ids: their image ids (file stems, or the ids of ``--image-info``).
    """
    from maskconver.build import build_eval_transforms
    from maskconver.data.image_io import ImageReadError, load_image
    from maskconver.data.types import PanopticSample
    from maskconver.engine.checkpoint import load_model
    from maskconver.meta.dr1mask.build import build_instance_postprocessor

    if getattr(args, "model", None):
        return fail("predict", "the instance task predicts from --checkpoint (no exported graph)")
    output: Path = args.output
    target = output / RESULTS_JSON
    if target.exists() and not getattr(args, "overwrite", False):
        return fail("predict", f"{target} exists; pass --overwrite to replace it")
    device = getattr(args, "device", None) or "cpu"
    model, cfg, categories, num_classes = load_model(
        args.checkpoint, use_ema=not getattr(args, "no_ema", False), device=device
    )
    post = build_instance_postprocessor(cfg, categories, num_classes)
    if getattr(args, "score_threshold", None) is not None:
        post.score_threshold = args.score_threshold
    transform = build_eval_transforms(cfg)
    results: list[dict[str, Any]] = []
    done = failed = 0
    batch = max(1, int(getattr(args, "batch_size", 1) or 1))
    for first in range(0, len(paths), batch):
        samples, chosen = [], []
        for path, image_id in zip(paths[first : first + batch], ids[first : first + batch]):
            try:
                image = load_image(path)
            except ImageReadError as e:
                print(f"warning: skipped {path}: {one_line(e)}")
                failed += 1
                continue
            size = (int(image.shape[0]), int(image.shape[1]))
            sample = PanopticSample(
                image=image,
                panoptic=np.zeros(size, np.int32),
                segments=[],
                meta={"orig_size": size},
            )
            samples.append(transform(sample))
            chosen.append(image_id)
        if not samples:
            continue
        for image_id, pred in zip(chosen, predict_instances(model, post, samples, device)):
            results.extend(coco_results(pred, image_id))
            done += 1
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, json.dumps(results))
    print(f"{done} image(s) predicted: {len(results)} instances in {target}")
    if failed:
        print(f"{failed} image(s) could not be read (each named above)")
    return EXIT_OK if done else (EXIT_FAILED if failed else EXIT_BAD_INPUT)
