"""The text tables of ``maskconver benchmark --profile`` (rows from ``benchmarking.profile``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from maskconver.benchmarking.profile import MEGA


def format_layers(rows: Sequence[Mapping[str, Any]], *, top: int) -> str:
    """The ``top`` slowest layers as a table, then one line for the rest.

    Args:
        rows: ``layer_row`` dicts.
        top: how many layers get their own line.
    """
    ranked = sorted(rows, key=lambda row: -float(row["ms"]))
    total = sum(float(row["ms"]) for row in rows) or 1.0
    header = (
        f"  {'op':<15s} {'output shape':<18s} {'MMACs':>8s} {'ms':>7s} {'share':>6s} "
        f"{'GFLOP/s':>8s} {'MB':>7s} {'floor ms':>8s} {'bound':<7s} name"
    )
    lines = [header]
    for row in ranked[:top]:
        shape = "x".join(str(d) for d in row["shape"])
        lines.append(
            f"  {row['kind']:<15s} {shape:<18s} {row['macs'] / MEGA:8.1f} {row['ms']:7.3f} "
            f"{100 * row['ms'] / total:5.1f}% {row['gflops']:8.1f} {row['bytes'] / MEGA:7.2f} "
            f"{row['floor_ms']:8.3f} {row['bound']:<7s} {_short(str(row['name']))}"
        )
    rest = ranked[top:]
    if rest:
        ms = sum(float(row["ms"]) for row in rest)
        floor = sum(float(row["floor_ms"]) for row in rest)
        lines.append(
            f"  {'(' + str(len(rest)) + ' more)':<15s} {'':<18s} "
            f"{sum(row['macs'] for row in rest) / MEGA:8.1f} {ms:7.3f} {100 * ms / total:5.1f}% "
            f"{'':>8s} {sum(row['bytes'] for row in rest) / MEGA:7.2f} {floor:8.3f}"
        )
    return "\n".join(lines)


def format_kinds(rows: Sequence[Mapping[str, Any]]) -> str:
    """``summarize`` rows as a table."""
    lines = [
        f"  {'kind':<15s} {'count':>5s} {'ms':>8s} {'share':>6s} {'GMACs':>7s} {'GFLOP/s':>8s} "
        f"{'floor ms':>8s}"
    ]
    for row in rows:
        lines.append(
            f"  {row['kind']:<15s} {row['count']:5d} {row['ms']:8.3f} {100 * row['share']:5.1f}% "
            f"{row['gmacs']:7.3f} {row['gflops']:8.1f} {row['floor_ms']:8.3f}"
        )
    return "\n".join(lines)


NAME_WIDTH = 48


def _short(name: str) -> str:
    """The tail of a long node name."""
    return name if len(name) <= NAME_WIDTH else "..." + name[-(NAME_WIDTH - 3) :]
