"""Metric logging: ``metrics.jsonl`` (one JSON object per record), stdout lines, TensorBoard.

TensorBoard is used only when ``torch.utils.tensorboard`` imports (it needs the ``tensorboard``
package); otherwise it is skipped silently. Only rank 0 should pass ``enabled=True``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if value != 0.0 and math.isfinite(value) and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` in order (empty if there is none).

    Args:
        path: the run directory (its ``metrics.jsonl`` is read) or the file itself.

    Raises:
        ValueError: a line that is not a JSON object (the message names file and line).
    """
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not a JSON object: {e}") from e
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{line_no}: not a JSON object: {line[:80]!r}")
        records.append(record)
    return records


class MetricLogger:
    """Appends records to ``<output_dir>/metrics.jsonl``, prints them, mirrors to TensorBoard.

    Args:
        output_dir: run directory (created if missing).
        enabled: False makes every call a no-op (non-zero ranks).
        tensorboard: try to write TensorBoard events under ``<output_dir>/tb``.
    """

    def __init__(self, output_dir: str | Path, *, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_FILE
        self._writer: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(Path(output_dir) / "tb"))
            except Exception:  # tensorboard not installed or broken: skip silently
                self._writer = None

    def log(self, step: int, values: dict[str, Any], *, kind: str = "train") -> None:
        """Write one record ``{"kind", "step", "time", **values}`` (nested dicts flattened).

        Args:
            step: optimizer steps completed.
            values: scalars (floats/ints/strings); nested dicts become ``a/b`` keys.
            kind: ``"train"`` or ``"eval"`` (also the TensorBoard tag prefix).
        """
        if not self.enabled:
            return
        flat = _flatten(values)
        record = {"kind": kind, "step": step, "time": time.time(), **flat}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        text = "  ".join(f"{k} {_format_value(v)}" for k, v in flat.items())
        tqdm.write(f"[{kind} step {step}] {text}")
        if self._writer is not None:
            for key, value in flat.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{kind}/{key}", value, step)

    def message(self, text: str) -> None:
        """Print a free-form line (rank 0 only)."""
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def progress_bar(total: int, initial: int, *, show: bool) -> tqdm[Any]:
    """The training loop's bar over optimizer steps (rate, ETA).

    Args:
        total: the run's ``max_steps``.
        initial: the step the run starts from (a resumed run's bar starts part-way).
        show: False hides it; True shows it when stderr is a terminal.
    """
    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        desc="train",
        dynamic_ncols=True,
        disable=None if show else True,  # None: off when not a terminal
    )
