"""Numeric command-line flags: a value outside its domain is one line naming the flag, exit 2.

The guard walks every subcommand's parser: a new ``int``/``float`` flag without one of the
validating ``type=`` callables of ``commands/common.py`` fails it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskconver.cli import build_parser, main
from maskconver.commands.common import (
    NUMERIC_TYPES,
    finite_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from maskconver.errors import EXIT_BAD_INPUT

PREDICT = ["predict", "--checkpoint", "ckpt", "--input", "in", "--output", "out"]
EVALUATE = ["evaluate", "--checkpoint", "ckpt", "--data-root", "data"]
TRAIN = ["train", "--config", "tiny", "--output-dir", "out"]
BENCHMARK = ["benchmark", "--config", "tiny"]
EXPORT = ["export", "--checkpoint", "ckpt", "--output", "m.onnx"]
SYNTH = ["data", "synth", "--out", "out"]
SHOW = ["data", "show", "root"]
COCO = ["data", "convert", "coco-instances", "i.json", "--images", "im", "--out", "o"]


@pytest.mark.parametrize(
    ("argv", "flag", "domain", "value"),
    [
        ([*PREDICT, "--score-threshold", "nan"], "--score-threshold", "[0, 1]", "nan"),
        ([*PREDICT, "--score-threshold", "2"], "--score-threshold", "[0, 1]", "2"),
        ([*PREDICT, "--overlap-threshold", "-0.1"], "--overlap-threshold", "[0, 1]", "-0.1"),
        ([*PREDICT, "--batch-size", "0"], "--batch-size", ">= 1", "0"),
        ([*PREDICT, "--threads", "0"], "--threads", ">= 1", "0"),
        ([*EVALUATE, "--batch-size", "0"], "--batch-size", ">= 1", "0"),
        ([*EVALUATE, "--max-images", "-2"], "--max-images", ">= 1", "-2"),
        ([*EVALUATE, "--threads", "0"], "--threads", ">= 1", "0"),
        (["evaluate", "--workers", "-1"], "--workers", ">= 0", "-1"),
        ([*TRAIN, "--threads", "0"], "--threads", ">= 1", "0"),
        (["quickstart", "--minutes", "-1"], "--minutes", "> 0", "-1"),
        (["quickstart", "--minutes", "inf"], "--minutes", "> 0", "inf"),
        (["quickstart", "--threads", "0"], "--threads", ">= 1", "0"),
        ([*BENCHMARK, "--runs", "-3"], "--runs", ">= 0", "-3"),
        ([*BENCHMARK, "--warmup", "-1"], "--warmup", ">= 0", "-1"),
        ([*BENCHMARK, "--size", "0", "10"], "--size", ">= 1", "0"),
        ([*BENCHMARK, "--threads", "0"], "--threads", ">= 1", "0"),
        ([*BENCHMARK, "--num-classes", "0"], "--num-classes", ">= 1", "0"),
        ([*BENCHMARK, "--sizes", "64", "0"], "--sizes", ">= 1", "0"),
        ([*BENCHMARK, "--rounds", "0"], "--rounds", ">= 1", "0"),
        ([*EXPORT, "--size", "64", "-64"], "--size", ">= 1", "-64"),
        ([*EXPORT, "--size", "6.5", "64"], "--size", ">= 1", "'6.5'"),
        ([*SYNTH, "--train", "-1"], "--train", ">= 0", "-1"),
        ([*SYNTH, "--val", "-1"], "--val", ">= 0", "-1"),
        ([*SYNTH, "--seed", "-1"], "--seed", ">= 0", "-1"),
        ([*SYNTH, "--min-size", "0"], "--min-size", ">= 1", "0"),
        ([*SYNTH, "--max-size", "x"], "--max-size", ">= 1", "'x'"),
        ([*SHOW, "--limit", "0"], "--limit", ">= 1", "0"),
        ([*SHOW, "--scale", "0"], "--scale", ">= 1", "0"),
        ([*COCO, "--overlap-threshold", "1.5"], "--overlap-threshold", "[0, 1]", "1.5"),
        ([*COCO, "--stuff-min-area", "-5"], "--stuff-min-area", ">= 0", "-5"),
    ],
)
def test_out_of_domain_flag_is_one_line_exit_2(
    argv: list[str], flag: str, domain: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and not captured.out, captured
    words = argv[: 3 if argv[:2] == ["data", "convert"] else 2 if argv[0] == "data" else 1]
    command = " ".join(words)
    assert err.startswith(f"maskconver {command}: error: argument {flag}: must be "), err
    assert domain in err and f"got {value}" in err


def test_synth_size_order_and_counts_exit_2_through_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cross-flag checks of ``data synth`` exit 2 with one line (they used to exit 1)."""
    from maskconver.commands.data import run_synth

    args = argparse.Namespace(
        out=tmp_path / "out",
        train=-1,
        val=0,
        seed=0,
        min_size=8,
        max_size=8,
        image_format="png",
        no_progress=True,
    )
    assert run_synth(args) == EXIT_BAD_INPUT
    assert "--train and --val must be >= 0, got -1, 0" in capsys.readouterr().err
    argv = [*SYNTH[:3], str(tmp_path / "out"), "--min-size", "64", "--max-size", "32"]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err == "maskconver data synth: error: --min-size must be <= --max-size, got 64 > 32"
    assert not (tmp_path / "out").exists()


