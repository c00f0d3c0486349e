"""``maskconver evaluate``: PQ (mIoU, mask AP) of COCO panoptic files or of a checkpoint.

Two modes, exactly one per call:

* files: ``--gt-json --gt-dir --pred-json --pred-dir [--output] [--workers]`` scores existing
  predictions with ``evaluate_files`` (panopticapi semantics), prints the table and writes the
  metrics JSON;
* model: ``--checkpoint --data-root [--split] [--save-predictions] [--output] [--batch-size]
  [--max-images] [--device]`` loads the checkpoint and runs ``engine.evaluate.evaluate_model``.

``--metrics pq,miou,mask_ap`` (or ``all``) chooses what is computed besides PQ: semantic mIoU of
the panoptic output and COCOeval mask AP of the thing segments (ranked by each predicted
segment's ``score``; 1.0 where a prediction file has none). Files mode computes all three
unless asked otherwise (the PQ part keeps panopticapi's layout); model mode defaults to the
checkpoint config's ``eval.metrics``.

Unreadable or malformed inputs print one ``error:`` line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maskconver.commands.common import add_overrides, non_negative_int, positive_int
from maskconver.errors import EXIT_BAD_INPUT, EXIT_OK, fail, one_line
from maskconver.files import write_text_atomic
from maskconver.locking import folder_lock

if TYPE_CHECKING:
    from maskconver.data.types import CategorySet

FILES_ARGS = ("gt_json", "gt_dir", "pred_json", "pred_dir")
MODEL_ARGS = ("checkpoint", "data_root")
# the config sections ``evaluate --set`` may change (the network is the checkpoint's)
OVERRIDE_SECTIONS = ("data", "eval")
MODEL_ONLY_ARGS = (
    "split",
    "save_predictions",
    "batch_size",
    "max_images",
    "device",
    "model",
    "threads",
    "backend",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="panoptic quality of prediction files or of a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    files = p.add_argument_group("files mode (score existing COCO panoptic predictions)")
    files.add_argument("--gt-json", help="ground-truth COCO panoptic JSON")
    files.add_argument("--gt-dir", help="folder of ground-truth panoptic PNGs")
    files.add_argument("--pred-json", help="prediction JSON (annotations with segments_info)")
    files.add_argument("--pred-dir", help="folder of predicted panoptic PNGs")
    files.add_argument(
        "--workers", type=non_negative_int, default=0, help="processes (0/1: in-process)"
    )
    model = p.add_argument_group("model mode (run a checkpoint or an exported model on a dataset)")
    model.add_argument("--checkpoint", help="checkpoint directory or file (torch)")
    model.add_argument(
        "--model", help="an exported .onnx file (onnxruntime) or OpenVINO .xml IR (OpenVINO)"
    )
    model.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="torch for --checkpoint, onnxruntime for --model (the default)",
    )
    model.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads of torch or of the onnxruntime session",
    )
    model.add_argument(
        "--precision",
        choices=("f32", "bf16"),
        default="f32",
        help="OpenVINO .xml models: float ops in f32 (matches torch) or bf16 (faster on CPUs "
        "with AMX / AVX-512 BF16, less exact)",
    )
    model.add_argument("--data-root", help="dataset root (COCO panoptic layout)")
    model.add_argument(
        "--split",
        default=None,
        help="split (default: the checkpoint config's data.val_split, e.g. val2017)",
    )
    model.add_argument("--save-predictions", default=None, help="write predicted PNGs + JSON here")
    model.add_argument(
        "--batch-size", type=positive_int, default=None, help="images per forward pass"
    )
    model.add_argument(
        "--max-images", type=positive_int, default=None, help="evaluate the first N images"
    )
    model.add_argument("--device", default=None, help="torch device (default cpu), e.g. cuda")
    add_overrides(model, example=f"data.val_split=val2017 ({', '.join(OVERRIDE_SECTIONS)} keys)")
    p.add_argument(
        "--metrics",
        default=None,
        help="comma-separated pq,miou,mask_ap or 'all' (pq always; default: files mode all, "
        "model mode the config's eval.metrics)",
    )
    p.add_argument("--output", default=None, help="write the metrics JSON to this file")
    p.set_defaults(func=run, evaluate_parser=p)


def _check_mode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """``'files'`` or ``'model'``; argparse error unless exactly one mode is complete."""
    given_files = [a for a in FILES_ARGS if getattr(args, a) is not None]
    given_model = [a for a in MODEL_ARGS if getattr(args, a) is not None]
    given_model_only = [a for a in MODEL_ONLY_ARGS if getattr(args, a) is not None]

    def flags(names: list[str] | tuple[str, ...]) -> str:
        return " ".join("--" + n.replace("_", "-") for n in names)

    if given_files and getattr(args, "overrides", None):
        given_model_only.append("overrides")
    if given_files and (given_model or given_model_only):
        parser.error(
            f"choose one mode: files ({flags(given_files)}) and model "
            f"({flags(given_model + given_model_only)}) arguments were both given"
        )
    if given_files:
        missing = [a for a in FILES_ARGS if a not in given_files]
        if missing:
            parser.error(f"files mode also needs {flags(missing)}")
        if args.workers < 0:
            parser.error(f"--workers must be >= 0, got {args.workers}")
        return "files"
    if given_model or given_model_only:
        if args.checkpoint is not None and args.model is not None:
            parser.error("give --checkpoint (torch) or --model (onnx), not both")
        needed = ["data_root"] if args.model is not None else list(MODEL_ARGS)
        missing = [a for a in needed if getattr(args, a) is None]
        if missing:
            parser.error(f"model mode also needs {flags(missing)}")
        return "model"
    parser.error(
        f"give either files mode ({flags(FILES_ARGS)}) or model mode ({flags(MODEL_ARGS)})"
    )
    raise AssertionError("unreachable")  # parser.error exits


def run(args: argparse.Namespace) -> int:
    """Run the chosen mode; returns the exit code."""
    parser: argparse.ArgumentParser = args.evaluate_parser
    mode = _check_mode(args, parser)
    from maskconver.evaluation.metrics import parse_metric_names

    if args.metrics is not None:
        try:
            parse_metric_names(args.metrics)
        except ValueError as e:
            parser.error(f"--metrics: {e}")
    if mode == "model":
        return evaluate_checkpoint(args)

    from maskconver.evaluation.pq_files import evaluate_files, format_table

    try:
        metrics = evaluate_files(
            args.gt_json,
            args.gt_dir,
            args.pred_json,
            args.pred_dir,
            workers=args.workers,
            metrics=parse_metric_names(args.metrics or "all"),
        )
    except (OSError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(metrics))
    if args.output:
        out = Path(args.output)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            print(f"error: cannot write {out}: {one_line(e)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"metrics written to {out}")
    return EXIT_OK


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """``maskconver evaluate --checkpoint CKPT --data-root DIR ...``: print PQ, write JSON.

    Reads ``args.checkpoint``, ``args.data_root``, ``args.split`` (default: the config's
    ``data.val_split``), ``args.save_predictions``, ``args.output``, ``args.batch_size`` and
    ``args.max_images`` and ``args.metrics`` (missing attributes take their defaults; metrics
    default to the config's ``eval.metrics``). Returns 0, or 2 with a message
    naming the bad path when the checkpoint or dataset cannot be used.
    """
    from maskconver.commands.common import check_model_source
    from maskconver.config import Config
    from maskconver.data.coco_panoptic import CocoPanopticDataset, DatasetError
    from maskconver.engine.checkpoint import CheckpointError, load_model
    from maskconver.engine.data import check_split_present
    from maskconver.engine.evaluate import evaluate_model
    from maskconver.evaluation.metrics import parse_metric_names
    from maskconver.evaluation.pq_files import format_table

    onnx_path = getattr(args, "model", None)
    for name in ("model", "threads", "backend"):  # callers may pass a partial namespace
        if not hasattr(args, name):
            setattr(args, name, None)
    problem = check_model_source(args)
    if problem:
        return fail("evaluate", problem)
    try:  # --set keys and values, checked before anything is loaded
        apply_overrides(Config(), getattr(args, "overrides", None) or [])
    except ValueError as e:  # ConfigError
        return fail("evaluate", one_line(e))
    source = Path(onnx_path or args.checkpoint)
    if not source.exists():
        return fail("evaluate", f"{'model' if onnx_path else 'checkpoint'} not found: {source}")
    data_root = getattr(args, "data_root", None)
    if not data_root:
        return fail("evaluate", "--data-root is required to evaluate a checkpoint")
    if not Path(data_root).is_dir():
        return fail("evaluate", f"data root is not a folder: {data_root}")
    transform = None
    try:
        if onnx_path:
            from maskconver.commands.common import load_exported

            predictor = load_exported(onnx_path, threads=args.threads, precision=args.precision)
            model: Any = predictor.model
            cfg, categories = predictor.cfg, predictor.categories
            num_classes = model.metadata.num_classes
            transform = predictor.transform
        else:
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            model, cfg, categories, num_classes = load_model(source, use_ema=True, device="cpu")
    except (OSError, ValueError, KeyError, CheckpointError) as e:
        return fail("evaluate", f"cannot load {source}: {e}")
    try:
        cfg = apply_overrides(cfg, getattr(args, "overrides", None) or [])
    except ValueError as e:  # ConfigError
        return fail("evaluate", one_line(e))
    split = getattr(args, "split", None) or cfg.data.val_split
    from maskconver.tasks.instance import is_instance_task

    if is_instance_task(cfg):  # mask AP of DR1Mask's instance task
        from maskconver.tasks.instance_cli import evaluate_instance_checkpoint

        return evaluate_instance_checkpoint(
            model, cfg, categories, num_classes, data_root, split, args
        )
    try:
        check_split_present(data_root, split, key="data.val_split")
        dataset = CocoPanopticDataset(data_root, split, label_space=cfg.model.label_space)
    except DatasetError as e:
        return fail("evaluate", one_line(e))
    except (OSError, ValueError, KeyError) as e:
        return fail("evaluate", f"cannot read dataset {data_root} split {split}: {e}")
    unknown = _unknown_categories(dataset, categories)
    if unknown:
        return fail(
            "evaluate",
            f"dataset {data_root} has category ids {unknown} that the checkpoint does not know",
        )
    batch_size = getattr(args, "batch_size", None) or cfg.eval.batch_size
    save = getattr(args, "save_predictions", None)
    metric_names = getattr(args, "metrics", None)
    try:
        names = parse_metric_names(metric_names) if metric_names else None
    except ValueError as e:
        return fail("evaluate", f"--metrics: {e}")
    # one writer per --save-predictions folder
    with folder_lock(Path(save), "evaluate") if save else contextlib.nullcontext():
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
            transform=transform,
            metrics=names,
        )
    print(format_table(results))
    print(f"{results['images']} images in {results['seconds']:.1f} s")
    if save:
        print(f"predictions: {Path(save) / 'predictions.json'} + {Path(save) / 'panoptic'}/")
    output = getattr(args, "output", None)
    if output:
        write_text_atomic(output, json.dumps(_jsonable(results), indent=2))
        print(f"metrics: {output}")
    return EXIT_OK


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """The checkpoint's config with ``--set`` overrides of ``OVERRIDE_SECTIONS`` keys.

    Raises:
        ConfigError: a key outside those sections (the network is the checkpoint's), or a key
            or value the config refuses.
    """
    from maskconver.config import ConfigError, merge_overrides, parse_override

    for text in overrides:
        key = parse_override(text)[0]
        if key.split(".")[0] not in OVERRIDE_SECTIONS:
            allowed = ", ".join(f"{s}.*" for s in OVERRIDE_SECTIONS)
            raise ConfigError(f"--set {key}: evaluate takes {allowed} keys only")
    return merge_overrides(cfg, overrides) if overrides else cfg


def _unknown_categories(dataset: Any, categories: CategorySet) -> list[int]:
    dataset_categories: Sequence[Any] | None = getattr(dataset, "categories", None)
    if dataset_categories is None:
        return []
    items = getattr(dataset_categories, "categories", dataset_categories)
    return sorted(c.id for c in items if c.id not in categories.by_id)


def _jsonable(value: Any) -> Any:
    """Numbers/arrays/tensors -> plain JSON types, recursively."""
    import numpy as np
    import torch

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
