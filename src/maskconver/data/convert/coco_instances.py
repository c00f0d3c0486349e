"""COCO instance JSON (+ optional stuff JSON or stuff label PNGs) -> COCO panoptic.

Painting order and overlap rules (``docs/data-formats.md``):

1. thing annotations: non-crowd first, then crowd; within each, by descending ``score`` when every
   annotation of the image has one (detection results), else in file order;
2. ``overlap="resolve"`` (default): a non-crowd instance whose mask is more than
   ``overlap_threshold`` taken by earlier ones is dropped as a duplicate, otherwise it gets its
   still-free pixels (the rule of panopticapi's ``combine_semantic_and_instance_predictions``);
   a crowd region gets its free pixels. ``overlap="error"``: any overlap between thing
   annotations skips the image (what panopticapi's ``detection2panoptic_coco_format`` does:
   it raises "Segments for image ... overlap each other");
3. stuff (categories with ``isthing`` 0 in the instance JSON, the stuff JSON, then the stuff
   PNGs) only fills pixels no thing took; one segment per stuff category and image; stuff
   segments smaller than ``stuff_min_area`` are dropped.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.convert.categories import (
    check_unique,
    finalize_categories,
    load_category_file,
    parse_category,
)
from maskconver.data.convert.coco_json import (
    coco_lists,
    index_images,
    load_json_object,
    segmentation_mask,
)
from maskconver.data.convert.geometry import InvalidAnnotation, short_repr
from maskconver.data.convert.labels import read_label_png
from maskconver.data.convert.output import DatasetOutput, image_size
from maskconver.data.convert.paint import Canvas
from maskconver.data.convert.report import ConvertReport, StrictStop
from maskconver.data.types import Category, CategorySet

OVERLAP_MODES = ("resolve", "error")
DEFAULT_OVERLAP_THRESHOLD = 0.5  # panopticapi's combine script: --overlap_thr 0.5
INSTANCES, STUFF_JSON, STUFF_PNGS = "instances", "stuff-json", "stuff-pngs"


def _json_categories(data: dict[str, Any], path: Path, *, default_isthing: bool) -> list[Category]:
    categories = [
        parse_category(item, f"{path}: categories[{k}]", default_isthing=default_isthing)
        for k, item in enumerate(data["categories"])
    ]
    check_unique(categories, str(path))
    return categories


def _merge_categories(groups: list[tuple[Path, list[Category]]]) -> list[Category]:
    """Union of the sources' categories; the same id must mean the same category everywhere."""
    merged: dict[int, tuple[Path, Category]] = {}
    for path, categories in groups:
        for cat in categories:
            seen = merged.setdefault(cat.id, (path, cat))
            if (seen[1].name, seen[1].isthing) != (cat.name, cat.isthing):
                raise DatasetError(
                    f"category id {cat.id} is {seen[1].name!r} (isthing {int(seen[1].isthing)}) "
                    f"in {seen[0]} but {cat.name!r} (isthing {int(cat.isthing)}) in {path}"
                )
    return [cat for _, cat in merged.values()]


def _group_annotations(
    data: dict[str, Any], path: Path, images: dict[int, dict[str, Any]], report: ConvertReport
) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """Annotations per image id, with their report names; a bad category id / iscrowd is dropped."""
    out: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DatasetError(f"{path}: annotations[{k}] is not an object")
        name = f"{path}: annotation {ann.get('id', f'[{k}]')}"
        image_id = ann.get("image_id")
        if not isinstance(image_id, int) or image_id not in images:
            report.drop(name, f"image id {image_id!r} is not in the images list")
            continue
        cat_id, crowd = ann.get("category_id"), ann.get("iscrowd", 0)
        bad_category = not isinstance(cat_id, int) or isinstance(cat_id, bool)
        if bad_category or not isinstance(crowd, int) or crowd not in (0, 1):
            reason = (
                f"category id {short_repr(cat_id)} is not an integer"
                if bad_category
                else f"iscrowd must be 0 or 1, got {short_repr(crowd)}"
            )
            report.invalid(f"{name} (image id {image_id})", reason)
            continue
        out[image_id].append((name, ann))
    return out


