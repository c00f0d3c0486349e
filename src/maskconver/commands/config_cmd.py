"""``maskconver config``: list the shipped presets or print a resolved config as YAML.

``maskconver config show PRESET_OR_YAML [--set key=value ...]`` prints the full config after the
preset and overrides are applied (every key, defaults included), so its output is itself a
valid config file. ``maskconver config list`` names the presets with their header line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from maskconver.commands.common import add_overrides
from maskconver.config import ConfigError, dump_config, list_presets, load_config, resolve_preset
from maskconver.errors import EXIT_BAD_INPUT, EXIT_OK


def register(subparsers: Any) -> None:
    """Add the ``config`` subcommand with ``show`` and ``list``."""
    p = subparsers.add_parser(
        "config",
        help="show a resolved config or list presets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="print the resolved YAML of a preset or file")
    show.add_argument("config", help="preset name or YAML path")
    add_overrides(show)
    show.set_defaults(func=run_show)
    listing = sub.add_parser("list", help="list the shipped presets")
    listing.set_defaults(func=run_list)


def preset_summary(name: str) -> str:
    """First comment line of a preset file (its one-line description), or ''."""
    for line in resolve_preset(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def run_show(args: argparse.Namespace) -> int:
    """Print the resolved config."""
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(dump_config(cfg), end="")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    """Print one line per preset."""
    names = list_presets()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {preset_summary(name)}")
    return EXIT_OK
