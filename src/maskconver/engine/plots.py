"""Training curves from ``metrics.jsonl``: loss terms (log scale) and PQ against the step.

``metrics.jsonl`` holds one JSON object per line. Training rows carry ``step`` and one or more
loss terms (numeric keys whose name contains ``loss``); evaluation rows carry ``step`` and a PQ
value (``pq`` or ``all/pq`` as a fraction, or ``PQ`` in percent, at the top level or under
``metrics``/``all``).
Rows of other kinds are ignored, so the plot survives new columns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt

from maskconver.engine.logging import read_metrics

FIGURE_SIZE = (10.0, 4.0)  # inches, two panels side by side
FIGURE_DPI = 110
PERCENT = 100.0
FEW_POINTS = 10  # loss series shorter than this get point markers


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pq_of(row: dict[str, Any]) -> float | None:
    """PQ of an evaluation row as a fraction in [0, 1], or None if the row has none."""
    for holder in (row, row.get("metrics"), row.get("all"), row.get("eval")):
        if not isinstance(holder, dict):
            continue
        for key in ("pq", "all/pq"):
            if _is_number(holder.get(key)):
                return float(holder[key])
        if _is_number(holder.get("PQ")):
            return float(holder["PQ"]) / PERCENT
        nested = holder.get("all")
        if isinstance(nested, dict) and _is_number(nested.get("pq")):
            return float(nested["pq"])
    return None


def loss_series(rows: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """``{loss name: (steps, values)}`` over rows that have a ``step``; non-positive dropped."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        if not _is_number(row.get("step")):
            continue
        for key, value in row.items():
            if "loss" in key and _is_number(value) and value > 0:
                steps, values = series.setdefault(key, ([], []))
                steps.append(int(row["step"]))
                values.append(float(value))
    return series


def pq_series(rows: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """``(steps, pq)`` of the evaluation rows, PQ as a fraction."""
    steps: list[int] = []
    values: list[float] = []
    for row in rows:
        pq = _pq_of(row)
        if pq is not None and _is_number(row.get("step")):
            steps.append(int(row["step"]))
            values.append(pq)
    return steps, values


def plot_training_curves(metrics_jsonl: Path, out_png: Path) -> Path:
    """Draw loss terms (left, log y) and PQ (right) against the training step.

    Args:
        metrics_jsonl: the run's ``metrics.jsonl``.
        out_png: where the PNG goes (parent folders are created).

    Returns:
        ``out_png``.
    """
    rows = read_metrics(Path(metrics_jsonl))
    losses = loss_series(rows)
    pq_steps, pq_values = pq_series(rows)
    fig, (ax_loss, ax_pq) = plt.subplots(1, 2, figsize=FIGURE_SIZE, dpi=FIGURE_DPI)
    total_first = sorted(losses, key=lambda k: (k != "loss", k))
    for name in total_first:
        steps, values = losses[name]
        marker = "o" if len(steps) < FEW_POINTS else None  # a single log row is still visible
        ax_loss.plot(
            steps, values, label=name, linewidth=2.0 if name == "loss" else 1.0, marker=marker
        )
    if losses:
        ax_loss.set_yscale("log")
        ax_loss.legend(fontsize="small")
    else:
        ax_loss.text(
            0.5, 0.5, "no loss rows", ha="center", va="center", transform=ax_loss.transAxes
        )
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training losses")
    ax_loss.grid(True, which="both", alpha=0.3)
    if pq_steps:
        ax_pq.plot(pq_steps, [PERCENT * v for v in pq_values], marker="o")
        ax_pq.set_ylim(0.0, PERCENT)
    else:
        ax_pq.text(
            0.5, 0.5, "no evaluation rows", ha="center", va="center", transform=ax_pq.transAxes
        )
    ax_pq.set_xlabel("step")
    ax_pq.set_ylabel("PQ (%)")
    ax_pq.set_title("validation PQ")
    ax_pq.grid(True, alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
