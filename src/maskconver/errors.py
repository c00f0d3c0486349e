"""The error every user-facing failure of maskconver derives from.

Bad input (a config key, a checkpoint, a dataset file, an image, an export) raises a subclass of
``MaskconverError`` whose message names the file, image id or key; the command line prints it as
one line and exits with code 2 (``cli.main``). ``--debug`` (or ``MASKCONVER_DEBUG=1``) shows the
traceback instead.

This module also owns the command line's exit codes and its one-line failure message
(``fail``); it imports nothing heavy, so ``maskconver --help`` stays torch-free.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
# the run itself failed (a non-finite loss, an unexpected error) or produced nothing
EXIT_FAILED = 1
# bad input or usage: an invalid argument, a config key, a missing or unreadable file
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT


class MaskconverError(Exception):
    """Base of maskconver's errors about bad input; the message says what and where."""


# torch's DataLoader re-raises a worker's exception with the worker's traceback in its message
WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def original_message(text: str) -> str:
    """A DataLoader worker's own exception message, without the traceback text around it.

    The re-raised message reads ``Caught <Type> in DataLoader worker process N.`` + the
    traceback, whose last line is ``<module.Type>: <message>``; other text is returned as is.
    """
    if WORKER_TRACEBACK not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    kind, sep, message = last.partition(": ")
    return message if sep and " " not in kind else last


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace folded; a worker's traceback left out)."""
    return " ".join(original_message(str(error)).split()) or type(error).__name__


def fail(command: str, message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print ``maskconver <command>: error: <message>`` on stderr and return the exit code.

    Args:
        command: the subcommand (``"train"``); empty for the bare ``maskconver``.
        message: what went wrong, on one line (see ``one_line``).
        code: the exit code to return (``EXIT_BAD_INPUT`` unless the run itself failed).
    """
    print(f"maskconver {command}".rstrip() + f": error: {message}", file=sys.stderr)
    return code
