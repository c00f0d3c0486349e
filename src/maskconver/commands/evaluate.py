"""``maskconver evaluate``: PQ of COCO panoptic files, or of a checkpoint on a dataset.

Two modes, exactly one per call:

* files: ``--gt-json --gt-dir --pred-json --pred-dir [--output] [--workers]`` scores existing
  predictions with ``evaluate_files`` (panopticapi semantics), prints the table and writes the
  metrics JSON;
* model: ``--checkpoint --data-root [--split] [--save-predictions] [--output] [--batch-size]
  [--max-images] [--device]`` runs ``maskconver.engine.evaluate.evaluate_checkpoint(args)``.

Unreadable or malformed inputs print one ``error:`` line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
FILES_ARGS = ("gt_json", "gt_dir", "pred_json", "pred_dir")
MODEL_ARGS = ("checkpoint", "data_root")
MODEL_ONLY_ARGS = ("split", "save_predictions", "batch_size", "max_images", "device")


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
    files.add_argument("--workers", type=int, default=0, help="processes (0/1: in-process)")
    model = p.add_argument_group("model mode (run a checkpoint on a dataset)")
    model.add_argument("--checkpoint", help="checkpoint directory or file")
    model.add_argument("--data-root", help="dataset root (COCO panoptic layout)")
    model.add_argument(
        "--split",
        default=None,
        help="split (default: the checkpoint config's data.val_split, e.g. val2017)",
    )
    model.add_argument("--save-predictions", default=None, help="write predicted PNGs + JSON here")
    model.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    model.add_argument("--max-images", type=int, default=None, help="evaluate the first N images")
    model.add_argument("--device", default=None, help="torch device (default cpu), e.g. cuda")
    p.add_argument("--output", default=None, help="write the metrics JSON to this file")
    p.set_defaults(func=run, evaluate_parser=p)


def _check_mode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """``'files'`` or ``'model'``; argparse error unless exactly one mode is complete."""
    given_files = [a for a in FILES_ARGS if getattr(args, a) is not None]
    given_model = [a for a in MODEL_ARGS if getattr(args, a) is not None]
    given_model_only = [a for a in MODEL_ONLY_ARGS if getattr(args, a) is not None]

    def flags(names: list[str] | tuple[str, ...]) -> str:
        return " ".join("--" + n.replace("_", "-") for n in names)

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
        missing = [a for a in MODEL_ARGS if a not in given_model]
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
    if mode == "model":
        from maskconver.engine.evaluate import evaluate_checkpoint

        return int(evaluate_checkpoint(args) or 0)

    from maskconver.evaluation.pq_files import evaluate_files, format_table

    try:
        metrics = evaluate_files(
            args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, workers=args.workers
        )
    except (OSError, ValueError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(metrics))
    if args.output:
        out = Path(args.output)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            print(f"error: cannot write {out}: {_one_line(e)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"metrics written to {out}")
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
