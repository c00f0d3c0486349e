"""``docs/config-reference.md`` is the generated reference of every config key, up to date."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from maskconver.commands.config_cmd import field_comments, reference_markdown
from maskconver.config import Config, DataConfig

PAGE = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"


def _keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += _keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def test_committed_page_equals_the_generated_one() -> None:
    assert PAGE.read_text() == reference_markdown(), (
        "docs/config-reference.md is out of date: run python scripts/gen_config_reference.py"
    )


def test_every_key_has_one_row_with_its_default_and_range() -> None:
    text = reference_markdown()
    keys = _keys(Config)
    assert len(keys) > 100
    for key in keys:
        assert text.count(f"| `{key}` |") == 1, key
    num_proposals = next(line for line in text.splitlines() if "`model.num_proposals`" in line)
    assert "`50`" in num_proposals and "in [1, 1000]" in num_proposals
    root = next(line for line in text.splitlines() if "| `data.root` |" in line)
    assert "`null`" in root


def test_field_comments_reads_the_comment_beside_or_above_a_field() -> None:
    comments = field_comments(DataConfig)
    assert comments["skip_bad_samples"].startswith("report and skip unreadable samples")
    assert set(comments) == {f.name for f in dataclasses.fields(DataConfig)}
