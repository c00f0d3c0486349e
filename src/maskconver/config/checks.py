"""A field's bounds live beside the field; one validator walks them.

A config field declares its range in its metadata::

    num_proposals: int = field(default=50, metadata=check(lambda v: v >= 1, ">= 1"))

and ``validate_fields`` walks every dataclass field of a config (recursively), raising
``ConfigError(f"{key} must be {expected}, got {value!r}")`` with the full dotted key for the first
value a check rejects. A field may hold several checks (``checks(...)``), tried in order; a check
may word its own message. Checks that involve several fields are a ``check`` method on the
section that owns them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from maskconver.errors import MaskconverError

CHECKS = "checks"  # the metadata key of a field's checks
DEFAULT_MESSAGE = "{key} must be {expected}, got {value!r}"


class ConfigError(MaskconverError, ValueError):
    """A config file or override is malformed, unknown or of the wrong type."""


@dataclass(frozen=True)
class Check:
    """One bound of a field.

    Attributes:
        ok: the predicate on the field's value.
        expected: what ``ok`` accepts, in words (``">= 1"``, ``"in [0, 1]"``).
        message: the error, a ``str.format`` template over ``key``, ``expected`` and ``value``.
    """

    ok: Callable[[Any], bool]
    expected: str
    message: str = DEFAULT_MESSAGE

    def error(self, key: str, value: Any) -> str:
        """The message for ``value`` at ``key``."""
        return self.message.format(key=key, expected=self.expected, value=value)


def check(
    ok: Callable[[Any], bool], expected: str, *, message: str = DEFAULT_MESSAGE
) -> dict[str, tuple[Check, ...]]:
    """Field metadata holding one check (``field(default=..., metadata=check(...))``)."""
    return {CHECKS: (Check(ok, expected, message),)}


def checks(*parts: Mapping[str, tuple[Check, ...]]) -> dict[str, tuple[Check, ...]]:
    """Field metadata holding the checks of several ``check(...)`` results, in order."""
    return {CHECKS: tuple(c for part in parts for c in part[CHECKS])}


def finite(x: float) -> bool:
    """``x`` is neither infinite nor NaN."""
    return math.isfinite(x)


# the bounds many fields share
POSITIVE = check(lambda v: v >= 1, ">= 1")
NON_NEGATIVE_INT = check(lambda v: v >= 0, ">= 0")
NON_NEGATIVE = check(lambda v: finite(v) and v >= 0, "a finite number >= 0")
POSITIVE_FLOAT = check(lambda v: finite(v) and v > 0, "a finite number > 0")
UNIT = check(lambda v: finite(v) and 0 <= v <= 1, "in [0, 1]")
FINITE = check(finite, "finite")


def validate_fields(section: Any, prefix: str = "", skip: Collection[str] = ()) -> None:
    """Run every field's checks, depth first in declaration order; raise the first failure.

    Args:
        section: a config dataclass instance.
        prefix: the dotted key of ``section`` followed by a dot (``"model."``), or ``""``.
        skip: dotted keys whose field (and everything below it) is not checked.
    """
    for f in dataclasses.fields(section):
        key = f"{prefix}{f.name}"
        if key in skip:
            continue
        value = getattr(section, f.name)
        for c in f.metadata.get(CHECKS, ()):
            if not c.ok(value):
                raise ConfigError(c.error(key, value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_fields(value, f"{key}.", skip)