def test_other_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in (
        (["train"], "the following arguments are required: --config, --output-dir"),
        (["nope"], "invalid choice: 'nope'"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == EXIT_BAD_INPUT
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.parametrize(
    ("convert", "good", "bad"),
    [
        (positive_int, {"1": 1, "640": 640}, ["0", "-1", "1.0", "x", ""]),
        (non_negative_int, {"0": 0, "7": 7}, ["-1", "2.5", "nan"]),
        (finite_float, {"-1.5": -1.5, "0": 0.0, "1e3": 1000.0}, ["nan", "inf", "-inf", "x"]),
        (positive_float, {"0.5": 0.5, "30": 30.0}, ["0", "-1", "nan", "inf"]),
        (probability, {"0": 0.0, "1": 1.0, "0.25": 0.25}, ["-0.01", "1.01", "nan", "inf"]),
    ],
)
def test_numeric_types(convert: object, good: dict[str, float], bad: list[str]) -> None:
    assert callable(convert)
    for text, value in good.items():
        assert convert(text) == value and type(convert(text)) is type(value)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got {text!r}|got {text}$"):
            convert(text)


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-parser below it (argparse's ``_SubParsersAction.choices``)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                yield from _parsers(sub)


def test_guard_every_numeric_flag_is_validated() -> None:
    parsers = list(_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {"maskconver predict", "maskconver data synth"}
    numeric: set[tuple[str, str]] = set()
    for parser in parsers:
        for action in parser._actions:
            if action.type in (int, float):
                pytest.fail(f"{parser.prog} {action.option_strings}: bare type={action.type}")
            if action.type in NUMERIC_TYPES:
                numeric.add((parser.prog, action.option_strings[0]))
                defaults = action.default if isinstance(action.default, list) else [action.default]
                for default in defaults:  # the defaults lie in the flag's own domain
                    if default is not None:
                        assert action.type(str(default)) == default, (parser.prog, action.dest)
            elif action.type is not None:  # other types must not be numbers in disguise
                assert action.type in (Path, str), (parser.prog, action.dest, action.type)
    assert numeric >= {  # the walk reaches flags of nested sub-parsers and shared helpers
        ("maskconver predict", "--score-threshold"),
        ("maskconver predict", "--threads"),
        ("maskconver data synth", "--train"),
        ("maskconver data convert coco-instances", "--overlap-threshold"),
    }
