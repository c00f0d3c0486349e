"""A folder of labelme JSON files -> COCO panoptic.

Rules (``docs/data-formats.md``):

* shapes ``polygon``, ``rectangle`` (2 corners) and ``circle`` (centre, a point on the circle) are
  drawn as labelme's own ``shape_to_mask`` draws them (PIL fill + 1-px outline); ``point``,
  ``line``, ``linestrip`` and ``points`` have no area and are dropped with a report line, as is
  ``mask`` (unsupported); a shape of an unknown type, with points that are not finite numbers or
  lie more than one image size outside the image (``geometry``), or with too few points is
  invalid: dropped and reported (an error under ``strict``);
* shapes are painted in file order and a later shape paints over an earlier one (labelme's
  ``shapes_to_label`` does the same), so a hole is a second shape drawn after the first (label
  ``__ignore__`` for a void hole, or another label);
* thing shapes with the same ``(label, group_id)`` form one instance; a shape without
  ``group_id`` is its own instance; all shapes of a stuff label form one segment per image; a
  ``flags: {iscrowd: true}`` (or ``crowd``) on an instance's first shape marks it crowd;
* label ``__ignore__`` paints void; unlabelled pixels are void;
* the image is the embedded ``imageData`` (base64) when present, as labelme itself reads it,
  else ``imagePath`` relative to the JSON file;
* categories come from ``--categories FILE`` (labels are matched to ``name``); without it every
  label becomes a thing category with ids 1..n in sorted label order (the report says so).
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.convert.categories import (
    finalize_categories,
    generated_categories,
    load_category_file,
)
from maskconver.data.convert.coco_json import load_json_object
from maskconver.data.convert.geometry import InvalidAnnotation, checked_points, short_repr
from maskconver.data.convert.output import DatasetOutput, image_size, image_suffix
from maskconver.data.convert.paint import Canvas
from maskconver.data.convert.report import ConvertReport, StrictStop
from maskconver.data.types import Category, CategorySet

IGNORE_LABEL = "__ignore__"
AREA_SHAPES = ("polygon", "rectangle", "circle")
LINE_SHAPES = ("point", "line", "linestrip", "points")  # no area: dropped
UNSUPPORTED_SHAPES = ("mask",)  # labelme types not converted: dropped
DEFAULT_SHAPE = "polygon"  # labelme writes shape_type null for polygons in old files
CROWD_FLAGS = ("iscrowd", "crowd")
MIN_POLYGON_POINTS = 3
TWO_POINTS = 2
SOURCE = "shapes"


def _points(shape: dict[str, Any], height: int, width: int) -> list[tuple[float, float]]:
    """The shape's points, each a finite ``[x, y]`` pair near the image (``geometry``)."""
    raw = shape.get("points")
    if not isinstance(raw, list) or not all(
        isinstance(p, list | tuple) and len(p) == TWO_POINTS for p in raw
    ):
        raise InvalidAnnotation("'points' must be a list of [x, y] pairs")
    return checked_points(raw, height, width, "")


def shape_mask(shape: dict[str, Any], height: int, width: int) -> np.ndarray:
    """``[H, W]`` bool mask of a polygon / rectangle / circle shape.

    The points are checked first (finite numbers at most one image size outside the image), so
    what PIL draws lies within ``3 W x 3 H`` around the image.

    Raises:
        InvalidAnnotation: malformed or out-of-range points, or too few of them.
    """
    kind = shape.get("shape_type") or DEFAULT_SHAPE
    xy = _points(shape, height, width)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "polygon":
        if len(xy) < MIN_POLYGON_POINTS:
            raise InvalidAnnotation(f"a polygon needs >= 3 points, got {len(xy)}")
        draw.polygon(xy, outline=1, fill=1)
    elif len(xy) != TWO_POINTS:
        raise InvalidAnnotation(f"a {kind} needs 2 points, got {len(xy)}")
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=1, fill=1)
    else:  # circle: centre and a point on the circle
        (cx, cy), (px, py) = xy
        r = math.hypot(cx - px, cy - py)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


def _read_labelme(path: Path) -> dict[str, Any]:
    doc = load_json_object(path, "labelme JSON")
    shapes = doc.get("shapes")
    if not isinstance(shapes, list):
        raise DatasetError(f"{path}: not a labelme file (no 'shapes' list)")
    for k, shape in enumerate(shapes):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise DatasetError(f"{path}: shape {k} needs a 'label' string")
    return doc


def _image(doc: dict[str, Any], path: Path) -> tuple[bytes | None, Path | None]:
    """The image as embedded bytes (``imageData``) or a file (``imagePath``)."""
    data = doc.get("imageData")
    if isinstance(data, str) and data:
        try:
            return base64.b64decode(data, validate=False), None
        except (binascii.Error, ValueError) as e:
            raise DatasetError(f"{path}: imageData is not base64: {e}") from e
    image_path = doc.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise DatasetError(f"{path}: neither imageData nor imagePath")
    resolved = path.parent / image_path
    if not resolved.is_file():
        raise DatasetError(f"image not found: {resolved} (imagePath of {path}, no imageData)")
    return None, resolved


