"""Converters into COCO panoptic (coco-instances, labelme, voc) and back to instances.

Every expected panoptic map is built here with NumPy slicing from the rasterisation rules:
pycocotools fills an axis-aligned polygon with integer corners (x0, y0)-(x1, y1) on
x0 <= x < x1, y0 <= y < y1; labelme shapes (PIL fill + outline) cover the corners inclusively.
Maps are compared up to the numbering of segments (``canonical``).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from maskconver.cli import main
from maskconver.data.coco_panoptic import CocoPanopticDataset, DatasetError
from maskconver.data.convert.coco_instances import convert_coco_instances
from maskconver.data.convert.labelme import convert_labelme
from maskconver.data.convert.to_instances import panoptic_to_instances
from maskconver.data.convert.voc import VOC2012_CLASSES, convert_voc
from maskconver.data.types import Category, CategorySet
from maskconver.data.writer import write_coco_panoptic

H, W = 8, 10


# ----------------------------------------------------------------------------- helpers


def canonical(panoptic: np.ndarray, info: dict[int, tuple[int, bool]]) -> tuple[np.ndarray, list]:
    """Ids renumbered by first occurrence in raster order, with (category, iscrowd) per new id."""
    out = np.zeros_like(panoptic)
    labels: list[tuple[int, bool]] = []
    order: dict[int, int] = {}
    for value in panoptic.ravel().tolist():
        if value and value not in order:
            order[value] = len(order) + 1
            labels.append(info[value])
    for old, new in order.items():
        out[panoptic == old] = new
    return out, labels


def read_split(root: Path, split: str = "train2017") -> CocoPanopticDataset:
    return CocoPanopticDataset(root, split)


def sample_canonical(dataset: CocoPanopticDataset, index: int) -> tuple[np.ndarray, list]:
    sample = dataset[index]
    return canonical(sample.panoptic, {s.id: (s.category_id, s.iscrowd) for s in sample.segments})


def assert_map(dataset: CocoPanopticDataset, index: int, expected: np.ndarray, info: dict) -> None:
    got_map, got_labels = sample_canonical(dataset, index)
    want_map, want_labels = canonical(expected, info)
    np.testing.assert_array_equal(got_map, want_map)
    assert got_labels == want_labels


def write_image(path: Path, height: int = H, width: int = W, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode).save(
        path
    )
    return path


def box_polygon(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE by hand: run lengths of the column-major pixels, starting with 0s."""
    flat = mask.astype(np.uint8).ravel(order="F").tolist()
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def write_json(path: Path, payload: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def ann(ann_id: int, category: int, segmentation: object, crowd: int = 0, image: int = 1) -> dict:
    return {
        "id": ann_id,
        "image_id": image,
        "category_id": category,
        "iscrowd": crowd,
        "segmentation": segmentation,
    }


def coco_doc(annotations: list[dict], images: list[dict] | None = None, cats=None) -> dict:
    return {
        "images": images or [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": annotations,
        "categories": cats
        or [{"id": 1, "name": "person", "supercategory": "x"}, {"id": 2, "name": "car"}],
    }


# ----------------------------------------------------------------------------- coco-instances


def test_coco_overlaps_crowd_and_rle(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.png")
    crowd_mask = np.zeros((H, W), bool)
    crowd_mask[5:8, 0:10] = True  # bottom rows, partly under B
    e_mask = np.zeros((H, W), bool)
    e_mask[0:2, 8:10] = True
    anns = [
        # crowd listed first, but painted after the non-crowd ones; uncompressed RLE
        ann(10, 1, uncompressed_rle(crowd_mask), crowd=1),
        ann(11, 1, box_polygon(0, 0, 6, 4)),
        ann(12, 2, box_polygon(4, 2, 9, 7)),
        # a duplicate of 11: all its pixels are taken -> dropped (1.0 > 0.5)
        ann(13, 2, box_polygon(0, 0, 5, 4)),
        ann(14, 2, compressed_rle(e_mask)),
    ]
    src = write_json(tmp_path / "instances.json", coco_doc(anns))
    report = convert_coco_instances(src, tmp_path / "img", tmp_path / "out")

    expected = np.zeros((H, W), np.int32)
    expected[0:4, 0:6] = 11  # first
    b = np.zeros((H, W), bool)
    b[2:7, 4:9] = True
    expected[b & (expected == 0)] = 12  # 4 of its 25 px taken: kept, gets the free ones
    expected[crowd_mask & (expected == 0)] = 10
    expected[e_mask & (expected == 0)] = 14
    info = {11: (1, False), 12: (2, False), 10: (1, True), 14: (2, False)}
    assert_map(read_split(tmp_path / "out"), 0, expected, info)
    assert report.images_converted == 1 and report.crowd == 1
    assert [p.where for p in report.dropped] == [f"{src}: annotation 13"]
    assert "duplicate" in report.dropped[0].reason
    assert report.segments_by_source == {"instances": 4}


def test_coco_overlap_error_mode_skips_the_image(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "img" / name)
    images = [
        {"id": 1, "file_name": "a.png", "height": H, "width": W},
        {"id": 2, "file_name": "b.png", "height": H, "width": W},
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": box_polygon(0, 0, 4, 4)},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": box_polygon(3, 3, 6, 6)},
        {"id": 3, "image_id": 2, "category_id": 1, "segmentation": box_polygon(0, 0, 4, 4)},
        {"id": 4, "image_id": 2, "category_id": 1, "segmentation": box_polygon(4, 0, 6, 4)},
    ]
    src = write_json(tmp_path / "i.json", coco_doc(anns, images))
    report = convert_coco_instances(src, tmp_path / "img", tmp_path / "out", overlap="error")
    assert report.images_converted == 1
    (skip,) = report.skipped
    assert skip.where.endswith("a.png") and "annotation 2" in skip.reason
    assert "annotation 1" in skip.reason and "overlap" in skip.reason
    assert len(read_split(tmp_path / "out")) == 1


def test_coco_scores_order_and_categories_override(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.png")
    low = {**ann(1, 1, box_polygon(0, 0, 6, 4)), "score": 0.3}
    high = {**ann(2, 1, box_polygon(3, 0, 9, 4)), "score": 0.9}  # later in the file, wins
    car = ann(3, 2, box_polygon(0, 5, 4, 8))
    src = write_json(tmp_path / "i.json", coco_doc([low, high, car]))
    cats = write_json(tmp_path / "cats.json", {"categories": [{"id": 1, "name": "human"}]})
    report = convert_coco_instances(src, tmp_path / "img", tmp_path / "out", categories=cats)
    expected = np.zeros((H, W), np.int32)
    expected[0:4, 3:9] = 2
    expected[0:4, 0:3] = 1  # 12 of its 24 px were taken: 0.5 is not > 0.5, so it keeps the rest
    dataset = read_split(tmp_path / "out")
    assert_map(dataset, 0, expected, {1: (1, False), 2: (1, False)})
    assert [c.name for c in dataset.categories.categories] == ["human"]
    assert any("1 annotations of category id 2 left out" in n for n in report.notes)


def test_coco_stuff_json_fills_only_free_pixels(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.png")
    everything = np.ones((H, W), bool)
    top = np.zeros((H, W), bool)
    top[0:3] = True
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": box_polygon(2, 2, 5, 6)}]
    stuff = {
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 92, "segmentation": compressed_rle(top)},
            # the same category again joins the same segment; then the rest of the image
            {"id": 8, "image_id": 1, "category_id": 92, "segmentation": compressed_rle(top)},
            {
                "id": 9,
                "image_id": 1,
                "category_id": 93,
                "segmentation": uncompressed_rle(everything),
            },
        ],
        "categories": [{"id": 92, "name": "sky"}, {"id": 93, "name": "road"}],
    }
    src = write_json(tmp_path / "i.json", coco_doc(anns))
    stuff_json = write_json(tmp_path / "stuff.json", stuff)
    report = convert_coco_instances(src, tmp_path / "img", tmp_path / "out", stuff_json=stuff_json)
    expected = np.full((H, W), 3, np.int32)  # road: everything left
    expected[0:3] = 2  # sky, where no thing is
    expected[2:6, 2:5] = 1  # the thing wins over stuff
    dataset = read_split(tmp_path / "out")
    assert_map(dataset, 0, expected, {1: (1, False), 2: (92, False), 3: (93, False)})
    assert not dataset.categories.by_id[92].isthing and dataset.categories.by_id[1].isthing
    assert report.segments_by_source == {"instances": 1, "stuff-json": 2}


def test_coco_stuff_pngs_with_an_id0_category(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.png")
    labels = np.zeros((H, W), np.uint8)  # value 0 = "floor" (id 0 in the map)
    labels[0:2] = 5  # sky
    labels[:, 9] = 255  # not in the map: void
    labels[7, 0] = 1  # a thing value in the map's thing entry: ignored (things come from JSON)
    (tmp_path / "stuff").mkdir()
    Image.fromarray(labels, mode="L").save(tmp_path / "stuff" / "a.png")
    cmap = tmp_path / "stuff.yaml"
    cmap.write_text(
        "- {name: floor, id: 0, isthing: false}\n- {name: sky, id: 5, isthing: false}\n"
        "- {name: person, id: 1, isthing: true}\n"
    )
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": box_polygon(0, 0, 3, 3)}]
    src = write_json(tmp_path / "i.json", coco_doc(anns))
    report = convert_coco_instances(
        src,
        tmp_path / "img",
        tmp_path / "out",
        stuff_pngs=tmp_path / "stuff",
        stuff_categories=cmap,
    )
    floor_id = 6  # id 0 becomes max(1, 2, 5) + 1
    expected = np.full((H, W), floor_id, np.int32)
    expected[0:2] = 5
    expected[:, 9] = 0
    expected[7, 0] = 0
    expected[0:3, 0:3] = 1
    dataset = read_split(tmp_path / "out")
    assert_map(dataset, 0, expected, {1: (1, False), 5: (5, False), floor_id: (floor_id, False)})
    assert dataset.categories.by_id[floor_id].name == "floor"
    assert any("'floor' had id 0" in n and f"id {floor_id}" in n for n in report.notes)
    assert any("255" in n for n in report.notes)


def test_coco_missing_image_skipped_and_bad_rle_dropped(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.png")
    images = [
        {"id": 1, "file_name": "a.png", "height": H, "width": W},
        {"id": 2, "file_name": "gone.png", "height": H, "width": W},
        {"id": 3, "file_name": "b.png", "height": H, "width": W},  # a bad annotation
    ]
    wrong = {"size": [H + 1, W], "counts": [0, (H + 1) * W]}
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": box_polygon(0, 0, 2, 2)},
        {"id": 5, "image_id": 3, "category_id": 1, "segmentation": wrong},
    ]
    src = write_json(tmp_path / "i.json", coco_doc(anns, images))
    report = convert_coco_instances(src, tmp_path / "img", tmp_path / "out")
    # the missing image is skipped; image 3 converts without its bad annotation (dropped)
    assert report.images_seen == 3 and report.images_converted == 2
    reasons = {Path(p.where).name: p.reason for p in report.skipped}
    assert list(reasons) == ["gone.png"] and "not found" in reasons["gone.png"]
    (bad,) = report.dropped
    assert bad.where == f"{src}: annotation 5 (image id 3)" and "RLE size" in bad.reason
    with pytest.raises(DatasetError, match="gone.png"):
        convert_coco_instances(src, tmp_path / "img", tmp_path / "out2", strict=True)


def test_coco_malformed_json_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    (tmp_path / "img").mkdir()
    with pytest.raises(DatasetError, match="broken.json"):
        convert_coco_instances(bad, tmp_path / "img", tmp_path / "out")
    no_images = write_json(tmp_path / "x.json", {"annotations": [], "categories": []})
    with pytest.raises(DatasetError, match="x.json.*'images'"):
        convert_coco_instances(no_images, tmp_path / "img", tmp_path / "out")


def test_output_guard(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.png")
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": box_polygon(0, 0, 2, 2)}]
    src = write_json(tmp_path / "i.json", coco_doc(anns))
    convert_coco_instances(src, tmp_path / "img", tmp_path / "out")
    with pytest.raises(DatasetError, match="already exists.*--overwrite"):
        convert_coco_instances(src, tmp_path / "img", tmp_path / "out")
    # another split into the same root is fine; --overwrite replaces this split
    convert_coco_instances(src, tmp_path / "img", tmp_path / "out", split="val2017")
    convert_coco_instances(src, tmp_path / "img", tmp_path / "out", overwrite=True)
    assert len(read_split(tmp_path / "out")) == 1
    # the split's image folder would be the input image folder
    with pytest.raises(DatasetError, match="write over the input"):
        convert_coco_instances(src, tmp_path / "img", tmp_path, split="img", overwrite=True)
    with pytest.raises(DatasetError, match="inside the input folder"):
        convert_coco_instances(src, tmp_path / "img", tmp_path / "img" / "o")
    assert (tmp_path / "img" / "a.png").is_file()


# ----------------------------------------------------------------------------- labelme


def labelme_doc(shapes: list[dict], image_path: str | None = "a.png", **extra: Any) -> dict:
    doc = {"version": "5.0.1", "flags": {}, "shapes": shapes, "imagePath": image_path}
    doc.update({"imageData": None, "imageHeight": H, "imageWidth": W})
    doc.update(extra)
    return doc


def shape(
    label: str, points: list, kind: str = "polygon", group: int | None = None, **kw: Any
) -> dict:
    return {
        "label": label,
        "points": points,
        "group_id": group,
        "shape_type": kind,
        "flags": {},
        **kw,
    }


def rect_points(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_labelme_groups_holes_ignore_and_id0(tmp_path: Path) -> None:
    src = tmp_path / "lm"
    write_image(src / "a.png")
    shapes = [
        shape("grass", rect_points(0, 0, 9, 7)),  # stuff under everything
        shape("person", rect_points(0, 0, 4, 4), group=1),
        shape("person", [[7, 0], [9, 2]], "rectangle", group=1),  # same instance, second part
        shape("__ignore__", rect_points(1, 1, 2, 2)),  # a void hole in the person
        shape("person", rect_points(5, 5, 6, 6)),  # no group: its own instance
        shape("dog", [[3, 3], [6, 6]], "rectangle"),  # later: paints over both persons
        shape("grass", [[8, 7]], "point"),
        shape("person", [[0, 7], [9, 7]], "line"),
    ]
    write_json(src / "a.json", labelme_doc(shapes))
    cats = tmp_path / "cats.yaml"
    cats.write_text(
        "- {name: grass, id: 0, isthing: false}\n- {name: person, id: 1, isthing: true}\n"
        "- {name: dog, id: 2, isthing: true}\n"
    )
    report = convert_labelme(src, tmp_path / "out", categories=cats)
    grass = 3  # id 0 -> max(1, 2) + 1
    exp = np.full((H, W), 100, np.int32)  # grass segment (labelled 100 here)
    exp[0:5, 0:5] = 1  # person instance A
    exp[0:3, 7:10] = 1  # ... its rectangle part
    exp[1:3, 1:3] = 0  # __ignore__ hole
    exp[5:7, 5:7] = 2  # person instance B
    exp[3:7, 3:7] = 3  # dog over A and B
    info = {100: (grass, False), 1: (1, False), 2: (1, False), 3: (2, False)}
    dataset = read_split(tmp_path / "out")
    assert_map(dataset, 0, exp, info)
    # B is entirely under the dog -> it vanished, and the report says so
    vanished = [p for p in report.dropped if "painted over" in p.reason]
    assert len(vanished) == 1 and "shape 4" in vanished[0].where
    kinds = sorted(p.reason for p in report.dropped if "no area" in p.reason)
    assert kinds == ["a line shape has no area", "a point shape has no area"]
    assert any("'grass' had id 0" in n for n in report.notes)
    assert (
        dataset.categories.by_id[grass].name == "grass"
        and not dataset.categories.by_id[grass].isthing
    )
    assert dataset.image_info(0)["file_name"] == "a.png"


def test_labelme_generated_categories_embedded_image_and_circle(tmp_path: Path) -> None:
    src = tmp_path / "lm"
    src.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (W, H), (10, 20, 30)).save(buf, format="PNG")
    shapes = [
        shape("zebra", [[5, 4], [8, 4]], "circle"),  # centre (5, 4), radius 3
        shape("ant", rect_points(0, 0, 1, 1), flags={"iscrowd": True}),
    ]
    doc = labelme_doc(
        shapes, image_path="missing.jpg", imageData=base64.b64encode(buf.getvalue()).decode()
    )
    write_json(src / "sub" / "x.json", doc)
    report = convert_labelme(src, tmp_path / "out")
    dataset = read_split(tmp_path / "out")
    assert [(c.id, c.name, c.isthing) for c in dataset.categories.categories] == [
        (1, "ant", True),
        (2, "zebra", True),
    ]
    assert any("sorted order" in n for n in report.notes)
    sample = dataset[0]
    assert sample.file_name == "sub/x.png"
    assert (sample.image == (10, 20, 30)).all()
    by_id = {s.id: s for s in sample.segments}
    zebra = sample.panoptic == next(s.id for s in sample.segments if s.category_id == 2)
    ys, xs = np.mgrid[0:H, 0:W]
    dist2 = (xs - 5) ** 2 + (ys - 4) ** 2
    assert zebra[dist2 <= 4].all()  # well inside the radius-3 circle
    assert not zebra[dist2 >= 5**2].any()  # well outside it
    ant = by_id[int(sample.panoptic[0, 0])]
    assert ant.category_id == 1 and ant.iscrowd and ant.area == 4
    assert report.crowd == 1


def test_labelme_missing_image_and_wrong_json(tmp_path: Path) -> None:
    src = tmp_path / "lm"
    write_image(src / "a.png")
    good = [shape("cat", rect_points(0, 0, 2, 2))]
    write_json(src / "a.json", labelme_doc(good))
    write_json(src / "b.json", labelme_doc(good, image_path="nowhere.png"))
    (src / "c.json").write_text('{"shapes": [')
    write_json(src / "d.json", {"something": "else"})
    report = convert_labelme(src, tmp_path / "out")
    assert (report.images_seen, report.images_converted) == (4, 1)
    reasons = {Path(p.where).name: p.reason for p in report.skipped}
    assert "nowhere.png" in reasons["b.json"] and "not found" in reasons["b.json"]
    assert "malformed JSON" in reasons["c.json"]
    assert "not a labelme file" in reasons["d.json"]
    with pytest.raises(DatasetError, match=r"c\.json"):
        convert_labelme(src, tmp_path / "out2", strict=True)
    bad_points = [shape("cat", [[0, 0], [1, 1]])]  # a polygon of 2 points
    write_json(tmp_path / "lm2" / "e.json", labelme_doc(bad_points, image_path="../lm/a.png"))
    report = convert_labelme(tmp_path / "lm2", tmp_path / "out3")  # dropped, the image converts
    assert [(Path(p.where).name, p.reason) for p in report.dropped] == [
        ("e.json: shape 0 ('cat')", "a polygon needs >= 3 points, got 2")
    ]
    with pytest.raises(DatasetError, match=r"e\.json: shape 0 .*3 points"):
        convert_labelme(tmp_path / "lm2", tmp_path / "out4", strict=True)


# ----------------------------------------------------------------------------- voc


def save_p(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(values.astype(np.uint8), mode="P")
    im.putpalette([v for k in range(256) for v in (k, 255 - k, (7 * k) % 256)])
    im.save(path)


def test_voc_majority_class_void_and_background_stuff(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "2011_1.jpg")
    person, chair = VOC2012_CLASSES.index("person"), VOC2012_CLASSES.index("chair")
    objects = np.zeros((H, W), np.uint8)
    classes = np.zeros((H, W), np.uint8)
    objects[0:4, 0:4] = 1
    classes[0:4, 0:4] = person
    classes[0, 0:3] = chair  # 3 of 16 px disagree: the majority (person) wins
    objects[5:8, 5:9] = 2
    classes[5:8, 5:9] = chair
    objects[4, :] = 255  # the void band
    classes[4, :] = 255
    objects[0, 9] = 3  # an object whose class pixels are all void
    classes[0, 9] = 255
    save_p(root / "SegmentationObject" / "2011_1.png", objects)
    save_p(root / "SegmentationClass" / "2011_1.png", classes)
    report = convert_voc(root, tmp_path / "out")
    exp = np.zeros((H, W), np.int32)
    exp[0:4, 0:4] = 1
    exp[5:8, 5:9] = 2
    dataset = read_split(tmp_path / "out")
    assert_map(dataset, 0, exp, {1: (person, False), 2: (chair, False)})
    assert len(dataset.categories) == 20 and dataset.categories.by_id[person].name == "person"
    assert [p.reason for p in report.dropped] == ["all its SegmentationClass pixels are void (255)"]

    # background mapped to a stuff category with id 0: it fills the background pixels
    cats = tmp_path / "cats.json"
    cats.write_text(json.dumps([
        {"name": "background", "id": 0, "isthing": False},
        {"name": "person", "id": 1, "isthing": True},
        {"name": "chair", "id": 62, "isthing": True},
    ]))  # fmt: skip
    report = convert_voc(root, tmp_path / "out2", categories=cats)
    exp2 = np.where(classes == 0, 63, 0).astype(np.int32)  # background -> id 63
    exp2[0:4, 0:4] = 1
    exp2[5:8, 5:9] = 62
    dataset = read_split(tmp_path / "out2")
    assert_map(dataset, 0, exp2, {1: (1, False), 62: (62, False), 63: (63, False)})
    assert any("'background' had id 0" in n and "63" in n for n in report.notes)
    assert report.segments_by_source == {"SegmentationObject": 2, "SegmentationClass": 1}


def test_voc_refuses_colour_pngs(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "x.jpg")
    write_image(root / "SegmentationObject" / "x.png")  # RGB: not ids
    save_p(root / "SegmentationClass" / "x.png", np.zeros((H, W)))
    with pytest.raises(DatasetError, match=r"no image converted.*x\.png is a RGB image"):
        convert_voc(root, tmp_path / "out")


# ----------------------------------------------------------------------------- reverse


def test_round_trip_panoptic_instances_panoptic(synthetic_coco_root: Path, tmp_path: Path) -> None:
    split = "val2017"
    original = read_split(synthetic_coco_root, split)
    inst = tmp_path / "instances.json"
    panoptic_to_instances(
        original.json_path, original.png_dir, inst, image_dir=original.image_dir, stuff=True
    )
    convert_coco_instances(inst, original.image_dir, tmp_path / "back", split=split)
    back = read_split(tmp_path / "back", split)
    assert len(back) == len(original) > 0
    assert back.categories.to_json() == original.categories.to_json()
    for k in range(len(original)):
        assert sample_canonical(back, k)[0].tolist() == sample_canonical(original, k)[0].tolist()
        assert sample_canonical(back, k)[1] == sample_canonical(original, k)[1]
        assert back.image_info(k) == original.image_info(k)
        np.testing.assert_array_equal(back[k].image, original[k].image)


def test_to_instances_rle_area_bbox_crowd(tmp_path: Path, make_sample) -> None:
    panoptic = np.zeros((H, W), np.int32)
    panoptic[0:3, 0:4] = 5  # person
    panoptic[4:8, 2:6] = 9  # crowd of persons
    panoptic[:, 8:] = 7  # sky (stuff)
    sample = make_sample(panoptic, {5: 1, 9: 1, 7: 3}, thing_categories=(1,), crowd=(9,))
    cats = CategorySet([Category(1, "person", True), Category(3, "sky", False)])
    write_coco_panoptic([sample], tmp_path / "ds", "val2017", cats, image_format="png")
    ds = read_split(tmp_path / "ds", "val2017")
    out = tmp_path / "inst.json"
    report = panoptic_to_instances(ds.json_path, ds.png_dir, out)
    doc = json.loads(out.read_text())
    assert [c["id"] for c in doc["categories"]] == [1]
    anns = sorted(doc["annotations"], key=lambda a: a["iscrowd"])
    assert [(a["category_id"], a["iscrowd"], a["area"]) for a in anns] == [(1, 0, 12), (1, 1, 16)]
    assert anns[0]["bbox"] == [0.0, 0.0, 4.0, 3.0] and anns[1]["bbox"] == [2.0, 4.0, 4.0, 4.0]
    assert isinstance(anns[0]["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode(anns[0]["segmentation"]), panoptic == 5)
    np.testing.assert_array_equal(mask_utils.decode(anns[1]["segmentation"]), panoptic == 9)
    assert report.segments_by_source == {"things": 2} and report.crowd == 1
    with pytest.raises(DatasetError, match="already exists"):
        panoptic_to_instances(ds.json_path, ds.png_dir, out)
    with pytest.raises(DatasetError, match="write over the input"):
        panoptic_to_instances(ds.json_path, ds.png_dir, ds.json_path, overwrite=True)
    panoptic_to_instances(ds.json_path, ds.png_dir, out, stuff=True, overwrite=True)
    doc = json.loads(out.read_text())
    assert sorted(a["category_id"] for a in doc["annotations"]) == [1, 1, 3]
    # and back: crowd stays crowd, stuff stays stuff
    convert_coco_instances(out, ds.image_dir, tmp_path / "back", split="val2017")
    back = read_split(tmp_path / "back", "val2017")
    info = {s.id: (s.category_id, s.iscrowd) for s in sample.segments}
    assert_map(back, 0, panoptic, info)
    assert not back.categories.by_id[3].isthing


# ----------------------------------------------------------------------------- command line


def test_cli_convert_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image(tmp_path / "img" / "a.png")
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": box_polygon(0, 0, 2, 2)}]
    src = write_json(tmp_path / "i.json", coco_doc(anns))
    args = ["data", "convert", "coco-instances", str(src), "--images", str(tmp_path / "img")]
    report = tmp_path / "report.json"
    assert (
        main([*args, "--out", str(tmp_path / "o1"), "--no-progress", "--report", str(report)]) == 0
    )
    assert "converted 1 of 1 images" in capsys.readouterr().out
    assert json.loads(report.read_text())["images_converted"] == 1

    lm = tmp_path / "lm"
    write_image(lm / "a.png")
    write_json(lm / "a.json", labelme_doc([shape("cat", rect_points(0, 0, 2, 2))]))
    assert (
        main(
            ["data", "convert", "labelme", str(lm), "--out", str(tmp_path / "o2"), "--no-progress"]
        )
        == 0
    )

    voc = tmp_path / "voc"
    write_image(voc / "JPEGImages" / "v.jpg")
    save_p(voc / "SegmentationObject" / "v.png", np.ones((H, W)))
    save_p(voc / "SegmentationClass" / "v.png", np.full((H, W), 15))
    assert (
        main(["data", "convert", "voc", str(voc), "--out", str(tmp_path / "o3"), "--no-progress"])
        == 0
    )
    assert read_split(tmp_path / "o3")[0].segments[0].category_id == 15

    inst = tmp_path / "back.json"
    back = ["data", "convert", "panoptic-to-instances", str(tmp_path / "o3"), "--out", str(inst)]
    assert main([*back, "--no-progress"]) == 0
    assert len(json.loads(inst.read_text())["annotations"]) == 1
    capsys.readouterr()

    # bad input: exit code 2 and one line naming the problem
    assert main([*back, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err
    (tmp_path / "bad.json").write_text("[1, 2")
    bad = [
        "data",
        "convert",
        "coco-instances",
        str(tmp_path / "bad.json"),
        "--images",
        str(tmp_path / "img"),
    ]
    assert main([*bad, "--out", str(tmp_path / "o4")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.json" in err
    assert (
        main(["data", "convert", "labelme", str(tmp_path / "nope"), "--out", str(tmp_path / "o5")])
        == 2
    )
    assert "labelme folder not found" in capsys.readouterr().err
