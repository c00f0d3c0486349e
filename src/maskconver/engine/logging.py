"""Metric logging: ``metrics.jsonl`` (one JSON object per record), stdout lines, TensorBoard.

The training loop's records carry ``elapsed_s`` and ``eta_s`` (``RunClock``: the mean step time
since the run's start step, so a resumed run counts from its resume step); the printed lines
show them as ``elapsed 3m12s  eta 41m05s``, and so does the progress bar (``TrainProgress``).

TensorBoard is used only when ``torch.utils.tensorboard`` imports (it needs the ``tensorboard``
package); otherwise it is skipped silently. Only rank 0 should pass ``enabled=True``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from maskconver.config.migrate import flatten

METRICS_FILE = "metrics.jsonl"
SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600
# record keys in seconds that the printed lines show as durations (``elapsed 3m12s``)
DURATION_KEYS = ("elapsed_s", "eta_s")
UNKNOWN_DURATION = "?"
# tqdm's own elapsed/remaining replaced by the run clock's, which the postfix carries
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{rate_fmt}{postfix}]"


def format_duration(seconds: float) -> str:
    """A duration rounded to whole seconds: ``3725`` -> ``1h02m05s``, ``192`` -> ``3m12s``.

    Under a minute it is ``7s``; a non-finite value (no step timed yet) is ``?``.
    """
    if not math.isfinite(seconds):
        return UNKNOWN_DURATION
    total = max(0, round(seconds))
    hours, rest = divmod(total, SECONDS_PER_HOUR)
    minutes, secs = divmod(rest, SECONDS_PER_MINUTE)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _format_item(key: str, value: Any) -> str:
    """``key value`` of a printed record; ``elapsed_s 192.0`` prints as ``elapsed 3m12s``."""
    if key in DURATION_KEYS and isinstance(value, (int, float)):
        return f"{key.removesuffix('_s')} {format_duration(float(value))}"
    return f"{key} {_format_value(value)}"


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
        flat = flatten(values, sep="/")
        record = {"kind": kind, "step": step, "time": time.time(), **flat}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        text = "  ".join(_format_item(k, v) for k, v in flat.items())
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


class RunClock:
    """Elapsed time of a training run and its ETA from the mean step time since its start step.

    Args:
        start_step: the step the run starts from (a resumed run's resume step).
        end_step: the step it stops after.
        clock: seconds of a monotonic clock (``time.perf_counter``; tests pass a fake).
    """

    def __init__(
        self, start_step: int, end_step: int, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.start_step = start_step
        self.end_step = end_step
        self._clock = clock
        self._started = clock()

    def times(self, done: int) -> dict[str, float]:
        """``{"elapsed_s", "eta_s"}`` after ``done`` steps (``eta_s`` NaN before the first)."""
        elapsed = self._clock() - self._started
        steps = done - self.start_step
        remaining = max(self.end_step - done, 0)
        eta = elapsed / steps * remaining if steps > 0 else math.nan
        return {"elapsed_s": elapsed, "eta_s": eta}

    def text(self, done: int) -> str:
        """``elapsed 3m12s  eta 41m05s`` after ``done`` steps."""
        return "  ".join(_format_item(k, v) for k, v in self.times(done).items())


class TrainProgress:
    """The training loop's bar over optimizer steps: rate, elapsed, ETA, the last loss and LR.

    Args:
        total: the run's ``max_steps``.
        start_step: the step the run starts from (a resumed run's bar starts part-way).
        end_step: the step the run stops after (the ETA counts down to it).
        show: False hides the bar; True shows it when stderr is a terminal. The clock runs
            either way (``times`` feeds the log records).
    """

    def __init__(self, total: int, start_step: int, end_step: int, *, show: bool) -> None:
        self.clock = RunClock(start_step, end_step)
        self._last = ""
        self.bar = tqdm(
            total=total,
            initial=start_step,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            bar_format=BAR_FORMAT,
            disable=None if show else True,  # None: off when not a terminal
        )

    def times(self, done: int) -> dict[str, float]:
        """``{"elapsed_s", "eta_s"}`` after ``done`` steps (``RunClock.times``)."""
        return self.clock.times(done)

    def step(self, done: int) -> None:
        """Advance by one step; ``done`` steps are now complete."""
        self.bar.set_postfix_str(f"{self.clock.text(done)}{self._last}", refresh=False)
        self.bar.update(1)

    def note(self, *, loss: float, lr: float) -> None:
        """The last logged loss and LR, shown from the next step on."""
        self._last = f"  loss {loss:.4f}  lr {lr:.2e}"

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def progress_bar(total: int, start_step: int, end_step: int, *, show: bool) -> TrainProgress:
    """The training loop's bar (``TrainProgress``) from ``start_step`` of ``total`` steps."""
    return TrainProgress(total, start_step, end_step, show=show)
