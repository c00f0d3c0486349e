"""``maskconver`` command line: thin argparse front ends over the package API.

Each subcommand lives in ``maskconver/commands/<name>.py`` with ``register(subparsers)``; the
table below is the whole list.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module under maskconver.commands (imported lazily so `--help` stays fast)
COMMANDS: dict[str, str] = {
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "export": "export",
    "benchmark": "benchmark",
    "config": "config_cmd",
    "data": "data",
    "quickstart": "quickstart",
}


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="maskconver",
        description="MaskConver panoptic segmentation: train, evaluate, predict, benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        mod = importlib.import_module(f"maskconver.commands.{module}")
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
