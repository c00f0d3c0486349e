"""Argument helpers shared by the subcommands (no torch import: ``maskconver --help`` is fast).

Every numeric flag takes one of the ``type=`` callables below (``NUMERIC_TYPES``; a test walks the
parser and fails on a bare ``int`` or ``float``): a value outside its domain is a usage error,
printed by ``ArgumentParser.error`` as one line that names the flag, the allowed range and the
value, with exit code 2 (``errors.fail``, ``EXIT_BAD_INPUT``).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from maskconver.errors import fail

PROG = "maskconver"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line through ``errors.fail``.

    Sub-parsers made with ``add_subparsers`` are of the same class, so every subcommand's bad
    flag (``maskconver predict: error: argument --score-threshold: must be ...``) exits with
    ``EXIT_BAD_INPUT`` and no usage block (``--help`` still prints it).
    """

    def format_help(self) -> str:
        """The help as plain text (``plain_help``): no reST markup, no line continuations."""
        return plain_help(super().format_help())

    def error(self, message: str) -> NoReturn:
        """Print ``maskconver <command>: error: <message> (see --help)`` and exit with 2."""
        command = self.prog.removeprefix(PROG).strip()
        raise SystemExit(fail(command, f"{' '.join(message.split())} (see {self.prog} --help)"))


# ``literal`` (reST, may wrap onto the next line) or `literal` (Markdown) -> literal
_INLINE_CODE = re.compile(r"``([^`]+?)``|(?<![`\w])`([^`\n]+?)`(?![`\w])")
# a shell line continuation (one or two backslashes, as a docstring may hold) and the next
# line's indentation: joined into one line, so a pasted example is one command
_CONTINUATION = re.compile(r"[ \t]*\\{1,2}[ \t]*\n[ \t]*")
# a reST literal-block marker ending a line (``example::``) -> one colon
_LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)


def plain_help(text: str) -> str:
    """Help text (descriptions are module docstrings in reST) as plain text for a terminal.

    Inline code markup is dropped (````--set```` -> ``--set``), a line ending in a shell
    continuation backslash is joined with the next one (a multi-line example pastes as one
    command) and a trailing ``::`` becomes ``:``.
    """
    text = _INLINE_CODE.sub(lambda m: m.group(1) or m.group(2), text)
    text = _CONTINUATION.sub(" ", text)
    return _LITERAL_MARKER.sub(":", text)


def _number(text: str, kind: Callable[[str], float], domain: str) -> float:
    """``kind(text)``, or ``ArgumentTypeError`` naming the domain and the text."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {domain}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {domain}, got {text}")
    return value


def positive_int(text: str) -> int:
    """``type=`` of a count or size that must be >= 1."""
    value = int(_number(text, int, "an integer >= 1"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """``type=`` of a count that may be 0 (a seed, images of a split, runs)."""
    value = int(_number(text, int, "an integer >= 0"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """``type=`` of any finite number (no nan, no inf)."""
    return _number(text, float, "a finite number")


def positive_float(text: str) -> float:
    """``type=`` of a finite number > 0 (a duration)."""
    value = _number(text, float, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def probability(text: str) -> float:
    """``type=`` of a probability or a fraction: a finite number in [0, 1]."""
    value = _number(text, float, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


# the validating ``type=`` callables of numeric flags (tests/test_cli_args.py walks the parser)
NUMERIC_TYPES: tuple[Callable[[str], float], ...] = (
    positive_int,
    non_negative_int,
    finite_float,
    positive_float,
    probability,
)


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
        "--model",
        help="an exported .onnx file (`maskconver export`; runs on onnxruntime), an OpenVINO "
        ".xml (`maskconver export --format openvino`; runs on OpenVINO) or a .tflite "
        "(`--format tflite`; runs on LiteRT)",
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="torch for --checkpoint, onnxruntime for --model (the default follows the source)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads of torch or of the onnxruntime session (default: the library's)",
    )
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="torch: trace and freeze the network (batch norm folded), channels_last",
    )
    parser.add_argument(
        "--precision",
        choices=("f32", "bf16"),
        default="f32",
        help="OpenVINO .xml models: float ops in f32 (matches torch) or bf16 (faster on CPUs "
        "with AMX / AVX-512 BF16, less exact; docs/openvino.md)",
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
    model = getattr(args, "model", None)
    if getattr(args, "precision", "f32") != "f32" and Path(model or "").suffix.lower() != ".xml":
        return f"--precision {args.precision} applies to OpenVINO .xml models (--model M.xml)"
    if args.backend == "torch" and getattr(args, "model", None):
        return (
            "--model is an exported file (ONNX, OpenVINO .xml or .tflite) and runs on its own "
            "runtime; use --checkpoint for torch"
        )
    return None


def load_exported(path: str | Path, threads: int | None = None, precision: str = "f32") -> Any:
    """The ``Predictor`` of an exported file: OpenVINO ``.xml`` IR, ``.tflite``, else ``.onnx``.

    ``precision`` (``"f32"`` or ``"bf16"``) is OpenVINO's inference precision.
    """
    from maskconver.predictor import Predictor

    if Path(path).suffix.lower() == ".xml":
        return Predictor.from_openvino(path, threads=threads, precision=precision)
    if Path(path).suffix.lower() == ".tflite":
        return Predictor.from_tflite(path, threads=threads)
    return Predictor.from_onnx(path, threads=threads)
