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
