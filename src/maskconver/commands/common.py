"""Argument helpers shared by the subcommands (no torch import: ``maskconver --help`` is fast)."""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser, example: str = "train.max_steps=100") -> None:
    """Add ``--set KEY=VALUE [KEY=VALUE ...]`` (repeatable) collecting into ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (several may follow one --set; "
        "repeatable)",
    )


def add_model_source(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--checkpoint DIR`` (torch) or ``--model FILE.onnx`` (onnxruntime), plus ``--threads``.

    ``--backend onnxruntime`` with a checkpoint is refused with a hint to export first.
    """
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--checkpoint", help="checkpoint folder (e.g. .../checkpoints/best)")
    source.add_argument(
        "--model", help="an exported .onnx file (`maskconver export`); runs on onnxruntime"
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="torch for --checkpoint, onnxruntime for --model (the default follows the source)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch or of the onnxruntime session (default: the library's)",
    )
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="torch: trace and freeze the network (batch norm folded), channels_last",
    )


def check_model_source(args: argparse.Namespace) -> str | None:
    """An error message for inconsistent ``--checkpoint/--model/--backend/--threads``, else None."""
    if args.threads is not None and args.threads < 1:
        return f"--threads must be >= 1, got {args.threads}"
    if args.backend == "onnxruntime" and getattr(args, "checkpoint", None):
        return (
            "--backend onnxruntime runs an exported model: `maskconver export --checkpoint "
            f"{args.checkpoint} --output model.onnx`, then pass --model model.onnx"
        )
    if args.backend == "torch" and getattr(args, "model", None):
        return "--model is an ONNX file and runs on onnxruntime; use --checkpoint for torch"
    return None