class _Painter:
    """Paints one labelme file's shapes into a canvas."""

    def __init__(
        self, categories: CategorySet, by_label: dict[str, Category], report: ConvertReport
    ) -> None:
        self.categories = categories
        self.by_label = by_label
        self.report = report

    def paint(self, canvas: Canvas, shapes: Sequence[dict[str, Any]], path: Path) -> None:
        height, width = canvas.shape
        instances: dict[tuple[str, object], int] = {}
        for k, shape in enumerate(shapes):
            label = shape["label"]
            where = f"{path}: shape {k} ({label!r})"
            kind = shape.get("shape_type") or DEFAULT_SHAPE
            if kind in LINE_SHAPES:
                self.report.drop(where, f"a {kind} shape has no area")
                continue
            if kind in UNSUPPORTED_SHAPES:
                self.report.drop(where, f"unsupported shape type {kind!r}")
                continue
            group = shape.get("group_id")
            try:
                if kind not in AREA_SHAPES:
                    raise InvalidAnnotation(f"unknown shape type {short_repr(kind)}")
                if group is not None and not isinstance(group, int | str):
                    raise InvalidAnnotation(f"group_id {short_repr(group)} is not an integer")
                mask = shape_mask(shape, height, width)
            except InvalidAnnotation as e:
                self.report.invalid(where, e.reason)
                continue
            if not mask.any():
                self.report.drop(where, "no pixel inside the image")
                continue
            if label == IGNORE_LABEL:
                canvas.erase(mask)
                continue
            cat = self.by_label.get(label)
            if cat is None:
                self.report.drop(where, "label not in the --categories file: left void")
                continue
            if not cat.isthing:
                canvas.paint(canvas.stuff_segment(cat.id, source=SOURCE, name=where), mask)
                continue
            key = (label, ("shape", k) if group is None else group)
            if key not in instances:
                flags = shape.get("flags") or {}
                crowd = isinstance(flags, dict) and any(flags.get(f) for f in CROWD_FLAGS)
                instances[key] = canvas.new_segment(
                    cat.id, isthing=True, iscrowd=crowd, source=SOURCE, name=where
                )
            canvas.paint(instances[key], mask)


def _categories(
    docs: list[tuple[Path, dict[str, Any]]],
    categories: Path | None,
    report: ConvertReport,
) -> tuple[CategorySet, dict[str, Category]]:
    """The output categories and label -> output category."""
    if categories is not None:
        listed = load_category_file(categories)
    else:
        labels = {
            s["label"]
            for _, doc in docs
            for s in doc["shapes"]
            if s["label"] != IGNORE_LABEL and (s.get("shape_type") or DEFAULT_SHAPE) in AREA_SHAPES
        }
        listed = generated_categories(labels, report)
    category_set, id_map = finalize_categories(listed, report, str(categories or "labels"))
    by_label = {c.name: category_set.by_id[id_map[c.id]] for c in listed}
    return category_set, by_label


def convert_labelme(
    input_dir: str | Path,
    out_root: str | Path,
    *,
    split: str = "train2017",
    categories: str | Path | None = None,
    overwrite: bool = False,
    strict: bool = False,
    image_mode: str = "copy",
    progress: bool = False,
) -> ConvertReport:
    """Convert every ``*.json`` under ``input_dir`` (recursively, sorted) into ``split``.

    Image ids are 1..n in sorted file order; an image is written as ``<JSON path relative to
    input_dir, suffix of the image>``. See the module docstring for the rules.

    Raises:
        DatasetError: no labelme file, a bad category map, or no image converted.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DatasetError(f"labelme folder not found: {input_dir}")
    skip_paths = {os.path.abspath(categories)} if categories is not None else set()
    files = [p for p in sorted(input_dir.rglob("*.json")) if os.path.abspath(p) not in skip_paths]
    if not files:
        raise DatasetError(f"no labelme JSON files (*.json) under {input_dir}")
    report = ConvertReport(source="labelme", strict=strict)
    docs: list[tuple[Path, dict[str, Any]]] = []
    ids: dict[Path, int] = {}
    for image_id, path in enumerate(files, 1):
        try:
            docs.append((path, _read_labelme(path)))
            ids[path] = image_id
        except StrictStop:
            raise
        except DatasetError as e:
            report.images_seen += 1
            report.skip(path, str(e))
    category_path = Path(categories) if categories is not None else None
    category_set, by_label = _categories(docs, category_path, report)
    inputs = [input_dir] + ([category_path] if category_path is not None else [])
    output = DatasetOutput(
        out_root, split, category_set, inputs=inputs, overwrite=overwrite, image_mode=image_mode
    )
    report.output = str(output.json_path)
    painter = _Painter(category_set, by_label, report)
    for path, doc in tqdm(docs, desc="labelme", disable=None if progress else True):
        report.images_seen += 1
        dropped_before = len(report.dropped)
        try:
            data, image_path = _image(doc, path)
            height, width = image_size(data if data is not None else image_path, path)  # type: ignore[arg-type]
            listed = (doc.get("imageHeight", height), doc.get("imageWidth", width))
            if listed != (height, width):
                raise DatasetError(
                    f"{path}: imageHeight/imageWidth say {listed}, the image is {(height, width)}"
                )
            canvas = Canvas(height, width)
            painter.paint(canvas, doc["shapes"], path)
            panoptic, segments, kept, vanished = canvas.finish()
            for seg in vanished:
                report.drop(seg.name, "painted over entirely by later shapes")
            suffix = image_suffix(data) if data is not None else image_path.suffix  # type: ignore[union-attr]
            rel = PurePosixPath(path.relative_to(input_dir).as_posix())
            file_name = str(rel.with_suffix(suffix))
            output.add(
                ids[path],
                file_name,
                panoptic,
                segments,
                image_path=image_path,
                image_bytes=data,
            )
        except StrictStop:
            raise
        except DatasetError as e:
            del report.dropped[dropped_before:]  # the image is left out as a whole
            report.skip(path, str(e))
            continue
        report.count_image(kept, category_set)
    output.close()
    if report.images_converted == 0:
        first = report.skipped[0] if report.skipped else "none"
        raise DatasetError(f"no image converted from {input_dir} (first problem: {first})")
    return report
