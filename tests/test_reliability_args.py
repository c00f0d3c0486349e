"""Issue 22, class 4: every numeric flag of every command refuses values outside its domain.

A contract test over the real parser (``maskconver.cli.build_parser``): each option whose
``type=`` is one of the validating callables of ``commands/common.py`` is given ``nan``, ``inf``
and a value just outside its domain through ``maskconver.cli.main``; each is one line naming the
flag, exit 2, nothing on stdout. A numeric option with another ``type=`` fails the walk.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

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

# a value just outside each domain (finite_float has none besides nan/inf: a word)
OUT_OF_RANGE: dict[Callable[[str], float], str] = {
    positive_int: "0",
    non_negative_int: "-1",
    finite_float: "ten",
    positive_float: "0",
    probability: "1.5",
}
NON_NUMERIC_TYPES = (str, None)


def _parsers(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases map to one parser
                    seen.add(id(sub))
                    yield from _parsers(sub, (*words, name))


def _numeric_options() -> list[tuple[tuple[str, ...], str, Callable[[str], float], int]]:
    found = []
    for words, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.type in NUMERIC_TYPES:
                assert action.option_strings, (words, action.dest)  # no numeric positionals
                nargs = action.nargs if isinstance(action.nargs, int) else 1
                found.append((words, action.option_strings[0], action.type, nargs))
    return found


NUMERIC_OPTIONS = _numeric_options()


def test_walk_finds_the_numeric_options_of_every_command() -> None:
    commands = {words[0] for words, *_ in NUMERIC_OPTIONS}
    assert commands >= {"train", "evaluate", "predict", "export", "benchmark", "data"}
    assert {"quickstart"} <= commands
    assert OUT_OF_RANGE.keys() == set(NUMERIC_TYPES)  # every validating type has a bad value
    for words, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.type in (int, float):
                pytest.fail(f"maskconver {' '.join(words)} {action.option_strings}: bare number")


@pytest.mark.parametrize(
    ("words", "flag", "convert", "nargs"),
    NUMERIC_OPTIONS,
    ids=[f"{' '.join(w)} {f}" for w, f, *_ in NUMERIC_OPTIONS],
)
def test_every_numeric_flag_refuses_nan_inf_and_out_of_range(
    words: tuple[str, ...],
    flag: str,
    convert: Callable[[str], float],
    nargs: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for value in ("nan", "inf", "-inf", OUT_OF_RANGE[convert]):
        # ``--flag=-inf``: a lone ``-inf`` would read as an option
        given = [flag, *[value] * nargs] if nargs > 1 else [f"{flag}={value}"]
        if nargs > 1 and value.startswith("-"):
            continue
        with pytest.raises(SystemExit) as info:
            main([*words, *given])
        assert info.value.code == EXIT_BAD_INPUT, (flag, value)
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and not captured.out, captured
        assert err.startswith(f"maskconver {' '.join(words)}: error: argument {flag}"), err
        assert "must be" in err and value in err, err


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["train", "--config", "tiny", "--output-dir", "o", "--set", "train.lr=nan"], "train.lr"),
        (["train", "--config", "tiny", "--output-dir", "o", "--set", "train.max_steps=0"], "max"),
        (["evaluate", "--checkpoint", "c", "--data-root", "d", "--set", "model.x=1"], "model.x"),
    ],
)
def test_set_values_are_checked_as_config_keys(
    argv: list[str], key: str, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    code = main(argv)
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err, err
