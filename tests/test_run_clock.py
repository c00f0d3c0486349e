"""Elapsed time and ETA of a training run: formatting, the clock, log lines and the bar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tqdm import tqdm

from maskconver.engine.logging import (
    BAR_FORMAT,
    MetricLogger,
    RunClock,
    TrainProgress,
    format_duration,
    read_metrics,
)

HOUR, MINUTE = 3600, 60


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.4, "0s"),
        (7.6, "8s"),
        (59.0, "59s"),
        (3 * MINUTE + 12, "3m12s"),
        (41 * MINUTE + 5, "41m05s"),
        (HOUR + 2 * MINUTE + 5, "1h02m05s"),  # 3725 s
        (27 * HOUR, "27h00m00s"),
        (-3.0, "0s"),
        (float("nan"), "?"),
        (float("inf"), "?"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_clock_counts_from_the_start_step_of_a_resumed_run() -> None:
    clock = FakeClock()
    run = RunClock(start_step=10, end_step=30, clock=clock)  # resumed at step 10
    assert run.times(10) == {"elapsed_s": 0.0, "eta_s": pytest.approx(float("nan"), nan_ok=True)}
    clock.now += 3 * 4.0  # 4 steps of 3 s: the mean step time is 3 s, 16 steps are left
    assert run.times(14) == {"elapsed_s": 12.0, "eta_s": 16 * 3.0}
    assert run.text(14) == "elapsed 12s  eta 48s"
    clock.now += 16 * 3.0
    assert run.times(30) == {"elapsed_s": 60.0, "eta_s": 0.0}
    assert run.text(30) == "elapsed 1m00s  eta 0s"


def test_log_line_shows_durations_and_the_record_keeps_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = MetricLogger(tmp_path, enabled=True, tensorboard=False)
    log.log(7, {"loss": 0.5, "elapsed_s": 192.0, "eta_s": 2465.0})
    line = capsys.readouterr().out.strip()
    assert line == "[train step 7] loss 0.5000  elapsed 3m12s  eta 41m05s"
    (record,) = read_metrics(tmp_path)
    assert (record["step"], record["loss"], record["elapsed_s"], record["eta_s"]) == (
        7,
        0.5,
        192.0,
        2465.0,
    )
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["kind"] == "train"


def test_bar_postfix_shows_elapsed_eta_and_the_last_loss() -> None:
    progress = TrainProgress(10, 4, 10, show=False)
    progress.clock = RunClock(4, 10, clock=lambda: 0.0)  # a frozen clock: 0 s so far
    progress.step(5)
    assert progress.bar.postfix == "elapsed 0s  eta 0s"
    progress.note(loss=0.25, lr=1e-3)
    progress.step(6)
    assert progress.bar.postfix == "elapsed 0s  eta 0s  loss 0.2500  lr 1.00e-03"
    progress.close()
    shown = tqdm.format_meter(
        6, 10, 2.0, bar_format=BAR_FORMAT, postfix="elapsed 2s  eta 4s", unit="step", initial=4
    )
    assert " 6/10 [" in shown and shown.endswith("1.00step/s, elapsed 2s  eta 4s]"), shown