class _Converter:
    """Per-image work of ``convert_coco_instances`` (holds the resolved inputs)."""

    def __init__(
        self,
        *,
        categories: CategorySet,
        id_map: dict[int, int],
        report: ConvertReport,
        overlap: str,
        overlap_threshold: float,
        stuff_min_area: int,
        stuff_pngs: Path | None,
        png_stuff_ids: set[int],
    ) -> None:
        self.categories = categories
        self.id_map = id_map
        self.report = report
        self.overlap = overlap
        self.overlap_threshold = overlap_threshold
        self.stuff_min_area = stuff_min_area
        self.stuff_pngs = stuff_pngs
        self.png_stuff_ids = png_stuff_ids
        self.unknown_png_values: Counter[int] = Counter()
        self.erased: set[str] = set()  # stuff segments of this image dropped for their area

    def resolve(
        self, annotations: list[tuple[str, dict[str, Any]]]
    ) -> list[tuple[str, dict[str, Any], Category]]:
        """Each annotation with its category; one of an unknown category is invalid (dropped)."""
        out = []
        for name, ann in annotations:
            cat_id = self.id_map.get(ann["category_id"])
            if cat_id is None:
                reason = f"category id {ann['category_id']} is not among the categories"
                self.report.invalid(f"{name} (image id {ann['image_id']})", reason)
                continue
            out.append((name, ann, self.categories.by_id[cat_id]))
        return out

    def mask(self, ann: dict[str, Any], name: str, height: int, width: int) -> np.ndarray | None:
        """The ``[H, W]`` bool mask, or None for an invalid one (reported; strict: an error)."""
        try:
            return segmentation_mask(ann.get("segmentation"), height, width)
        except InvalidAnnotation as e:
            self.report.invalid(f"{name} (image id {ann.get('image_id')})", e.reason)
            return None

    def paint_things(
        self, canvas: Canvas, things: list[tuple[str, dict[str, Any], Category]], source: str
    ) -> None:
        height, width = canvas.shape
        scored = all(isinstance(a.get("score"), int | float) for _, a, _ in things)
        if scored:
            things = sorted(things, key=lambda t: -float(t[1]["score"]))
        things = sorted(things, key=lambda t: bool(t[1].get("iscrowd", 0)))  # stable
        for name, ann, cat in things:
            mask = self.mask(ann, name, height, width)
            if mask is None:
                continue
            crowd = ann.get("iscrowd", 0)  # 0 or 1 (checked in _group_annotations)
            area = int(mask.sum())
            if area == 0:
                self.report.drop(name, "empty mask")
                continue
            owners = canvas.owners(mask)
            taken = sum(owners.values())
            if taken and self.overlap == "error":
                other = canvas.segments[max(owners, key=owners.__getitem__)].name
                raise DatasetError(
                    f"{name} overlaps {other} on {taken} px (--overlap error, as panopticapi's "
                    "detection2panoptic_coco_format; --overlap resolve keeps the earlier one)"
                )
            if not crowd and taken / area > self.overlap_threshold:
                self.report.drop(
                    name,
                    f"duplicate: {taken} of its {area} px already belong to earlier annotations "
                    f"(more than --overlap-threshold {self.overlap_threshold})",
                )
                continue
            seg = canvas.new_segment(
                cat.id, isthing=True, iscrowd=bool(crowd), source=source, name=name
            )
            canvas.fill(seg, mask)

    def paint_stuff(
        self, canvas: Canvas, stuff: list[tuple[str, dict[str, Any], Category]], source: str
    ) -> None:
        height, width = canvas.shape
        for name, ann, cat in stuff:
            mask = self.mask(ann, name, height, width)
            if mask is None:
                continue
            seg = canvas.stuff_segment(cat.id, source=source, name=f"{name} ({cat.name})")
            canvas.fill(seg, mask)

    def paint_stuff_png(self, canvas: Canvas, file_name: str) -> None:
        assert self.stuff_pngs is not None
        path = self.stuff_pngs / Path(file_name).with_suffix(".png")
        if not path.is_file():
            self.report.drop(path, "no stuff label PNG for this image: things only")
            return
        values = read_label_png(path, canvas.shape)
        for value in np.unique(values).tolist():
            if value not in self.png_stuff_ids:
                if value not in self.id_map:
                    self.unknown_png_values[value] += 1
                continue
            cat = self.categories.by_id[self.id_map[value]]
            seg = canvas.stuff_segment(cat.id, source=STUFF_PNGS, name=f"{path} ({cat.name})")
            canvas.fill(seg, values == value)

    def image(
        self,
        canvas: Canvas,
        file_name: str,
        annotations: dict[str, list[tuple[str, dict[str, Any]]]],
    ) -> None:
        """Paint one image's instance and stuff annotations, then its stuff PNG."""
        self.erased = set()
        resolved = {source: self.resolve(anns) for source, anns in annotations.items()}
        things = [t for t in resolved.get(INSTANCES, []) if t[2].isthing]
        self.paint_things(canvas, things, INSTANCES)
        self.paint_stuff(
            canvas, [t for t in resolved.get(INSTANCES, []) if not t[2].isthing], INSTANCES
        )
        self.paint_stuff(canvas, resolved.get(STUFF_JSON, []), STUFF_JSON)
        if self.stuff_pngs is not None:
            self.paint_stuff_png(canvas, file_name)
        if self.stuff_min_area > 0:
            for seg_id, seg in canvas.segments.items():
                pixels = canvas.ids == seg_id
                area = int(pixels.sum())
                if not seg.isthing and 0 < area < self.stuff_min_area:
                    canvas.erase(pixels)
                    self.erased.add(seg.name)
                    self.report.drop(seg.name, f"stuff area {area} < --stuff-min-area")


