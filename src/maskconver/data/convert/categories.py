"""Category map files and the id-0 remap.

A category map file (``--categories FILE``) is YAML (``.yaml`` / ``.yml``) or JSON, either a list
of entries or an object with a ``categories`` list (so a COCO ``categories`` JSON works as is)::

    - {name: person, id: 1, isthing: true}
    - {name: sky, id: 2, isthing: false, color: [135, 206, 235]}

``name`` (the labelme label / VOC class name) and ``id`` (an integer >= 0; in label PNGs the
pixel value) are required; ``isthing`` defaults to true, ``color`` to none. Id 0 means void in
COCO panoptic, so a category given id 0 gets the id after the largest one, and the report says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.convert.report import ConvertReport
from maskconver.data.types import RGB_CHANNELS, VOID, Category, CategorySet

YAML_SUFFIXES = (".yaml", ".yml")
UINT8_MAX = 255


def _read_structured(path: Path) -> Any:
    """Parse a YAML or JSON file (by suffix); errors name the file."""
    if not path.is_file():
        raise DatasetError(f"category map file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read category map {path}: {e}") from e
    if path.suffix.lower() in YAML_SUFFIXES:
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DatasetError(f"malformed YAML in category map {path}: {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"malformed JSON in category map {path}: {e}") from e


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_category(item: object, where: str, *, default_isthing: bool = True) -> Category:
    """One ``{name, id, isthing, color}`` entry as a ``Category`` (id 0 allowed here).

    Raises:
        DatasetError: a missing / mistyped field (the message starts with ``where``).
    """
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: expected an object with 'name' and 'id', got {item!r}")
    name, cat_id = item.get("name"), item.get("id")
    if not isinstance(name, str) or not name:
        raise DatasetError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    if not isinstance(cat_id, int) or isinstance(cat_id, bool) or cat_id < VOID:
        raise DatasetError(f"{where} ({name!r}): 'id' must be an integer >= 0, got {cat_id!r}")
    isthing = item.get("isthing", default_isthing)
    if isthing not in (True, False, 0, 1):
        raise DatasetError(f"{where} ({name!r}): 'isthing' must be true/false or 1/0")
    color = item.get("color") or (0, 0, 0)
    if (
        not isinstance(color, list | tuple)
        or len(color) != RGB_CHANNELS
        or not all(_is_int(c) and 0 <= c <= UINT8_MAX for c in color)
    ):
        raise DatasetError(f"{where} ({name!r}): 'color' must be [r, g, b] in 0..255")
    return Category(
        id=int(cat_id), name=name, isthing=bool(isthing), color=(color[0], color[1], color[2])
    )


def check_unique(categories: list[Category], where: str) -> None:
    """Refuse repeated names or ids (the message names both entries)."""
    for field_name in ("name", "id"):
        seen: dict[object, Category] = {}
        for cat in categories:
            other = seen.setdefault(getattr(cat, field_name), cat)
            if other is not cat:
                raise DatasetError(
                    f"{where}: categories {other.name!r} (id {other.id}) and {cat.name!r} "
                    f"(id {cat.id}) share a {field_name}"
                )


def load_category_file(path: str | Path) -> list[Category]:
    """Read a category map file (see the module docstring); ids are as written (0 allowed).

    Raises:
        DatasetError: unreadable file, wrong structure, bad entry or repeated name / id.
    """
    path = Path(path)
    data = _read_structured(path)
    if isinstance(data, dict) and "categories" in data:
        data = data["categories"]
    if not isinstance(data, list) or not data:
        raise DatasetError(
            f"category map {path}: expected a non-empty list of {{name, id, isthing}} entries "
            "(or an object with a 'categories' list)"
        )
    categories = [parse_category(item, f"{path}: entry {k}") for k, item in enumerate(data)]
    check_unique(categories, f"category map {path}")
    return categories


def generated_categories(labels: Iterable[str], report: ConvertReport) -> list[Category]:
    """Every label a thing category, ids 1..n in sorted label order (the report says so)."""
    names = sorted(set(labels))
    categories = [Category(id=k, name=name, isthing=True) for k, name in enumerate(names, 1)]
    if categories:
        listed = ", ".join(f"{c.id}={c.name}" for c in categories)
        report.note(
            f"no --categories file: every label became a thing category, ids in sorted order "
            f"({listed}); write a category map to choose ids or mark stuff"
        )
    return categories


def finalize_categories(
    categories: list[Category], report: ConvertReport, where: str
) -> tuple[CategorySet, dict[int, int]]:
    """Give a category with id 0 the id after the largest, and build the ``CategorySet``.

    Returns:
        The output categories and the map from each input id to its output id.

    Raises:
        DatasetError: no category at all.
    """
    if not categories:
        raise DatasetError(f"{where}: no categories")
    check_unique(categories, where)
    id_map = {c.id: c.id for c in categories}
    out = []
    for cat in categories:
        if cat.id == VOID:
            new_id = max(max(id_map.values()), 0) + 1
            id_map[VOID] = new_id
            report.note(
                f"category {cat.name!r} had id 0, which means void in COCO panoptic; it is "
                f"written with id {new_id}"
            )
            cat = Category(id=new_id, name=cat.name, isthing=cat.isthing, color=cat.color)
        out.append(cat)
    return CategorySet(out), id_map
