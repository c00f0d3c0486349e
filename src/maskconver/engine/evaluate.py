"""Model evaluation: PQ (and mIoU, mask AP) of a model on a dataset, optionally saving predictions.

``evaluate_model`` runs the eval transform per sample, a batched forward in
``torch.inference_mode()``, the panoptic merge back to each image's ORIGINAL size, and updates
``PanopticMetrics`` (PQ plus the ``eval.metrics`` extras: semantic mIoU, mask AP) with the
dataset's original ground truth (the sample before any transform), so the numbers match the
official COCO evaluation of the saved files.

Distributed: under ``torchrun`` each rank takes the strided shard ``rank, rank + world, ...``;
the PQ count/IoU-sum state and the semantic confusion matrix are all-reduced and the mask-AP
RLE records all-gathered, so every rank returns the same metrics. Predictions are
only saved when ``world_size == 1`` (one writer owns the JSON); a multi-rank run with
``save_dir`` raises instead of silently writing a partial file.

The command-line body (``maskconver evaluate --checkpoint ...``) lives in ``commands/evaluate.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from maskconver.config import Config
from maskconver.data.types import CategorySet, PanopticSample, copy_sample
from maskconver.engine.distributed import all_reduce_sum, get_rank, get_world_size
from maskconver.inference import Backend, as_backend, predict_samples


class PanopticDataset(Protocol):
    """What evaluation needs from a dataset: length and indexing to ``PanopticSample``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> PanopticSample: ...


