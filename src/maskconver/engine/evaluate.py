"""Model evaluation: PQ of a model on a panoptic dataset, optionally saving COCO predictions.

``evaluate_model`` runs the eval transform per sample, a batched forward in
``torch.inference_mode()``, the panoptic merge back to each image's ORIGINAL size, and updates
``PanopticQuality`` with the dataset's original ground truth (the sample before any transform),
so the number matches the official COCO evaluation of the saved files.

Distributed: under ``torchrun`` each rank takes the strided shard ``rank, rank + world, ...`` and
the PQ count/IoU-sum state is all-reduced, so every rank returns the same metrics. Predictions are
only saved when ``world_size == 1`` (one writer owns the JSON); a multi-rank run with
``save_dir`` raises instead of silently writing a partial file.

``evaluate_checkpoint(args)`` is the body of ``maskconver evaluate --checkpoint ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskconver.config import Config
from maskconver.data.types import CategorySet, PanopticSample
from maskconver.engine.distributed import all_reduce_sum, get_rank, get_world_size
from maskconver.predictor import predict_samples

EXIT_OK = 0
EXIT_USAGE = 2


class PanopticDataset(Protocol):
    """What evaluation needs from a dataset: length and indexing to ``PanopticSample``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> PanopticSample: ...


def _reduce_state(state: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Sum a ``PanopticQuality.state()`` (float64 ``[num_categories, 4]``) over ranks.

    The sum runs on the evaluation device (NCCL reduces CUDA tensors only).
    """
    return all_reduce_sum(state.to(device)).cpu()


def evaluate_model(
    model: nn.Module,
    dataset: PanopticDataset,
    *,
    cfg: Config,
    categories: CategorySet,
    num_classes: int,
    batch_size: int = 8,
    max_images: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    save_dir: Path | None = None,
) -> dict[str, Any]:
    """Panoptic quality of ``model`` on ``dataset``.

    Args:
        model: a ``MaskConver`` (put in eval mode here and restored afterwards).
        dataset: indexable ``PanopticSample`` source with original-resolution ground truth.
        cfg: the run's config (eval transform and post-processing thresholds).
        categories: the dataset categories the model was trained with.
        num_classes: the model's class channels.
        batch_size: images per forward.
        max_images: evaluate only the first N images (0 = all).
        device: where the forward runs.
        progress: show a tqdm bar (rate and ETA) on the main process.
        save_dir: if given, write ``<save_dir>/predictions.json`` + ``<save_dir>/panoptic/*.png``
            in COCO panoptic format with the GT image ids and file names.

    Returns:
        ``PanopticQuality.compute()``'s dict plus ``images`` (evaluated count over all ranks)
        and ``seconds`` (wall time of this call).
    """
    from maskconver.build import build_eval_transforms, build_postprocessor
    from maskconver.evaluation.pq import PanopticQuality

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world = get_rank(), get_world_size()
    if save_dir is not None and world > 1:
        raise ValueError("saving predictions is only supported with one process (world_size 1)")
    start_time = time.perf_counter()
    total = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    indices = list(range(rank, total, world))
    transform = build_eval_transforms(cfg)
    postprocessor = build_postprocessor(cfg, categories, num_classes)
    metric = PanopticQuality(categories)
    writer = _make_writer(save_dir, categories)
    was_training = model.training
    model.eval()
    bar = tqdm(
        total=len(indices), desc="evaluate", unit="img", disable=not progress or rank != 0, leave=False,
        dynamic_ncols=True,
    )
    try:
        for first in range(0, len(indices), batch_size):
            originals = [dataset[i] for i in indices[first : first + batch_size]]
            inputs = [transform(_copy_sample(s)) for s in originals]
            predictions = predict_samples(model, postprocessor, inputs, device=device)
            for sample, pred in zip(originals, predictions):
                metric.update(
                    sample.panoptic, sample.segments, pred.panoptic, pred.segments,
                    image_id=sample.image_id,
                )
                if writer is not None:
                    writer.add(sample.image_id, _image_name(sample), pred.panoptic, pred.segments)
            bar.update(len(originals))
    finally:
        bar.close()
        model.train(was_training)
    if writer is not None:
        writer.close()
    if world > 1:
        metric.load_state(_reduce_state(metric.state(), device))
    results = dict(metric.compute())
    results["images"] = total
    results["seconds"] = time.perf_counter() - start_time
    return results


def _copy_sample(sample: PanopticSample) -> PanopticSample:
    """A shallow copy with its own ``meta`` so transforms never touch the original GT."""
    return PanopticSample(
        image=sample.image,
        panoptic=sample.panoptic,
        segments=list(sample.segments),
        image_id=sample.image_id,
        file_name=sample.file_name,
        meta=dict(sample.meta),
    )


def _image_name(sample: PanopticSample) -> str:
    """The sample's image file name (the writer names the PNG after its stem)."""
    return sample.file_name or f"{sample.image_id}.jpg"


def _make_writer(save_dir: Path | None, categories: CategorySet) -> Any:
    if save_dir is None:
        return None
    from maskconver.data.writer import CocoPanopticWriter

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    return CocoPanopticWriter(save_dir / "predictions.json", save_dir / "panoptic", categories)


# ---------------------------------------------------------------------------------------------
# CLI body


def _fail(message: str) -> int:
    print(f"maskconver evaluate: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """``maskconver evaluate --checkpoint CKPT --data-root DIR ...``: print PQ, write JSON.

    Reads ``args.checkpoint``, ``args.data_root``, ``args.split`` (default: the config's
    ``data.val_split``), ``args.save_predictions``, ``args.output``, ``args.batch_size`` and
    ``args.max_images`` (missing attributes take their defaults). Returns 0, or 2 with a message
    naming the bad path when the checkpoint or dataset cannot be used.
    """
    from maskconver.data.coco_panoptic import CocoPanopticDataset
    from maskconver.engine.checkpoint import CheckpointError, load_model
    from maskconver.evaluation.pq_files import format_table

    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        return _fail(f"checkpoint not found: {checkpoint}")
    data_root = getattr(args, "data_root", None)
    if not data_root:
        return _fail("--data-root is required to evaluate a checkpoint")
    if not Path(data_root).is_dir():
        return _fail(f"data root is not a folder: {data_root}")
    try:
        model, cfg, categories, num_classes = load_model(checkpoint, use_ema=True, device="cpu")
    except (OSError, ValueError, KeyError, CheckpointError) as e:
        return _fail(f"cannot load checkpoint {checkpoint}: {e}")
    split = getattr(args, "split", None) or cfg.data.val_split
    try:
        dataset = CocoPanopticDataset(data_root, split, label_space=cfg.model.label_space)
    except (OSError, ValueError, KeyError) as e:
        return _fail(f"cannot read dataset {data_root} split {split}: {e}")
    unknown = _unknown_categories(dataset, categories)
    if unknown:
        return _fail(
            f"dataset {data_root} has category ids {unknown} that the checkpoint does not know"
        )
    batch_size = getattr(args, "batch_size", None) or cfg.eval.batch_size
    save = getattr(args, "save_predictions", None)
    results = evaluate_model(
        model,
        dataset,
        cfg=cfg,
        categories=categories,
        num_classes=num_classes,
        batch_size=int(batch_size),
        max_images=int(getattr(args, "max_images", 0) or 0),
        device=getattr(args, "device", None) or "cpu",
        progress=True,
        save_dir=Path(save) if save else None,
    )
    print(format_table(results))
    print(f"{results['images']} images in {results['seconds']:.1f} s")
    if save:
        print(f"predictions: {Path(save) / 'predictions.json'} + {Path(save) / 'panoptic'}/")
    output = getattr(args, "output", None)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(_jsonable(results), indent=2))
        print(f"metrics: {output}")
    return EXIT_OK


def _unknown_categories(dataset: Any, categories: CategorySet) -> list[int]:
    dataset_categories: Sequence[Any] | None = getattr(dataset, "categories", None)
    if dataset_categories is None:
        return []
    items = getattr(dataset_categories, "categories", dataset_categories)
    return sorted(c.id for c in items if c.id not in categories.by_id)


def _jsonable(value: Any) -> Any:
    """Numbers/arrays/tensors -> plain JSON types, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
