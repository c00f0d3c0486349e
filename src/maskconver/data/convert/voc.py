"""VOC-style SegmentationObject + SegmentationClass PNGs -> COCO panoptic.

Layout under ``root`` (the folder names of labelme's ``labelme2voc`` output work too)::

    JPEGImages/<stem>.jpg                       the images (any suffix)
    SegmentationObject/<stem>.png               P-mode: 0 background, 1..n objects, 255 void
    SegmentationClass/<stem>.png                P-mode: class index per pixel, 255 void
    class_names.txt                             optional: class index -> name, one per line
    ImageSets/Segmentation/<name>.txt           optional: the stems of one image set

Rules (``docs/data-formats.md``): each object id becomes one instance of the class that most of
its pixels carry in SegmentationClass (255 not counted; ties go to the smaller index); class 0
(background) and 255 are void unless ``--categories`` maps the background name to a stuff
category; pixels of a stuff class not taken by an object form that class's stuff segment.
Categories: without ``--categories`` class k >= 1 becomes the thing category ``k`` named from
``class_names.txt`` (or the 21 VOC2012 names); with it, class names are matched to ``name``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.convert.categories import finalize_categories, load_category_file
from maskconver.data.convert.labels import read_label_png
from maskconver.data.convert.output import DatasetOutput, image_size
from maskconver.data.convert.paint import Canvas
from maskconver.data.convert.report import ConvertReport, StrictStop
from maskconver.data.types import Category, CategorySet

VOC_VOID = 255
VOC_BACKGROUND = 0
VOC2012_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
OBJECT_DIRS = ("SegmentationObject", "SegmentationObjectPNG")
CLASS_DIRS = ("SegmentationClass", "SegmentationClassPNG")
IMAGE_DIR = "JPEGImages"
IMAGE_SET_DIR = Path("ImageSets") / "Segmentation"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")
OBJECTS, CLASSES = "SegmentationObject", "SegmentationClass"


def _first_dir(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"{root}: none of the folders {', '.join(names)} exists")


def read_class_names(path: Path | None) -> list[str]:
    """Class index -> name from ``class_names.txt`` (blank lines skipped), or VOC2012's 21."""
    if path is None:
        return list(VOC2012_CLASSES)
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read class names {path}: {e}") from e
    names = [n for n in names if n]
    if len(set(names)) != len(names) or not names:
        raise DatasetError(f"{path}: class names must be non-empty and distinct")
    return names


def _class_categories(
    names: list[str], categories: Path | None, report: ConvertReport
) -> tuple[CategorySet, dict[int, Category]]:
    """The output categories and class index -> output category (void indices absent)."""
    if categories is None:
        listed = [Category(id=k, name=n, isthing=True) for k, n in enumerate(names) if k]
    else:
        listed = load_category_file(categories)
    category_set, id_map = finalize_categories(listed, report, str(categories or "class names"))
    by_name = {c.name: category_set.by_id[id_map[c.id]] for c in listed}
    by_index = {k: by_name[n] for k, n in enumerate(names) if n in by_name and k != VOC_VOID}
    unmapped = [n for k, n in enumerate(names) if k and n not in by_name]
    if categories is not None and unmapped:
        report.note(f"classes not in {categories} are void: {', '.join(unmapped)}")
    return category_set, by_index


def _majority_class(classes: np.ndarray) -> int | None:
    """Most frequent value of ``classes`` (1-D, 255 excluded; ties: smallest), None if none.

    Counted with ``np.unique`` (sorted values), not ``np.bincount``, whose memory grows with the
    largest value: a 16-bit class PNG may hold any value up to 65535.
    """
    valid = classes[classes != VOC_VOID]
    if valid.size == 0:
        return None
    values, counts = np.unique(valid, return_counts=True)
    return int(values[np.argmax(counts)])


