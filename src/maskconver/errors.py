"""The error every user-facing failure of maskconver derives from.

Bad input (a config key, a checkpoint, a dataset file, an image, an export) raises a subclass of
``MaskconverError`` whose message names the file, image id or key; the command line prints it as
one line and exits with code 2 (``cli.main``). ``--debug`` (or ``MASKCONVER_DEBUG=1``) shows the
traceback instead.
"""

from __future__ import annotations


class MaskconverError(Exception):
    """Base of maskconver's errors about bad input; the message says what and where."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace folded)."""
    return " ".join(str(error).split()) or type(error).__name__
