"""``maskconver`` command line: thin argparse front ends over the package API.

Each subcommand lives in ``maskconver/commands/<name>.py`` with ``register(subparsers)``; the
table below is the whole list.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand registered.

    Usage errors (a missing flag, a value outside its domain) print one line and exit with 2
    (``commands.common.ArgumentParser``).
    """
    from maskconver.commands.common import PROG, ArgumentParser

    parser = ArgumentParser(
        prog=PROG,
        description="MaskConver panoptic segmentation: train, evaluate, predict, benchmark.",
    )
    parser.add_argument(
        "--debug", action="store_true", help=f"show tracebacks (or set {DEBUG_ENV}=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        mod = importlib.import_module(f"maskconver.commands.{module}")
        mod.register(sub)
    return parser


DEBUG_ENV = "MASKCONVER_DEBUG"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code.

    One error path for every command: bad input (any ``MaskconverError``, a missing or
    unreadable file) prints ``maskconver <command>: error: <one line>`` and exits with 2; a
    failed run (``NonFiniteLossError``) or an unexpected error prints one line and exits with 1.
    ``--debug`` or ``MASKCONVER_DEBUG=1`` re-raises instead, with the traceback.
    """
    from maskconver.errors import (
        EXIT_BAD_INPUT,
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        MaskconverError,
        fail,
        one_line,
    )

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    command = str(getattr(args, "command", "") or "")
    where = f"maskconver {command}".rstrip()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            raise
        if isinstance(e, MaskconverError):
            return fail(command, one_line(e), EXIT_BAD_INPUT)
        if isinstance(e, OSError):  # a missing / unreadable / unwritable file or a full disk
            return fail(command, one_line(e), EXIT_BAD_INPUT)
        # by name (importing engine.step would import torch): the error or a subclass of it
        if any(c.__name__ == "NonFiniteLossError" for c in type(e).__mro__):
            return fail(command, one_line(e), EXIT_FAILED)
        print(
            f"{where}: unexpected error: {type(e).__name__}: {one_line(e)} (run with --debug "
            f"or {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
