"""Every test a document names (``tests/<file>.py::<name>``) exists: a promise cites real tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"tests/(test_[A-Za-z0-9_]+\.py)::([A-Za-z0-9_]+)")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and node.name.startswith(("test", "Test"))
    }


def test_every_cited_test_exists() -> None:
    cited = [
        (doc.name, file, name)
        for doc in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
        for file, name in CITED.findall(doc.read_text(encoding="utf-8"))
    ]
    assert cited  # docs/reliability.md cites its tests
    found = {
        file: _tests_in(ROOT / "tests" / file)
        for _, file, _ in cited
        if (ROOT / "tests" / file).is_file()
    }
    missing = [
        f"{doc}: tests/{file}::{name}"
        for doc, file, name in cited
        if name not in found.get(file, set())
    ]
    assert not missing, missing