def _image_path(image_dir: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (image_dir / f"{stem}{suffix}").is_file():
            return image_dir / f"{stem}{suffix}"
    raise DatasetError(f"no image {stem}.* in {image_dir}")


def _paint(
    canvas: Canvas,
    objects: np.ndarray,
    classes: np.ndarray,
    by_index: dict[int, Category],
    *,
    names: list[str],
    where: Path,
    report: ConvertReport,
) -> None:
    for value in np.unique(objects).tolist():
        if value in (VOC_BACKGROUND, VOC_VOID):
            continue
        mask = objects == value
        name = f"{where}: object {value}"
        index = _majority_class(classes[mask])
        if index is None:
            report.drop(name, "all its SegmentationClass pixels are void (255)")
            continue
        cat = by_index.get(index)
        if cat is None:
            label = names[index] if index < len(names) else f"index {index}"
            report.drop(name, f"its class {label!r} is void (not a category)")
            continue
        if cat.isthing:
            canvas.paint(canvas.new_segment(cat.id, isthing=True, source=OBJECTS, name=name), mask)
        else:
            canvas.fill(canvas.stuff_segment(cat.id, source=OBJECTS, name=name), mask)
    for index in np.unique(classes).tolist():
        cat = by_index.get(index)
        if cat is not None and not cat.isthing:
            seg = canvas.stuff_segment(cat.id, source=CLASSES, name=f"{where}: class {index}")
            canvas.fill(seg, classes == index)


def convert_voc(
    root: str | Path,
    out_root: str | Path,
    *,
    split: str = "train2017",
    class_names: str | Path | None = None,
    categories: str | Path | None = None,
    image_set: str | None = None,
    overwrite: bool = False,
    strict: bool = False,
    image_mode: str = "copy",
    progress: bool = False,
) -> ConvertReport:
    """Convert a VOC-style folder (module docstring) into ``out_root``'s ``split``.

    Args:
        root: the VOC folder.
        out_root: dataset root to write.
        split: output split name.
        class_names: class names file (default ``root/class_names.txt`` when it exists, else
            the VOC2012 names).
        categories: category map file; class names are matched to its ``name`` entries.
        image_set: name of an ``ImageSets/Segmentation/<name>.txt`` list (default: every
            SegmentationObject PNG).
        overwrite: replace an existing output split.
        strict: stop at the first problem.
        image_mode: ``copy``, ``hardlink`` or ``symlink``.
        progress: show a progress bar.

    Raises:
        DatasetError: missing folders, bad class names / categories, or no image converted.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"VOC folder not found: {root}")
    object_dir, class_dir = _first_dir(root, OBJECT_DIRS), _first_dir(root, CLASS_DIRS)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DatasetError(f"image folder not found: {image_dir}")
    if class_names is None and (root / "class_names.txt").is_file():
        class_names = root / "class_names.txt"
    names = read_class_names(Path(class_names) if class_names is not None else None)
    if image_set is not None:
        list_path = root / IMAGE_SET_DIR / f"{image_set}.txt"
        if not list_path.is_file():
            raise DatasetError(f"image set not found: {list_path}")
        stems = [s.strip() for s in list_path.read_text().splitlines() if s.strip()]
    else:
        stems = sorted(p.stem for p in object_dir.glob("*.png"))
    if not stems:
        raise DatasetError(f"no SegmentationObject PNGs in {object_dir}")
    report = ConvertReport(source="voc", strict=strict)
    category_path = Path(categories) if categories is not None else None
    category_set, by_index = _class_categories(names, category_path, report)
    inputs = [root] + [Path(p) for p in (class_names, categories) if p is not None]
    output = DatasetOutput(
        out_root, split, category_set, inputs=inputs, overwrite=overwrite, image_mode=image_mode
    )
    report.output = str(output.json_path)
    for image_id, stem in enumerate(tqdm(stems, desc="voc", disable=None if progress else True), 1):
        report.images_seen += 1
        object_png = object_dir / f"{stem}.png"
        dropped_before = len(report.dropped)
        try:
            image_path = _image_path(image_dir, stem)
            shape = image_size(image_path, image_path)
            objects = read_label_png(object_png, shape)
            classes = read_label_png(class_dir / f"{stem}.png", shape)
            canvas = Canvas(*shape)
            _paint(canvas, objects, classes, by_index, names=names, where=object_png, report=report)
            panoptic, segments, kept, _ = canvas.finish()
            output.add(
                image_id, f"{stem}{image_path.suffix}", panoptic, segments, image_path=image_path
            )
        except StrictStop:
            raise
        except DatasetError as e:
            del report.dropped[dropped_before:]  # the image is left out as a whole
            report.skip(object_png, str(e))
            continue
        report.count_image(kept, category_set)
    output.close()
    if report.images_converted == 0:
        first = report.skipped[0] if report.skipped else "none"
        raise DatasetError(f"no image converted from {root} (first problem: {first})")
    return report