def convert_coco_instances(
    instances_json: str | Path,
    images_dir: str | Path,
    out_root: str | Path,
    *,
    split: str = "train2017",
    stuff_json: str | Path | None = None,
    stuff_pngs: str | Path | None = None,
    stuff_categories: str | Path | None = None,
    categories: str | Path | None = None,
    overlap: str = "resolve",
    overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
    stuff_min_area: int = 0,
    overwrite: bool = False,
    strict: bool = False,
    image_mode: str = "copy",
    progress: bool = False,
) -> ConvertReport:
    """Convert a COCO instance JSON (and stuff) into ``out_root``'s COCO panoptic ``split``.

    Args:
        instances_json: COCO instance annotations (polygons / RLE; ``iscrowd`` kept).
        images_dir: folder the JSON's ``file_name`` values are relative to.
        out_root: dataset root to write (see ``output``).
        split: output split name.
        stuff_json: COCO-stuff style JSON (stuff annotations as RLE / polygons).
        stuff_pngs: folder of ``<image stem>.png`` label maps (pixel value = category id of
            ``stuff_categories``; values not listed there are void).
        stuff_categories: category map file of the stuff PNGs (needed with ``stuff_pngs``).
        categories: category map file that replaces the sources' categories; annotations of
            other categories are left out (and counted in the notes).
        overlap: ``"resolve"`` or ``"error"`` (module docstring).
        overlap_threshold: largest taken fraction of a non-crowd instance that is still kept.
        stuff_min_area: stuff segments with fewer pixels are dropped.
        overwrite: replace an existing output split.
        strict: stop at the first problem instead of skipping the image.
        image_mode: ``copy``, ``hardlink`` or ``symlink``.
        progress: show a progress bar.

    Returns:
        The report (``images_converted`` >= 1).

    Raises:
        DatasetError: unreadable or inconsistent inputs, or no image converted.
    """
    instances_json, images_dir = Path(instances_json), Path(images_dir)
    if overlap not in OVERLAP_MODES:
        raise ValueError(f"overlap must be one of {OVERLAP_MODES}, got {overlap!r}")
    if not 0.0 <= overlap_threshold <= 1.0:
        raise DatasetError(f"--overlap-threshold must lie in [0, 1], got {overlap_threshold}")
    if (stuff_pngs is None) != (stuff_categories is None):
        raise DatasetError("--stuff-pngs and --stuff-categories go together")
    if not images_dir.is_dir():
        raise DatasetError(f"image folder not found: {images_dir}")
    report = ConvertReport(source="coco-instances", strict=strict)
    data = load_json_object(instances_json, "COCO instance JSON")
    coco_lists(data, instances_json, ("images", "annotations", "categories"))
    images = index_images(data["images"], instances_json)
    if not images:
        raise DatasetError(f"{instances_json}: no images listed")
    groups = [(instances_json, _json_categories(data, instances_json, default_isthing=True))]
    inputs = [instances_json, images_dir]
    annotations = {INSTANCES: _group_annotations(data, instances_json, images, report)}
    if stuff_json is not None:
        stuff_json = Path(stuff_json)
        stuff = load_json_object(stuff_json, "COCO stuff JSON")
        coco_lists(stuff, stuff_json, ("annotations", "categories"))
        groups.append((stuff_json, _json_categories(stuff, stuff_json, default_isthing=False)))
        annotations[STUFF_JSON] = _group_annotations(stuff, stuff_json, images, report)
        inputs.append(stuff_json)
    png_stuff_ids: set[int] = set()
    if stuff_pngs is not None and stuff_categories is not None:
        stuff_pngs, stuff_categories = Path(stuff_pngs), Path(stuff_categories)
        if not stuff_pngs.is_dir():
            raise DatasetError(f"stuff PNG folder not found: {stuff_pngs}")
        png_cats = [c for c in load_category_file(stuff_categories) if not c.isthing]
        if not png_cats:
            raise DatasetError(f"{stuff_categories}: no stuff category (isthing false) listed")
        png_stuff_ids = {c.id for c in png_cats}
        groups.append((stuff_categories, png_cats))
        inputs += [stuff_pngs, stuff_categories]
    merged = _merge_categories(groups)
    if categories is not None:
        categories = Path(categories)
        chosen = load_category_file(categories)
        inputs.append(categories)
        chosen_ids = {c.id for c in chosen}
        for cat in merged:
            if cat.id not in chosen_ids:
                report.note(f"category {cat.name!r} (id {cat.id}) is not in {categories}: left out")
        png_stuff_ids &= {c.id for c in chosen if not c.isthing}
        merged = chosen
    category_set, id_map = finalize_categories(merged, report, str(instances_json))
    output = DatasetOutput(
        out_root, split, category_set, inputs=inputs, overwrite=overwrite, image_mode=image_mode
    )
    report.output = str(output.json_path)
    work = _Converter(
        categories=category_set,
        id_map=id_map,
        report=report,
        overlap=overlap,
        overlap_threshold=overlap_threshold,
        stuff_min_area=stuff_min_area,
        stuff_pngs=Path(stuff_pngs) if stuff_pngs is not None else None,
        png_stuff_ids=png_stuff_ids,
    )
    left_out: Counter[object] = Counter()
    bar = tqdm(images.values(), desc="coco-instances", disable=None if progress else True)
    for info in bar:
        report.images_seen += 1
        image_path = images_dir / info["file_name"]
        per_source = {}
        for source, by_image in annotations.items():
            anns = by_image.get(info["id"], [])
            if categories is not None:
                left_out.update(
                    a.get("category_id") for _, a in anns if a.get("category_id") not in id_map
                )
                anns = [(n, a) for n, a in anns if a.get("category_id") in id_map]
            per_source[source] = anns
        dropped_before = len(report.dropped)
        try:
            height, width = image_size(image_path, image_path)
            listed = (info.get("height", height), info.get("width", width))
            if listed != (height, width):
                raise DatasetError(
                    f"image id {info['id']}: {instances_json} says (H, W) = {listed}, the image "
                    f"file is {(height, width)}"
                )
            canvas = Canvas(height, width)
            work.image(canvas, info["file_name"], per_source)
            panoptic, segments, kept, vanished = canvas.finish()
            for seg in vanished:
                if seg.name not in work.erased:
                    report.drop(seg.name, "no pixel left (covered by earlier annotations)")
            output.add(info["id"], info["file_name"], panoptic, segments, image_path=image_path)
        except StrictStop:
            raise
        except DatasetError as e:
            del report.dropped[dropped_before:]  # the image is left out as a whole
            report.skip(image_path, str(e))
            continue
        report.count_image(kept, category_set)
    output.close()
    for cat_id, count in sorted(left_out.items(), key=str):
        report.note(f"{count} annotations of category id {cat_id} left out (not in {categories})")
    if work.unknown_png_values:
        values = ", ".join(f"{v} ({n} images)" for v, n in sorted(work.unknown_png_values.items()))
        report.note(f"stuff PNG values not in {stuff_categories} became void: {values}")
    if report.images_converted == 0:
        first = report.skipped[0] if report.skipped else "none"
        raise DatasetError(f"no image converted from {instances_json} (first problem: {first})")
    return report
