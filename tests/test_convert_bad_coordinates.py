"""Converters on hostile coordinates: NaN, Inf, 1e12, strings, wrong RLEs, unknown shapes.

Before the checks, pycocotools' ``frPyObjects`` was handed such polygons as they were: a vertex
at NaN or 1e12 makes it allocate per pixel of the (huge) edges, which grew memory without bound
or crashed with a segfault under a memory cap. Now every coordinate is checked against the
image first (``maskconver.data.convert.geometry``): the bad annotation is dropped and reported
with its id and reason, the rest of the file converts, and ``strict`` makes it one error naming
the file, the image id and the annotation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_convert import (
    H,
    W,
    ann,
    assert_map,
    box_polygon,
    coco_doc,
    labelme_doc,
    read_split,
    rect_points,
    shape,
    write_image,
    write_json,
)

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.convert.coco_instances import convert_coco_instances
from maskconver.data.convert.geometry import MARGIN_IMAGES
from maskconver.data.convert.labelme import convert_labelme

NAN, INF = float("nan"), float("inf")
HUGE = 1e12
FAST_SECONDS = 5.0  # a 1e12 polygon must not make the conversion slower than this

# bad COCO segmentation -> a word of the reason the report gives
BAD_SEGMENTATIONS: dict[str, tuple[object, str]] = {
    "nan": ([[0, 0, NAN, 0, 5, 5]], "NaN"),
    "inf": ([[0, 0, INF, 0, 5, 5]], "outside the image"),
    "minus-inf": ([[0, 0, 4, -INF, 5, 5]], "outside the image"),
    "huge": ([[0, 0, HUGE, 0, HUGE, HUGE, 0, HUGE]], "outside the image"),
    "huge-int": ([[0, 0, 10**400, 0, 5, 5]], "outside the image"),
    "string": ([[0, 0, "5", 0, 5, 5]], "not a number"),
    "null": ([[0, 0, None, 0, 5, 5]], "not a number"),
    "bool": ([[0, 0, True, 0, 5, 5]], "not a number"),
    "two-points": ([[0, 0, 5, 5]], ">= 3"),
    "odd-length": ([[0, 0, 5, 0, 5, 5, 1]], ">= 3"),
    "no-polygon": ([], "empty polygon list"),
    "bbox-only": (None, "segmentation must be"),
    "rle-wrong-size": ({"size": [H + 1, W], "counts": [0, (H + 1) * W]}, "RLE size"),
    "rle-too-long": ({"size": [H, W], "counts": [0, H * W + 1]}, "RLE runs cover"),
    "rle-negative": ({"size": [H, W], "counts": [-1, H * W + 1]}, "integers >= 0"),
    "rle-string-size": ({"size": [H, W + 3], "counts": "PQ0"}, "RLE size"),
    "rle-string-overlong-run": ({"size": [H, W], "counts": "o" * 40}, "bad compressed RLE"),
}


def _coco(tmp_path: Path, bad: object, *, stuff: bool = False) -> tuple[Path, Path]:
    """Image 1 with a good annotation (id 1) and ``bad`` (id 9); returns (json, images)."""
    write_image(tmp_path / "img" / "a.png")
    cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "sky", "isthing": 0}]
    anns = [ann(1, 1, box_polygon(0, 0, 4, 4)), ann(9, 2 if stuff else 1, bad)]
    return write_json(tmp_path / "i.json", coco_doc(anns, cats=cats)), tmp_path / "img"


@pytest.mark.parametrize("case", sorted(BAD_SEGMENTATIONS))
def test_coco_bad_segmentation_is_dropped_and_strict_names_it(tmp_path: Path, case: str) -> None:
    bad, reason = BAD_SEGMENTATIONS[case]
    src, images = _coco(tmp_path, bad)
    report = convert_coco_instances(src, images, tmp_path / "out")
    assert (report.images_converted, report.skipped) == (1, [])
    (dropped,) = report.dropped
    assert dropped.where == f"{src}: annotation 9 (image id 1)"
    assert reason in dropped.reason
    expected = np.zeros((H, W), np.int32)
    expected[0:4, 0:4] = 1  # the good annotation still converts
    assert_map(read_split(tmp_path / "out"), 0, expected, {1: (1, False)})
    with pytest.raises(DatasetError) as err:
        convert_coco_instances(src, images, tmp_path / "out2", strict=True)
    message = str(err.value)
    assert str(src) in message and "annotation 9" in message and "image id 1" in message
    assert reason in message
    assert not (tmp_path / "out2" / "annotations" / "panoptic_train2017.json").exists()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("category_id", "1", "category id '1' is not an integer"),
        ("category_id", [1], "category id [1] is not an integer"),
        ("category_id", 7, "category id 7 is not among the categories"),
        ("iscrowd", 2, "iscrowd must be 0 or 1, got 2"),
        ("iscrowd", NAN, "iscrowd must be 0 or 1, got nan"),
    ],
)
def test_coco_bad_category_or_crowd_is_dropped(
    tmp_path: Path, field: str, value: object, reason: str
) -> None:
    src, images = _coco(tmp_path, box_polygon(5, 5, 7, 7))
    doc = coco_doc([ann(1, 1, box_polygon(0, 0, 4, 4)), {**ann(9, 1, []), field: value}])
    write_json(src, doc)
    report = convert_coco_instances(src, images, tmp_path / "out")
    assert report.images_converted == 1
    assert [(p.where, p.reason) for p in report.dropped] == [
        (f"{src}: annotation 9 (image id 1)", reason)
    ]
    with pytest.raises(DatasetError, match="annotation 9 .image id 1.: " + reason[:12]):
        convert_coco_instances(src, images, tmp_path / "out2", strict=True)


def test_coco_bad_stuff_polygon_is_dropped(tmp_path: Path) -> None:
    src, images = _coco(tmp_path, [[0, 0, NAN, 0, 5, 5]], stuff=True)
    report = convert_coco_instances(src, images, tmp_path / "out")
    assert [(p.where, p.reason) for p in report.dropped] == [
        (f"{src}: annotation 9 (image id 1)", "polygon 0: x of point 1 is NaN")
    ]
    assert report.segments_by_category == {"person": 1}


def test_coco_polygon_at_1e12_is_fast(tmp_path: Path) -> None:
    """The rasteriser never sees the 1e12 vertex: this finishes at once and in little memory."""
    write_image(tmp_path / "img" / "a.png")
    anns = [ann(k, 1, [[0, 0, HUGE, 0, HUGE, HUGE, 0, -HUGE]]) for k in range(1, 21)]
    src = write_json(tmp_path / "i.json", coco_doc([*anns, ann(99, 1, box_polygon(0, 0, 2, 2))]))
    start = time.perf_counter()
    report = convert_coco_instances(src, tmp_path / "img", tmp_path / "out")
    assert time.perf_counter() - start < FAST_SECONDS
    assert len(report.dropped) == len(anns) and report.images_converted == 1


def test_coco_polygon_within_the_margin_is_drawn_and_cut(tmp_path: Path) -> None:
    """Up to one image size outside is allowed (drawn, cut at the border); beyond it is not."""
    write_image(tmp_path / "img" / "a.png")
    low_x, high_x = -MARGIN_IMAGES * W, (1 + MARGIN_IMAGES) * W
    low_y, high_y = -MARGIN_IMAGES * H, (1 + MARGIN_IMAGES) * H
    edge = [[low_x, low_y, high_x, low_y, high_x, high_y, low_x, high_y]]
    beyond = [[low_x, low_y, high_x + 1, low_y, high_x, high_y, low_x, high_y]]
    src = write_json(tmp_path / "i.json", coco_doc([ann(1, 1, edge), ann(2, 2, beyond)]))
    report = convert_coco_instances(src, tmp_path / "img", tmp_path / "out")
    (dropped,) = report.dropped
    assert "annotation 2" in dropped.where and f"x of point 1 = {high_x + 1:g}" in dropped.reason
    assert_map(read_split(tmp_path / "out"), 0, np.ones((H, W), np.int32), {1: (1, False)})


# ----------------------------------------------------------------------------- labelme

BAD_POINTS: dict[str, tuple[dict[str, Any], str]] = {
    "polygon-nan": (shape("cat", [[0, 0], [NAN, 0], [5, 5]]), "x of point 1 is NaN"),
    "polygon-inf": (shape("cat", [[0, 0], [4, INF], [5, 5]]), "y of point 1 = inf"),
    "polygon-huge": (shape("cat", [[0, 0], [HUGE, 0], [5, 5]]), "x of point 1 = 1e+12"),
    "polygon-string": (shape("cat", [[0, 0], ["4", 0], [5, 5]]), "x of point 1 is '4'"),
    "polygon-two-points": (shape("cat", [[0, 0], [5, 5]]), "a polygon needs >= 3 points"),
    "polygon-flat-points": (shape("cat", [0, 0, 5, 0, 5, 5]), "[x, y] pairs"),
    "rectangle-huge": (shape("cat", [[0, 0], [HUGE, HUGE]], "rectangle"), "1e+12"),
    "rectangle-nan": (shape("cat", [[0, 0], [3, NAN]], "rectangle"), "NaN"),
    "circle-huge-radius": (shape("cat", [[2, 2], [2, -HUGE]], "circle"), "-1e+12"),
    "circle-inf": (shape("cat", [[INF, 2], [2, 3]], "circle"), "x of point 0 = inf"),
    "circle-three-points": (shape("cat", [[1, 1], [2, 2], [3, 3]], "circle"), "needs 2 points"),
    "unknown-type": (shape("cat", rect_points(0, 0, 3, 3), "hexagon"), "unknown shape type"),
    "group-id-list": (shape("cat", rect_points(0, 0, 3, 3), group=[1]), "group_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_POINTS))
def test_labelme_bad_shape_is_dropped_and_strict_names_it(tmp_path: Path, case: str) -> None:
    bad, reason = BAD_POINTS[case]
    src = tmp_path / "lm"
    write_image(src / "a.png")
    good = shape("dog", rect_points(5, 4, 7, 6))
    write_json(src / "a.json", labelme_doc([good, bad, shape("dog", [[9, 7]], "point")]))
    cats = tmp_path / "cats.yaml"
    cats.write_text("- {name: dog, id: 1}\n- {name: cat, id: 2}\n")
    report = convert_labelme(src, tmp_path / "out", categories=cats)
    assert (report.images_converted, report.skipped) == (1, [])
    invalid, point = report.dropped
    assert invalid.where == f"{src / 'a.json'}: shape 1 ('cat')" and reason in invalid.reason
    assert point.reason == "a point shape has no area"  # a rule: reported, never an error
    expected = np.zeros((H, W), np.int32)
    expected[4:7, 5:8] = 1  # PIL fill + outline: corners inclusive
    assert_map(read_split(tmp_path / "out"), 0, expected, {1: (1, False)})
    with pytest.raises(DatasetError) as err:
        convert_labelme(src, tmp_path / "out2", categories=cats, strict=True)
    assert f"{src / 'a.json'}: shape 1 ('cat')" in str(err.value) and reason in str(err.value)


def test_labelme_mask_shape_stays_a_rule_drop_under_strict(tmp_path: Path) -> None:
    src = tmp_path / "lm"
    write_image(src / "a.png")
    shapes = [shape("dog", rect_points(0, 0, 2, 2)), shape("dog", [[0, 0], [1, 1]], "mask")]
    write_json(src / "a.json", labelme_doc(shapes))
    report = convert_labelme(src, tmp_path / "out", strict=True)
    assert [p.reason for p in report.dropped] == ["unsupported shape type 'mask'"]


def test_labelme_huge_points_are_fast(tmp_path: Path) -> None:
    src = tmp_path / "lm"
    write_image(src / "a.png")
    huge = [shape("cat", [[0, 0], [HUGE, 0], [HUGE, HUGE], [0, HUGE]]) for _ in range(20)]
    write_json(src / "a.json", labelme_doc([*huge, shape("dog", rect_points(0, 0, 2, 2))]))
    start = time.perf_counter()
    report = convert_labelme(src, tmp_path / "out")
    assert time.perf_counter() - start < FAST_SECONDS
    assert report.images_converted == 1
    assert [p.reason for p in report.dropped] == [
        "x of point 1 = 1e+12 lies more than 1 image size outside the image "
        f"(allowed {-W:g} .. {2 * W:g} along a side of {W} px)"
    ] * len(huge)
