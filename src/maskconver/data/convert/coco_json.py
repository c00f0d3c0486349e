"""Reading COCO instance / stuff JSON: the file, its image list, and one annotation's mask.

Segmentations are decoded with ``pycocotools.mask``: polygons (a list of flat ``[x0, y0, x1, y1,
...]`` lists, each of >= 3 points), uncompressed RLE (``counts`` a list) and compressed RLE
(``counts`` a string). RLE ``size`` must be the image's ``[H, W]`` and the run lengths must add
up to ``H * W``; polygon coordinates must be finite numbers near the image (``geometry``). All
of it is checked before decoding (pycocotools checks none of it); a failed check raises
``InvalidAnnotation`` and the converter drops that one annotation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.convert.geometry import InvalidAnnotation, checked_points, short_repr

MIN_POLYGON_COORDS = 6  # 3 points; pycocotools reads a 4-number list as a box, not a polygon
RLE_CHAR_OFFSET = 48  # compressed RLE: 6-bit groups stored as chr(48 + group)
RLE_MORE_BIT, RLE_SIGN_BIT, RLE_VALUE_BITS = 0x20, 0x10, 0x1F
RLE_BITS_PER_CHAR = 5
RLE_DELTA_FROM = 2  # counts after the first two are stored as differences to counts[m - 2]
RLE_MAX_BITS = 64  # pycocotools reads each run into a 64-bit integer


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_json_object(path: Path, what: str) -> dict[str, Any]:
    """Parse ``path`` as a JSON object; errors name the file and what it should be."""
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"malformed JSON in {what} {path}: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {what} {path}: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{what} {path}: top level must be an object, got {type(data).__name__}")
    return data


def coco_lists(data: dict[str, Any], path: Path, keys: tuple[str, ...]) -> None:
    """Check that each key of ``keys`` is a list in the COCO JSON ``data``."""
    for key in keys:
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: missing or non-list key {key!r}")


def index_images(images: list[Any], path: Path) -> dict[int, dict[str, Any]]:
    """``images`` by integer id; each needs ``id`` and a ``file_name`` (height / width optional)."""
    out: dict[int, dict[str, Any]] = {}
    for k, img in enumerate(images):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise DatasetError(f"{path}: images[{k}] needs an integer 'id'")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise DatasetError(f"{path}: images[{k}] (id {img['id']}) needs a 'file_name'")
        for key in ("height", "width"):
            if key in img and not (_is_int(img[key]) and img[key] > 0):
                raise DatasetError(f"{path}: image id {img['id']}: bad {key} {img[key]!r}")
        if img["id"] in out:
            raise DatasetError(f"{path}: duplicate image id {img['id']}")
        out[img["id"]] = img
    return out


def compressed_rle_total(counts: str) -> int:
    """Sum of the run lengths of a compressed COCO RLE string (as pycocotools parses it).

    Raises:
        ValueError: a character outside the encoding or a negative run.
    """
    runs: list[int] = []
    p = 0
    while p < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise ValueError("truncated RLE string")
            group = ord(counts[p]) - RLE_CHAR_OFFSET
            if not 0 <= group < 2 * RLE_MORE_BIT:
                raise ValueError(f"character {counts[p]!r} is not part of a COCO RLE string")
            value |= (group & RLE_VALUE_BITS) << shift
            more = bool(group & RLE_MORE_BIT)
            p += 1
            shift += RLE_BITS_PER_CHAR
            if shift > RLE_MAX_BITS:
                raise ValueError(f"a run longer than {RLE_MAX_BITS} bits")
            if not more and group & RLE_SIGN_BIT:
                value -= 1 << shift
        if len(runs) > RLE_DELTA_FROM:
            value += runs[-RLE_DELTA_FROM]
        if value < 0:
            raise ValueError("negative run length")
        runs.append(value)
    return sum(runs)


def _check_rle(segmentation: dict[str, Any], height: int, width: int) -> None:
    size = segmentation.get("size")
    if not (isinstance(size, list | tuple) and list(size) == [height, width]):
        raise InvalidAnnotation(
            f"RLE size {short_repr(size)} is not the image's [H, W] {[height, width]}"
        )
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            raise InvalidAnnotation("uncompressed RLE counts must be integers >= 0")
        total = sum(counts)
    elif isinstance(counts, str | bytes):
        text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
        try:
            total = compressed_rle_total(text)
        except ValueError as e:
            raise InvalidAnnotation(f"bad compressed RLE: {e}") from e
    else:
        raise InvalidAnnotation("RLE 'counts' must be a list or a string")
    if total != height * width:
        raise InvalidAnnotation(
            f"RLE runs cover {total} pixels, the image has {height} x {width} = {height * width}"
        )


def _checked_polygons(segmentation: list[Any], height: int, width: int) -> list[list[float]]:
    """The polygons as flat float lists, every coordinate checked against the image."""
    if not segmentation:
        raise InvalidAnnotation("empty polygon list")
    out: list[list[float]] = []
    for k, poly in enumerate(segmentation):
        if not isinstance(poly, list) or len(poly) < MIN_POLYGON_COORDS or len(poly) % 2:
            raise InvalidAnnotation(
                f"polygon {k} must be a flat list of >= 3 (x, y) number pairs, got "
                + (f"{len(poly)} numbers" if isinstance(poly, list) else type(poly).__name__)
            )
        pairs = list(zip(poly[0::2], poly[1::2], strict=True))
        out.append([v for xy in checked_points(pairs, height, width, f"polygon {k}: ") for v in xy])
    return out


def segmentation_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    """Decode a COCO ``segmentation`` into an ``[H, W]`` bool mask.

    Every polygon coordinate is checked first (``geometry``: finite numbers at most one image
    size outside the image), so pycocotools' work is bounded by the image.

    Raises:
        InvalidAnnotation: not a polygon list or RLE, a polygon of < 3 points, a coordinate
            that is no finite number or lies too far out, or an RLE of the wrong size or total.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = _checked_polygons(segmentation, height, width)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict):
        _check_rle(segmentation, height, width)
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
    else:
        raise InvalidAnnotation(
            "segmentation must be a list of polygons or an RLE object, got "
            f"{type(segmentation).__name__}"
        )
    return np.asarray(mask_utils.decode(rle), dtype=bool)
