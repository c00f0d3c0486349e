"""Every ``--help`` is plain text: no reST markup, no line continuations, no unknown options.

The parser tree is walked from ``maskconver.cli.build_parser()``, so a new subcommand is covered
without touching this file.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from maskconver.cli import build_parser
from maskconver.commands.common import plain_help
from maskconver.commands.config_cmd import format_preset_list, preset_summary
from maskconver.config import list_presets

# flags of other programs that help texts quote (``torchrun --nproc_per_node 2 -m maskconver``)
FOREIGN_FLAGS = {"--nproc_per_node"}


def _walk(
    parser: argparse.ArgumentParser, name: str = "maskconver"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{name} {sub_name}")


PARSERS = list(_walk(build_parser()))
ALL_OPTIONS = {o for _, p in PARSERS for a in p._actions for o in a.option_strings}


def test_the_walk_finds_every_subcommand() -> None:
    names = {name for name, _ in PARSERS}
    assert {"maskconver predict", "maskconver data stats", "maskconver config list"} <= names


@pytest.mark.parametrize("name", [n for n, _ in PARSERS])
def test_help_is_plain_text(name: str) -> None:
    text = dict(PARSERS)[name].format_help()
    assert "``" not in text
    continued = [line for line in text.splitlines() if line.rstrip().endswith("\\")]
    assert not continued, f"{name} --help has lines ending in a backslash: {continued}"


@pytest.mark.parametrize("name", [n for n, _ in PARSERS])
def test_help_names_only_options_that_exist(name: str) -> None:
    text = dict(PARSERS)[name].format_help()
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", text))
    assert named - ALL_OPTIONS - FOREIGN_FLAGS == set()


def test_data_stats_help_and_errors_name_its_own_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stats = dict(PARSERS)["maskconver data stats"]
    own = {o for a in stats._actions for o in a.option_strings}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", stats.format_help()))
    assert named <= own
    from maskconver.cli import main

    assert main(["data", "stats", "--pngs", "x"]) == 2  # half a split given by its files
    assert "--panoptic-json and --pngs go together" in capsys.readouterr().err


def test_plain_help_rewrites_rst() -> None:
    text = (
        "``maskconver x``: run ``--set a.b=1``, see `docs/x.md` and the\n"
        "``long\n  literal``. Example::\n\n    maskconver x --a 1 \\\\\n        --b 2\n"
        "    maskconver y \\\n      --c 3\n"
    )
    assert plain_help(text) == (
        "maskconver x: run --set a.b=1, see docs/x.md and the\n"
        "long\n  literal. Example:\n\n    maskconver x --a 1 --b 2\n"
        "    maskconver y --c 3\n"
    )


@pytest.mark.parametrize("name", list_presets())
def test_config_list_shows_whole_sentences(name: str) -> None:
    summary = preset_summary(name)
    assert summary, f"preset {name} has no header comment"
    assert summary.endswith((".", ":", ")")), summary  # never cut mid-sentence


def test_config_list_wraps_whole_descriptions() -> None:
    names = list_presets()
    wrapped = format_preset_list(names, 80)
    assert all(len(line) <= 80 for line in wrapped)
    column = max(len(n) for n in names) + 2
    starts = [line.split()[0] for line in wrapped if not line.startswith(" ")]
    assert starts == names
    # the wrapped text, joined back, is each preset's whole first sentence
    text = " ".join(line[column:].strip() for line in wrapped)
    for name in names:
        assert preset_summary(name) in text
    assert [line.split()[0] for line in format_preset_list(names, None)] == names
