"""Config keys that moved, by the checkpoint format that moved them, and the migration.

A checkpoint written by an older format (``engine/checkpoint.py::FORMAT_VERSION``) has its
config tree migrated on load (``migrate_config_tree``); a config file or ``--set`` that still
uses an old key gets an error naming the new one (``moved_to``).

Format 2 moved ``postprocess.hard_sigmoid`` to the model. Format 3 gave each meta-architecture
its own sub-block: MaskConver's model fields, ``targets``, ``loss`` and merge settings went to
``model.maskconver``; DR1Mask's merge settings to ``model.dr1mask.merge``; the merge thresholds
of ``postprocess`` to the merge of the tree's own meta-architecture (a step that reads the tree).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from maskconver.config.checks import ConfigError
from maskconver.config.model import META_ARCHITECTURE_NAMES

Tree = dict[str, Any]

# MaskConver's fields that sat directly under ``model`` before format 3
MASKCONVER_MODEL_FIELDS = (
    "embedding_dim",
    "mlp_hidden",
    "mlp_activation",
    "fusion",
    "stuff_mode",
    "multiscale",
    "level",
    "mask_level",
    "min_level",
    "max_level",
    "pixel_level",
    "hard_sigmoid",
)
MERGE_THRESHOLDS = ("object_threshold", "overlap_threshold", "min_area", "mask_threshold")

# old dotted key -> new dotted key, applied in order, per format
MOVED_KEYS: dict[int, dict[str, str]] = {
    2: {"postprocess.hard_sigmoid": "model.hard_sigmoid"},  # it now also scores the peaks
    3: {
        **{f"model.{name}": f"model.maskconver.{name}" for name in MASKCONVER_MODEL_FIELDS},
        "targets": "model.maskconver.targets",
        "loss": "model.maskconver.loss",
        "postprocess.merge": "model.maskconver.merge.mode",
        "model.dr1mask.merge": "model.dr1mask.merge.mode",  # a value that became a section
        "model.dr1mask.box_crop": "model.dr1mask.merge.box_crop",
    },
}


def tree_architecture(tree: Tree) -> str:
    """The tree's ``model.meta_architecture`` (``maskconver`` when absent or unknown)."""
    model = tree.get("model")
    name = model.get("meta_architecture") if isinstance(model, dict) else None
    return name if name in META_ARCHITECTURE_NAMES else "maskconver"


def _merge_thresholds(tree: Tree) -> dict[str, str]:
    """Format 3: ``postprocess.<threshold>`` -> ``model.<the tree's architecture>.merge.<same>``."""
    arch = tree_architecture(tree)
    return {f"postprocess.{name}": f"model.{arch}.merge.{name}" for name in MERGE_THRESHOLDS}


# moves that depend on the tree, per format (applied after that format's MOVED_KEYS)
TREE_MOVES: dict[int, tuple[Callable[[Tree], dict[str, str]], ...]] = {3: (_merge_thresholds,)}


def moves(version: int, tree: Tree) -> dict[str, str]:
    """Every ``old -> new`` key move of checkpoint format ``version`` for this tree."""
    out = dict(MOVED_KEYS.get(version, {}))
    for step in TREE_MOVES.get(version, ()):
        out.update(step(tree))
    return out


def _versions() -> list[int]:
    return sorted(MOVED_KEYS.keys() | TREE_MOVES.keys())


# the checkpoint format of today's layout (the last one that moved a key): a config tree stored
# outside a checkpoint (an ONNX export's metadata) records it, to be migrated on read
CONFIG_FORMAT = _versions()[-1]


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (``sep`` between the keys; lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}{sep}", sep))
        else:
            out[name] = value
    return out


def pop_path(tree: Tree, dotted: str) -> tuple[bool, Any]:
    """Remove ``a.b.c`` from a nested dict: ``(True, value)``, or ``(False, None)`` if absent."""
    node: Any = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict) and parts[-1] in node:
        return True, node.pop(parts[-1])
    return False, None


def set_path(tree: Tree, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating the sections on the way."""
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def migrate_config_tree(tree: Tree, from_format: int) -> Tree:
    """A copy of a config tree written at checkpoint format ``from_format``, in today's layout."""
    out = copy.deepcopy(tree)
    for version in _versions():
        if version <= from_format:
            continue
        for old, new in moves(version, out).items():
            found, value = pop_path(out, old)
            if found:
                set_path(out, new, value)
    return out


def _renames(old: str, new: str, path: str) -> bool:
    if path == old:
        return True
    # keys below a moved section moved with it; a value that became a section of the same name
    # (``model.dr1mask.merge``) moved alone
    return path.startswith(f"{old}.") and not new.startswith(f"{old}.")


def moved_to(path: str, tree: Tree) -> str | None:
    """Today's key of an old dotted key (following every later move), or None if it never moved.

    ``tree`` is the config tree the key came from (its meta-architecture decides where the merge
    thresholds went).
    """
    current = path
    for version in _versions():
        for old, new in moves(version, tree).items():
            if _renames(old, new, current):
                current = new + current[len(old) :]
                break
    return current if current != path else None
