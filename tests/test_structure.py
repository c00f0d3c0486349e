"""The layout rules of the package, checked on the source (``ast``) and on ``sys.modules``.

* no module imports a private name (``_x``) from another package;
* no import cycles among maskconver's modules, counting every import that runs (module level
  and inside functions; ``if TYPE_CHECKING:`` blocks excluded);
* no meta-architecture package imports another one;
* building the tiny MaskConver imports neither ResNet, nor DR1Mask, nor onnxruntime;
* every module imports on its own and ``python -m maskconver`` starts.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "maskconver"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node that can run, skipping the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return found


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """``(imported module, imported names)`` of every runtime import of one module."""
    return _imports_in(name, path.read_text(), is_package=path.name == "__init__.py")


def _imports_in(name: str, source: str, *, is_package: bool) -> list[tuple[str, list[str]]]:
    tree = ast.parse(source)
    out: list[tuple[str, list[str]]] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            out.append((module, [alias.name for alias in node.names]))
    return out


def _private_imports(
    name: str, imports: list[tuple[str, list[str]]], modules: dict[str, Path]
) -> list[str]:
    """Private names (``_x``) that module ``name`` imports from another package."""
    own = name.rpartition(".")[0] if modules[name].name != "__init__.py" else name
    found = []
    for module, names in imports:
        if module != PACKAGE and not module.startswith(PACKAGE + "."):
            continue
        is_package = module in modules and modules[module].name == "__init__.py"
        source_package = module if is_package else module.rpartition(".")[0]
        for imported in names:
            if imported.startswith("_") and not imported.startswith("__") and source_package != own:
                found.append(f"{name}: from {module} import {imported}")
    return found


def _edges() -> dict[str, set[str]]:
    """maskconver module -> the maskconver modules its runtime imports load."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names in _imports(name, path):
            if module != PACKAGE and not module.startswith(PACKAGE + "."):
                continue
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            if len(targets) < len(names) or not names:  # names that are not submodules
                targets.append(module)
            graph[name].update(t for t in targets if t in MODULES and t != name)
    return graph


def _package_of(module: str) -> str:
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def test_the_source_tree_is_found() -> None:
    assert {"maskconver.build", "maskconver.meta.maskconver.build"} <= set(MODULES)
    assert "maskconver.meta.dr1mask.build" in MODULES
    assert len(MODULES) > 100


def test_no_module_imports_a_private_name_from_another_package() -> None:
    offenders = [
        line
        for name, path in MODULES.items()
        for line in _private_imports(name, _imports(name, path), MODULES)
    ]
    assert offenders == []


def test_private_import_check_catches_an_offender() -> None:
    """The checker itself: the import this layout removed is reported, a sibling's is not."""
    name = "maskconver.meta.dr1mask.targets"
    bad = "from maskconver.meta.maskconver.targets.types import _stack\n"
    assert _private_imports(name, _imports_in(name, bad, is_package=False), MODULES) == [
        f"{name}: from maskconver.meta.maskconver.targets.types import _stack"
    ]
    sibling = "from maskconver.meta.dr1mask.boxes import _helper\nfrom . import _other\n"
    assert _private_imports(name, _imports_in(name, sibling, is_package=False), MODULES) == []
    typing_only = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from maskconver.x import _y\n"
    )
    assert _private_imports(name, _imports_in(name, typing_only, is_package=False), MODULES) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert _cycles(_edges()) == []


def test_meta_architecture_packages_do_not_import_each_other() -> None:
    metas = {  # the packages under maskconver.meta (meta.base is their shared contract)
        m.split(".")[2]
        for m, path in MODULES.items()
        if m.startswith("maskconver.meta.") and m.count(".") == 2 and path.name == "__init__.py"
    }
    assert {"maskconver", "dr1mask"} <= metas
    graph = _edges()
    offenders = []
    for name, targets in graph.items():
        if not name.startswith("maskconver.meta.") or name.count(".") < 2:
            continue
        own = name.split(".")[2]
        for target in targets:
            parts = target.split(".")
            other = len(parts) > 2 and parts[2] != own and parts[2] in metas
            if target.startswith("maskconver.meta.") and other:
                offenders.append(f"{name} -> {target}")
    assert offenders == []


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_building_tiny_stays_lazy() -> None:
    out = _run(
        "import sys\n"
        "from maskconver import build\n"
        "from maskconver.config import load_config\n"
        "cfg = load_config('tiny')\n"
        "model = build.build_model(cfg.model, 7)\n"
        "from maskconver.data.synthetic import SyntheticPanoptic\n"
        "cats = SyntheticPanoptic(1).categories\n"
        "build.build_postprocessor(cfg, cats, 7)\n"
        "build.build_criterion(cfg, 7)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('maskconver', 'onnx'))))\n"
    )
    loaded = eval(out)  # a printed list of module names
    assert "maskconver.meta.maskconver.model" in loaded  # the check sees what was built
    forbidden = [
        m
        for m in loaded
        if m.startswith(("maskconver.backbones.resnet", "maskconver.meta.dr1mask", "onnxruntime"))
        or m == "onnx"
        or m.startswith("maskconver.export.runtime")
    ]
    assert forbidden == []


@pytest.mark.parametrize("chunk", [0, 1])
def test_every_module_imports_on_its_own(chunk: int) -> None:
    names = [n for n in sorted(MODULES) if n != "maskconver.__main__"][chunk::2]  # runs the CLI
    code = f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\n"
    _run(code)


def test_python_dash_m_maskconver_starts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "maskconver", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "export" in result.stdout
