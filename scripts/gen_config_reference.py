"""Write ``docs/config-reference.md`` from the config dataclasses (every key, type, range, default).

Usage: ``python scripts/gen_config_reference.py [--check]``. ``--check`` writes nothing and
exits with 1 when the committed page differs from the generated one (``tests/
test_config_reference.py`` does the same check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskconver.commands.config_cmd import reference_markdown

PAGE = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"


def main() -> int:
    """Write (or ``--check``) the page; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    text = reference_markdown()
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
