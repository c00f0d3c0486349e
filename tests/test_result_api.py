"""``PanopticResult`` (masks, boxes, areas, RLE, COCO, plot, save) and ``Predictor``'s inputs.

The result tests use a hand-built 6 x 8 id map whose masks, boxes and areas are written out
below; the input tests compare every input kind (bytes, a folder, a list, a generator) with
the same image as an array, on an untrained tiny model (no training needed: equality of two
runs is what is tested).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_UNTRAINED_RUN
from PIL import Image

from maskconver.data.panoptic_png import read_panoptic_png
from maskconver.data.synthetic import synthetic_categories
from maskconver.data.types import SegmentInfo
from maskconver.predictor import Predictor
from maskconver.result import PanopticResult

# ids: 1 = a thing in rows 0-1, cols 1-3; 2 = stuff on the bottom two rows and the pixel (2, 7);
# 3 = a thing, the single pixel (3, 5); the rest void
PANOPTIC = np.array(
    [
        [0, 1, 1, 1, 0, 0, 0, 0],
        [0, 1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 2],
        [0, 0, 0, 0, 0, 3, 0, 0],
        [2, 2, 2, 2, 2, 2, 2, 2],
        [2, 2, 2, 2, 2, 2, 2, 2],
    ],
    dtype=np.int32,
)
CATEGORIES = synthetic_categories()
THING = next(c.id for c in CATEGORIES.categories if c.isthing)
STUFF = next(c.id for c in CATEGORIES.categories if not c.isthing)
SEGMENTS = [
    SegmentInfo(id=1, category_id=THING, score=0.9, isthing=True, area=6),
    SegmentInfo(id=2, category_id=STUFF, score=0.8, isthing=False, area=17),
    SegmentInfo(id=3, category_id=THING, score=0.7, isthing=True, area=1),
]
# x0, y0, x1, y1 with exclusive x1, y1: segment 1 spans cols 1..3, rows 0..1 -> (1, 0, 4, 2);
# segment 2 spans cols 0..7, rows 2..5 -> (0, 2, 8, 6); segment 3 is (5, 3) -> (5, 3, 6, 4)
BOXES = [[1, 0, 4, 2], [0, 2, 8, 6], [5, 3, 6, 4]]
AREAS = [6, 2 * 8 + 1, 1]


@pytest.fixture
def result() -> PanopticResult:
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    return PanopticResult(
        panoptic=PANOPTIC.copy(),
        segments=[SegmentInfo(**vars(s)) for s in SEGMENTS],
        image=image,
        categories=CATEGORIES,
        name="photo.jpg",
    )


def test_masks_are_one_per_segment_in_order(result: PanopticResult) -> None:
    assert len(result.masks) == 3
    for seg, mask in zip(SEGMENTS, result.masks, strict=True):
        assert mask.dtype == bool and mask.shape == PANOPTIC.shape
        np.testing.assert_array_equal(mask, np.equal(PANOPTIC, seg.id))
    np.testing.assert_array_equal(result.masks[2], result.mask(3))
    assert [m.sum() for m in result.masks[:2]] == AREAS[:2]


def test_boxes_and_areas(result: PanopticResult) -> None:
    np.testing.assert_array_equal(result.boxes, np.array(BOXES))
    np.testing.assert_array_equal(result.areas, np.array(AREAS))


def test_boxes_of_a_segment_spanning_row_blocks() -> None:
    tall = np.zeros((1100, 3), dtype=np.int32)
    tall[5, 1] = tall[1099, 2] = 4  # rows in the first and the third 512-row block
    res = PanopticResult(panoptic=tall, segments=[SegmentInfo(id=4, category_id=THING)])
    np.testing.assert_array_equal(res.boxes, [[1, 5, 3, 1100]])


def test_rle_decodes_to_the_masks(result: PanopticResult) -> None:
    from pycocotools import mask as mask_utils

    rles = result.rle()
    for rle, mask, area in zip(rles, result.masks, AREAS, strict=True):
        assert rle["size"] == [6, 8] and isinstance(rle["counts"], str)
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)
        assert int(mask_utils.area({"size": rle["size"], "counts": rle["counts"]})) == area
    json.dumps(rles)  # JSON-ready


def test_to_coco_structure(result: PanopticResult) -> None:
    coco = result.to_coco(image_id=7)
    panoptic = coco["panoptic"]
    assert panoptic["image_id"] == 7 and panoptic["file_name"] == "photo.png"
    infos = panoptic["segments_info"]
    assert [i["id"] for i in infos] == [1, 2, 3]
    # COCO bbox [x, y, w, h] from the exclusive box: segment 1 -> [1, 0, 3, 2]
    assert infos[0] == {
        "id": 1,
        "category_id": THING,
        "iscrowd": 0,
        "bbox": [1, 0, 3, 2],
        "area": 6,
        "score": pytest.approx(0.9),
        "isthing": True,
    }
    assert [i["bbox"] for i in infos] == [[1, 0, 3, 2], [0, 2, 8, 4], [5, 3, 1, 1]]
    things = coco["instances"]
    assert [(t["category_id"], t["area"]) for t in things] == [(THING, 6), (THING, 1)]
    assert set(things[0]) == {"image_id", "category_id", "segmentation", "bbox", "area", "score"}
    assert len(result.to_coco(things_only=False)["instances"]) == 3
    json.dumps(coco)


def test_plot_is_an_rgb_overlay(result: PanopticResult) -> None:
    picture = result.plot()
    assert picture.shape == (6, 8, 3) and picture.dtype == np.uint8
    assert result.image is not None
    np.testing.assert_array_equal(picture[0, 6], result.image[0, 6])  # void, off any boundary
    assert (picture[PANOPTIC == 2] != result.image[PANOPTIC == 2]).any()  # stuff is coloured
    bare = PanopticResult(panoptic=PANOPTIC, segments=SEGMENTS)
    with pytest.raises(ValueError, match="image and categories"):
        bare.plot()


def test_save_round_trip_and_refuses_to_overwrite(result: PanopticResult, tmp_path: Path) -> None:
    paths = result.save(tmp_path / "out")
    assert {p.name for p in paths.values()} == {"photo.png", "photo.json", "photo_overlay.png"}
    np.testing.assert_array_equal(read_panoptic_png(paths["panoptic"]), PANOPTIC)
    saved = json.loads(paths["json"].read_text())
    assert saved == json.loads(json.dumps(result.to_coco("photo", file_name="photo.png")))
    overlay = np.asarray(Image.open(paths["overlay"]))
    np.testing.assert_array_equal(overlay, result.plot())  # PNG: lossless

    before = paths["json"].read_bytes()
    with pytest.raises(FileExistsError, match="photo.json"):
        result.save(tmp_path / "out")
    assert paths["json"].read_bytes() == before
    result.save(tmp_path / "out", overwrite=True)


def test_save_refuses_before_writing_anything(result: PanopticResult, tmp_path: Path) -> None:
    (tmp_path / "photo_overlay.png").write_text("the user's file")
    with pytest.raises(FileExistsError):
        result.save(tmp_path)
    assert not (tmp_path / "photo.png").exists()
    assert (tmp_path / "photo_overlay.png").read_text() == "the user's file"


# --- Predictor inputs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    from maskconver.build import build_eval_transforms, build_model, build_postprocessor
    from maskconver.config import load_config

    torch.manual_seed(0)
    cfg = load_config("tiny", SMALL_UNTRAINED_RUN)
    num_classes = len(CATEGORIES)
    return Predictor(
        build_model(cfg.model, num_classes),
        cfg=cfg,
        categories=CATEGORIES,
        postprocessor=build_postprocessor(cfg, CATEGORIES, num_classes),
        transform=build_eval_transforms(cfg),
    )


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 56), (50, 30)]]


def _same(a: PanopticResult, b: PanopticResult) -> None:
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    assert [(s.id, s.category_id, s.area) for s in a.segments] == [
        (s.id, s.category_id, s.area) for s in b.segments
    ]


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_inputs_of_every_kind_equal_the_array(predictor: Predictor, tmp_path: Path) -> None:
    images = _images()
    expected = [predictor(im) for im in images]
    assert all(r.segments for r in expected)  # the open merge keeps segments: a real comparison
    assert isinstance(expected[0], PanopticResult) and expected[0].categories is CATEGORIES
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")

    _same(predictor(_png_bytes(images[0])), expected[0])
    folder = list(predictor.stream(tmp_path, batch_size=2))
    assert [r.name for r in folder] == ["img0.png", "img1.png"]
    listed = predictor.predict_batch([tmp_path / "img0.png", str(tmp_path / "img1.png")])
    generated = list(predictor.stream((im for im in images), batch_size=1))
    for results in (folder, listed, generated):
        for got, want in zip(results, expected, strict=True):
            _same(got, want)
    np.testing.assert_array_equal(folder[1].image, images[1])


def test_stream_is_lazy(predictor: Predictor) -> None:
    pulled: list[int] = []

    def images() -> Iterator[np.ndarray]:
        for i, im in enumerate(_images() * 3):
            pulled.append(i)
            yield im

    stream = predictor.stream(images(), batch_size=2)
    first = next(stream)
    assert pulled == [0, 1]  # one batch read, nothing more
    assert first.panoptic.shape == (40, 56)
    assert len(list(stream)) == 5


def test_bad_bytes_name_the_problem(predictor: Predictor) -> None:
    from maskconver.data.image_io import ImageReadError

    with pytest.raises(ImageReadError, match="12 bytes are not a readable image"):
        predictor(b"not an image")
    with pytest.raises(ValueError, match="batch_size"):
        next(predictor.stream([_images()[0]], batch_size=0))
