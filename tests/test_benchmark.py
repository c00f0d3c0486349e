"""``maskconver benchmark``: report fields, JSON output, table output, errors."""

from __future__ import annotations

import argparse
import json

import pytest

from maskconver.commands import benchmark


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    benchmark.register(parser.add_subparsers())
    args = parser.parse_args(["benchmark", *argv])
    return int(args.func(args))


def test_json_report_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(
        [
            "--config",
            "tiny",
            "--size",
            "64",
            "96",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--num-classes",
            "5",
            "--threads",
            "1",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preset"] == "tiny" and report["size"] == [64, 96] and report["threads"] == 1
    assert report["num_classes"] == 5
    assert report["params"] > 0 and report["macs"] > 0 and report["latency_ms"] > 0
    # the count scales with the image: 64x96 has 3/8 of the pixels of 128x128, so fewer MACs
    full = benchmark.benchmark("tiny", [], runs=0, num_classes=5)
    assert full["latency_ms"] is None and full["size"] == [128, 128]
    assert report["macs"] < full["macs"] and full["params"] == report["params"]


def test_config_num_classes_wins(capsys: pytest.CaptureFixture[str]) -> None:
    report = benchmark.benchmark("tiny", ["model.num_classes=9"], runs=0, num_classes=5)
    assert report["num_classes"] == 9


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--config", "tiny", "--runs", "0", "--set", "model.num_proposals=10"]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "params" in out and "latency" in out and "skipped" in out


def test_bad_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--config", "tiny", "--set", "model.hed=1", "--runs", "0"]) == 2
    assert "did you mean 'model.head'" in capsys.readouterr().out