def _reduce_state(state: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Sum a ``PanopticQuality.state()`` (float64 ``[num_categories, 4]``) over ranks.

    The sum runs on the evaluation device (NCCL reduces CUDA tensors only).
    """
    return all_reduce_sum(state.to(device)).cpu()


def _gather_records(records: list[Any]) -> list[Any]:
    """Every rank's list of picklable records, concatenated in rank order (on every rank)."""
    import torch.distributed as dist

    parts: list[Any] = [None] * get_world_size()
    dist.all_gather_object(parts, records)
    return [record for part in parts for record in part]


def _reduce_metrics(metric: Any, device: str | torch.device) -> None:
    """Replace a ``PanopticMetrics``' states by their sums / concatenation over ranks."""
    metric.pq.load_state(_reduce_state(metric.pq.state(), device))
    if metric.semantic is not None:
        metric.semantic.load_state(_reduce_state(metric.semantic.state(), device))
    if metric.mask_ap is not None:
        metric.mask_ap.load_state(_gather_records(metric.mask_ap.state()))


def evaluate_model(
    model: nn.Module | Backend,
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
    transform: Any = None,
    skip_bad: bool = False,
    metrics: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Panoptic quality (and the other ``metrics``) of ``model`` on ``dataset``.

    Args:
        model: a module (put in eval mode here and restored afterwards) or any
            ``inference.Backend`` (e.g. an onnxruntime session).
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
        transform: the eval transform (default: the config's; a fixed-size exported model
            brings its own).
        skip_bad: skip (and count) samples that cannot be read instead of stopping.
        metrics: names of ``evaluation.metrics.METRIC_NAMES`` (default: ``cfg.eval.metrics``).

    Returns:
        ``PanopticMetrics.compute()``'s dict (PQ splits, ``semantic`` and ``mask_ap`` when
        asked for, ``per_class``) plus ``images`` (evaluated count over all ranks), ``skipped``
        (unreadable samples skipped on this rank) and ``seconds`` (wall time).

    Raises:
        DatasetError: the dataset has no images, or every one was skipped (no PQ of 0 over
            nothing).
    """
    from maskconver.build import build_eval_transforms, build_postprocessor
    from maskconver.evaluation.metrics import PanopticMetrics
    from maskconver.tasks.instance import evaluate_instances, is_instance_task

    if is_instance_task(cfg):  # mask AP of DR1Mask's instance output
        return evaluate_instances(
            model, dataset, cfg=cfg, categories=categories, num_classes=num_classes,
            batch_size=batch_size, max_images=max_images, device=device, save_dir=save_dir,
            transform=transform, skip_bad=skip_bad,
        )  # fmt: skip
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world = get_rank(), get_world_size()
    if save_dir is not None and world > 1:
        raise ValueError("saving predictions is only supported with one process (world_size 1)")
    start_time = time.perf_counter()
    total = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    if total == 0:  # a PQ of 0 over nothing is no result
        raise _no_images(dataset, "has no images")
    indices = list(range(rank, total, world))
    transform = transform if transform is not None else build_eval_transforms(cfg)
    postprocessor = build_postprocessor(cfg, categories, num_classes)
    metric = PanopticMetrics(categories, cfg.eval.metrics if metrics is None else metrics)
    writer = _make_writer(save_dir, categories)
    module = model if isinstance(model, nn.Module) else None
    was_training = module.training if module is not None else False
    runner = as_backend(model, device)  # a module goes to eval mode on ``device``
    bar = tqdm(
        total=len(indices),
        desc="evaluate",
        unit="img",
        disable=True if not progress or rank != 0 else None,  # None: off when not a terminal
        leave=False,
        dynamic_ncols=True,
    )
    skipped = 0
    try:
        for first in range(0, len(indices), batch_size):
            originals, positions = [], []
            for i in indices[first : first + batch_size]:
                try:
                    originals.append(dataset[i])
                    positions.append(i)
                except _bad_sample_errors() as e:
                    if not skip_bad:
                        raise
                    skipped += 1
                    bar.write(f"skipped unreadable validation sample {i}: {e}")
            if not originals:
                continue
            inputs = [transform(copy_sample(s)) for s in originals]
            predictions = predict_samples(runner, postprocessor, inputs)
            for sample, pred, position in zip(originals, predictions, positions):
                metric.update(
                    sample.panoptic,
                    sample.segments,
                    pred.panoptic,
                    pred.segments,
                    image_id=sample.image_id,
                    order=position,  # the dataset order on every number of ranks
                )
                if writer is not None:
                    writer.add(sample.image_id, _image_name(sample), pred.panoptic, pred.segments)
            bar.update(len(originals))
    finally:
        bar.close()
        if module is not None:
            module.train(was_training)
    if writer is not None:
        writer.close()
    if world > 1:
        _reduce_metrics(metric, device)
    if world == 1 and skipped == total:
        raise _no_images(dataset, f"has no readable image ({skipped} skipped)")
    results = dict(metric.compute())
    results["images"] = total - skipped
    results["skipped"] = skipped
    results["seconds"] = time.perf_counter() - start_time
    return results


def _no_images(dataset: PanopticDataset, what: str) -> Exception:
    """The ``DatasetError`` of a split with nothing to evaluate (names its JSON if it has one)."""
    from maskconver.data.coco_panoptic import DatasetError

    where = getattr(dataset, "json_path", None)
    name = f"the split {where}" if where is not None else "the dataset"
    return DatasetError(f"nothing to evaluate: {name} {what}")


def _bad_sample_errors() -> tuple[type[BaseException], ...]:
    from maskconver.data.coco_panoptic import DatasetError

    return (DatasetError, OSError)


def run_evaluation(
    model: nn.Module,
    dataset: PanopticDataset,
    *,
    cfg: Config,
    categories: CategorySet,
    num_classes: int,
    device: str | torch.device,
    progress: bool,
    step: int,
    log: Any,
) -> dict[str, Any]:
    """The training loop's evaluation: logged metrics, or ``{"step", "error"}`` on failure.

    Bad validation samples are skipped and counted with ``data.skip_bad_samples``; any other
    failure is reported as one line and training goes on (the checkpoint is already written).
    """
    from maskconver.errors import MaskconverError, one_line

    try:
        metrics = evaluate_model(
            model,
            dataset,
            cfg=cfg,
            categories=categories,
            num_classes=num_classes,
            batch_size=cfg.eval.batch_size,
            max_images=cfg.train.max_eval_images,
            device=device,
            progress=progress,
            skip_bad=cfg.data.skip_bad_samples,
        )
    except (MaskconverError, OSError, ValueError, RuntimeError) as e:
        log.message(
            f"error: evaluation at step {step} failed, the checkpoint is kept: {one_line(e)}"
        )
        return {"step": step, "error": one_line(e)}
    metrics["step"] = step
    log.log(step, {k: v for k, v in metrics.items() if k != "per_class"}, kind="eval")
    return metrics


def _image_name(sample: PanopticSample) -> str:
    """The sample's image file name (the writer names the PNG after its stem)."""
    return sample.file_name or f"{sample.image_id}.jpg"


def _make_writer(save_dir: Path | None, categories: CategorySet) -> Any:
    if save_dir is None:
        return None
    from maskconver.data.writer import CocoPanopticWriter

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    return CocoPanopticWriter(
        save_dir / "predictions.json", save_dir / "panoptic", categories, scores=True
    )
