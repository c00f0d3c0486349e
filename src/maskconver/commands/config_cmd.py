"""``maskconver config``: list the shipped presets or print a resolved config as YAML.

``maskconver config show PRESET_OR_YAML [--set key=value ...]`` prints the full config after the
preset and overrides are applied (every key, defaults included), so its output is itself a
valid config file. ``maskconver config list`` names the presets with the first sentence of their
header comment (wrapped). ``maskconver config reference`` prints the Markdown reference of every
key (``config_reference.reference_markdown``; ``docs/config-reference.md`` is its output).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import shutil
import sys
import textwrap
import tokenize
import typing
from typing import Any

from maskconver.commands.common import add_overrides
from maskconver.config import (
    Config,
    ConfigError,
    dump_config,
    list_presets,
    load_config,
    resolve_preset,
)
from maskconver.config.checks import CHECKS
from maskconver.errors import EXIT_BAD_INPUT, EXIT_OK


def register(subparsers: Any) -> None:
    """Add the ``config`` subcommand with ``show`` and ``list``."""
    p = subparsers.add_parser(
        "config",
        help="show a resolved config or list presets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="print the resolved YAML of a preset or file")
    show.add_argument("config", help="preset name or YAML path")
    add_overrides(show)
    show.set_defaults(func=run_show)
    listing = sub.add_parser("list", help="list the shipped presets")
    listing.set_defaults(func=run_list)
    reference = sub.add_parser("reference", help="print the Markdown reference of every config key")
    reference.set_defaults(func=run_reference)


LIST_WIDTH = 100  # columns of ``config list`` when the terminal's are unknown
MIN_DESCRIPTION_WIDTH = 40  # a narrower terminal still gets this many columns of description
# a sentence ends at a full stop followed by a space and a capital letter (or the paragraph's end)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def preset_summary(name: str) -> str:
    """The first sentence of a preset file's header comment, whole (on one line), or ''.

    The header is the comment paragraph at the top of the file; it ends at a blank comment
    line, an indented (code) comment line or the first non-comment line.
    """
    words: list[str] = []
    for line in resolve_preset(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:]
        if not text.strip() or text.startswith("   "):
            break
        words.append(text.strip())
    paragraph = " ".join(words)
    return _SENTENCE_END.split(paragraph, maxsplit=1)[0] if paragraph else ""


def run_show(args: argparse.Namespace) -> int:
    """Print the resolved config."""
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(dump_config(cfg), end="")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    """Print every preset with its whole description: wrapped on a terminal, else one line each."""
    width = shutil.get_terminal_size((LIST_WIDTH, 24)).columns if sys.stdout.isatty() else None
    print("\n".join(format_preset_list(list_presets(), width)))
    return EXIT_OK


def format_preset_list(names: list[str], width: int | None) -> list[str]:
    """``name  description`` per preset; wrapped to ``width`` columns (None: one line each).

    Descriptions are never cut: a wrapped one continues on lines indented under it.
    """
    column = max((len(n) for n in names), default=0) + 2
    lines = []
    for name in names:
        summary = preset_summary(name) or "(no description)"
        if width is None:
            lines.append(f"{name:<{column}}{summary}")
            continue
        lines += textwrap.wrap(
            summary,
            width=max(width, column + MIN_DESCRIPTION_WIDTH),
            initial_indent=f"{name:<{column}}",
            subsequent_indent=" " * column,
            break_on_hyphens=False,
        )
    return lines


def run_reference(args: argparse.Namespace) -> int:
    """Print the config reference (Markdown), the text of ``docs/config-reference.md``."""
    print(reference_markdown(), end="")
    return EXIT_OK


REFERENCE_HEADER = """# Config reference

Every key of a maskconver config: its type, the range it is checked against (``field``
metadata, see `config/checks.py`), its default and what it is for (the comment beside the field
in `src/maskconver/config/`). Set a key in a YAML file or with `--set key=value`;
`maskconver config show PRESET` prints a preset's resolved values. Only the sub-block of
`model.meta_architecture` (`model.maskconver`, `model.dr1mask` or `model.kmax`) is read.

Generated by `python scripts/gen_config_reference.py` (or `maskconver config reference`) from
the config dataclasses; `tests/test_config_reference.py` checks that this page is up to date.
"""
# a field's first line in a config dataclass body
_FIELD_LINE = re.compile(r"^    (\w+): ")


def field_comments(cls: type) -> dict[str, str]:
    """Each field of dataclass ``cls`` -> its source comment on one line ('' when it has none).

    A comment on the field's first line wins; otherwise the comment lines right above it.
    """
    source = inspect.getsource(cls)
    trailing: dict[int, str] = {}  # line number (1-based) -> the comment ending that line
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            trailing[token.start[0]] = token.string.lstrip("#").strip()
    comments: dict[str, str] = {}
    above: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip().startswith("#"):
            above.append(trailing.get(number, ""))
            continue
        match = _FIELD_LINE.match(line)
        if match:
            comments[match.group(1)] = trailing.get(number) or " ".join(above)
        above = []
    return comments


def _type_name(annotation: Any) -> str:
    """A field's annotation in words (string annotations stay as written)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.replace("typing.", "") or str(annotation)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(cls: type, prefix: str, sections: list[tuple[str, type]]) -> list[str]:
    """Table rows of ``cls``'s plain fields; its dataclass fields are queued in ``sections``."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = hints.get(f.name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            sections.append((key, hint))
            continue
        ranges = "; ".join(c.expected for c in f.metadata.get(CHECKS, ()))
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
        if choices and not ranges:
            ranges = "one of " + ", ".join(_value(c) for c in choices)
        rows.append(
            f"| `{key}` | `{_cell(_type_name(f.type))}` | {_cell(ranges) or '-'} | "
            f"`{_cell(_value(_default(f)))}` | {_cell(comments.get(f.name, '')) or '-'} |"
        )
    return rows


def reference_markdown() -> str:
    """The config reference page: one table per section, every key with type, range, default."""
    parts = [REFERENCE_HEADER]
    sections: list[tuple[str, type]] = [("", Config)]
    while sections:
        key, cls = sections.pop(0)
        rows = _rows(cls, f"{key}." if key else "", sections)
        if not rows:
            continue
        title = f"`{key}`" if key else "top level"
        doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        doc = doc.replace("``", "`")
        parts.append(f"\n## {title}\n\n{doc}\n\n")
        parts.append("| key | type | range | default | description |\n|---|---|---|---|---|\n")
        parts.append("\n".join(rows) + "\n")
    return "".join(parts)
