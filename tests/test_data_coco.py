"""COCO panoptic reader, writer and image loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from maskconver.data import panoptic_png
from maskconver.data.coco_panoptic import CocoPanopticDataset, DatasetError
from maskconver.data.image_io import ImageReadError, load_image
from maskconver.data.panoptic_png import read_panoptic_png, rgb2id, write_panoptic_png
from maskconver.data.synthetic import VAL_STREAM, SyntheticPanoptic, synthetic_categories
from maskconver.data.types import Category, CategorySet, SegmentInfo
from maskconver.data.writer import CocoPanopticWriter, write_coco_panoptic

EXIF_ORIENTATION_TAG = 0x0112
ROTATE_90_CW = 6  # EXIF orientation 6: the viewer rotates the stored pixels 90 degrees clockwise

# hand-made dataset: non-contiguous category ids, a crowd segment, void pixels
HAND_CATEGORIES = [
    {"id": 5, "name": "cat", "isthing": 1, "color": [200, 0, 0]},
    {"id": 17, "name": "dog", "isthing": 1, "color": [0, 200, 0]},
    {"id": 40, "name": "road", "isthing": 0, "color": [0, 0, 200]},
]
HAND_H, HAND_W = 8, 12


def _hand_map() -> np.ndarray:
    """``[8, 12]`` ids: road 300 (rows 4-7), cat 7 (rows 0-1, cols 0-3), crowd dog 9, void."""
    ids = np.zeros((HAND_H, HAND_W), dtype=np.int32)  # rows 2-3 stay void
    ids[4:, :] = 300
    ids[0:2, 0:4] = 7
    ids[0:2, 6:12] = 9
    return ids


HAND_SEGMENTS = [
    {"id": 7, "category_id": 5, "iscrowd": 0},
    {"id": 9, "category_id": 17, "iscrowd": 1},
    {"id": 300, "category_id": 40, "iscrowd": 0},
]


def _write_image(path: Path, kind: str, size: tuple[int, int] = (HAND_H, HAND_W)) -> np.ndarray:
    """Write an image of a given PIL mode; returns the RGB array ``load_image`` must give."""
    h, w = size
    if kind == "rgb":
        rgb = np.full((h, w, 3), (10, 20, 30), dtype=np.uint8)
        Image.fromarray(rgb).save(path)
        return rgb
    if kind == "gray":
        Image.fromarray(np.full((h, w), 100, dtype=np.uint8), mode="L").save(path)
        return np.full((h, w, 3), 100, dtype=np.uint8)
    if kind == "rgba":
        # composite on black: round(200 * 128/255) = 100, round(100 * 128/255) = 50, 50 -> 25
        Image.fromarray(np.full((h, w, 4), (200, 100, 50, 128), dtype=np.uint8)).save(path)
        return np.full((h, w, 3), (100, 50, 25), dtype=np.uint8)
    if kind == "palette":
        im = Image.fromarray(np.full((h, w), 2, dtype=np.uint8), mode="P")
        im.putpalette([0, 0, 0, 9, 9, 9, 250, 120, 5] + [0] * (256 * 3 - 9))
        im.save(path)
        return np.full((h, w, 3), (250, 120, 5), dtype=np.uint8)
    if kind == "gray16":
        # 16 bit 25700 = 100 * 257 -> 25700 * 255 / 65535 = 100 exactly
        Image.fromarray(np.full((h, w), 25700, dtype=np.uint16)).save(path)
        assert Image.open(path).mode.startswith("I")
        return np.full((h, w, 3), 100, dtype=np.uint8)
    if kind == "gray_alpha":
        # LA: 90 at alpha 255 stays 90 after compositing on black
        la = np.stack([np.full((h, w), 90, np.uint8), np.full((h, w), 255, np.uint8)], axis=2)
        Image.fromarray(la, mode="LA").save(path)
        return np.full((h, w, 3), 90, dtype=np.uint8)
    if kind == "int32":
        # mode "I" (32-bit, 16-bit data in practice): 51400 = 200 * 257 -> 200
        Image.fromarray(np.full((h, w), 51400, dtype=np.int32), mode="I").save(path)
        assert Image.open(path).mode == "I"
        return np.full((h, w, 3), 200, dtype=np.uint8)
    raise ValueError(kind)


def _write_hand_dataset(root: Path, kinds: tuple[str, ...] = ("rgb",)) -> Path:
    """Standard layout under ``root`` with one image per kind (ids 101, 102, ...)."""
    (root / "val2017").mkdir(parents=True)
    png_dir = root / "annotations" / "panoptic_val2017"
    images, annotations = [], []
    for k, kind in enumerate(kinds):
        image_id = 101 + k
        name = f"{image_id:012d}"
        _write_image(root / "val2017" / f"{name}.png", kind)
        write_panoptic_png(png_dir / f"{name}.png", _hand_map())
        images.append(
            {"id": image_id, "file_name": f"{name}.png", "height": HAND_H, "width": HAND_W}
        )
        annotations.append(
            {"image_id": image_id, "file_name": f"{name}.png", "segments_info": list(HAND_SEGMENTS)}
        )
    data = {"images": images, "annotations": annotations, "categories": HAND_CATEGORIES}
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    return root


def _edit_json(root: Path, edit: Any) -> None:
    path = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------- image_io


@pytest.mark.parametrize(
    "kind", ["rgb", "gray", "rgba", "palette", "gray16", "gray_alpha", "int32"]
)
def test_load_image_modes(tmp_path: Path, kind: str) -> None:
    suffix = ".tiff" if kind == "int32" else ".png"  # PNG stores mode I as 16 bit
    expected = _write_image(tmp_path / f"{kind}{suffix}", kind)
    got = load_image(tmp_path / f"{kind}{suffix}")
    assert got.dtype == np.uint8 and got.shape == (HAND_H, HAND_W, 3)
    np.testing.assert_array_equal(got, expected)


def test_load_image_cmyk(tmp_path: Path) -> None:
    # CMYK (0, 0, 0, 0) is white; JPEG/TIFF keep the mode, PIL converts to RGB (255, 255, 255)
    Image.new("CMYK", (5, 4), (0, 0, 0, 0)).save(tmp_path / "c.tiff")
    got = load_image(tmp_path / "c.tiff")
    assert got.shape == (4, 5, 3)
    assert (got == 255).all()


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    # stored 8 rows x 12 cols with orientation 6: displayed (and loaded) as 12 rows x 8 cols;
    # the stored top-left corner (red) ends up at the top-right after a 90 degree CW rotation
    stored = np.zeros((8, 12, 3), dtype=np.uint8)
    stored[:4, :4] = (255, 0, 0)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = ROTATE_90_CW
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    got = load_image(tmp_path / "r.jpg")
    assert got.shape == (12, 8, 3)
    assert got[1, 6, 0] > 200 and got[1, 6, 1] < 60  # top-right is red
    assert got[10, 1].max() < 60  # bottom-left is black


def test_load_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg")
    # a truncated PNG: valid header, data cut off
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png"):
        load_image(tmp_path / "t.png")


# ---------------------------------------------------------------- reader


def test_reader_hand_made_dataset(tmp_path: Path) -> None:
    kinds = ("rgb", "gray", "rgba", "palette", "gray16")
    ds = CocoPanopticDataset(_write_hand_dataset(tmp_path, kinds), "val2017")
    assert len(ds) == len(kinds) and ds.image_ids == [101, 102, 103, 104, 105]
    # contiguous label space: ids 5, 17, 40 -> indices 0, 1, 2
    assert [ds.categories.index(i) for i in (5, 17, 40)] == [0, 1, 2]
    for k, kind in enumerate(kinds):
        sample = ds[k]
        expected = _write_image(tmp_path / "x.png", kind)
        np.testing.assert_array_equal(sample.image, expected)
        np.testing.assert_array_equal(sample.panoptic, _hand_map())
        assert sample.image_id == 101 + k and sample.meta == {"orig_size": (HAND_H, HAND_W)}
        # areas from the map: cat 2x4 = 8, dog 2x6 = 12 (crowd), road 4x12 = 48; 16 void pixels
        got = [(s.id, s.category_id, s.iscrowd, s.isthing, s.area) for s in sample.segments]
        assert got == [(7, 5, False, True, 8), (9, 17, True, True, 12), (300, 40, False, False, 48)]
        assert int((sample.panoptic == 0).sum()) == HAND_H * HAND_W - 8 - 12 - 48


def test_reader_raw_ids_and_explicit_paths(tmp_path: Path) -> None:
    root = _write_hand_dataset(tmp_path)
    ds = CocoPanopticDataset(
        image_dir=root / "val2017",
        json_path=root / "annotations" / "panoptic_val2017.json",
        png_dir=root / "annotations" / "panoptic_val2017",
        label_space="raw_ids",
    )
    assert ds.categories.index(40) == 40 and ds.categories.num_classes == 41
    assert len(ds[0].segments) == 3


def test_reader_exif_rotated_image_matches_rotated_png(tmp_path: Path) -> None:
    root = _write_hand_dataset(tmp_path)
    # the JPEG stores HAND_W rows x HAND_H cols; orientation 6 displays it as HAND_H x HAND_W,
    # the size of its PNG, so the reader accepts it only if it applies the EXIF orientation
    stored = np.full((HAND_W, HAND_H, 3), 77, dtype=np.uint8)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = ROTATE_90_CW
    Image.fromarray(stored).save(root / "val2017" / "rot.jpg", exif=exif, quality=95)
    _edit_json(root, lambda d: d["images"][0].update(file_name="rot.jpg"))
    sample = CocoPanopticDataset(root, "val2017")[0]
    assert sample.image.shape == (HAND_H, HAND_W, 3)


def test_reader_synthetic_root(synthetic_coco_root: Path) -> None:
    train = CocoPanopticDataset(synthetic_coco_root, "train2017")
    val = CocoPanopticDataset(synthetic_coco_root, "val2017")
    assert len(train) == 6 and len(val) == 4
    assert [c.id for c in val.categories.categories] == [1, 3, 7, 12, 20, 31, 44]
    source = SyntheticPanoptic(4, seed=0, stream=VAL_STREAM)
    for i in range(len(val)):
        sample, expected = val[i], source[i]
        np.testing.assert_array_equal(sample.panoptic, expected.panoptic)  # PNG is lossless
        # JPEG quality 95 on noisy textures: mean error a few grey levels
        diff = np.abs(sample.image.astype(np.int16) - expected.image.astype(np.int16))
        assert diff.mean() < 8.0
        assert [(s.id, s.category_id, s.area, s.isthing) for s in sample.segments] == [
            (s.id, s.category_id, s.area, s.isthing) for s in expected.segments
        ]
    # train and val come from different streams: no val map equals a train map
    train_maps = [train[i].panoptic for i in range(len(train))]
    for i in range(len(val)):
        assert not any(
            m.shape == val[i].panoptic.shape and (m == val[i].panoptic).all() for m in train_maps
        )


# ---------------------------------------------------------------- bad inputs


@pytest.fixture()
def hand_root(tmp_path: Path) -> Path:
    return _write_hand_dataset(tmp_path, ("rgb", "gray"))


def test_bad_missing_image(hand_root: Path) -> None:
    (hand_root / "val2017" / "000000000102.png").unlink()
    ds = CocoPanopticDataset(hand_root, "val2017")
    ds[0]
    with pytest.raises(DatasetError, match=r"image id 102.*000000000102\.png"):
        ds[1]


def test_bad_corrupt_image(hand_root: Path) -> None:
    (hand_root / "val2017" / "000000000101.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"image id 101.*000000000101\.png"):
        CocoPanopticDataset(hand_root, "val2017")[0]


def test_bad_missing_png(hand_root: Path) -> None:
    (hand_root / "annotations" / "panoptic_val2017" / "000000000101.png").unlink()
    with pytest.raises(DatasetError, match=r"image id 101.*panoptic_val2017/000000000101\.png"):
        CocoPanopticDataset(hand_root, "val2017")[0]


def test_bad_png_id_not_in_segments_info(hand_root: Path) -> None:
    _edit_json(hand_root, lambda d: d["annotations"][1]["segments_info"].pop(0))  # drop id 7
    with pytest.raises(
        DatasetError, match=r"image id 102.*000000000102\.png has ids 7 that are not"
    ):
        CocoPanopticDataset(hand_root, "val2017")[1]


def test_bad_segment_absent_from_png(hand_root: Path) -> None:
    extra = {"id": 55, "category_id": 5, "iscrowd": 0}
    _edit_json(hand_root, lambda d: d["annotations"][0]["segments_info"].append(extra))
    with pytest.raises(DatasetError, match=r"image id 101: segments_info ids 55 .*do not occur"):
        CocoPanopticDataset(hand_root, "val2017")[0]


def test_bad_unknown_category(hand_root: Path) -> None:
    _edit_json(hand_root, lambda d: d["annotations"][1]["segments_info"][2].update(category_id=41))
    with pytest.raises(
        DatasetError, match=r"panoptic_val2017\.json.*image id 102.*unknown category id 41"
    ):
        CocoPanopticDataset(hand_root, "val2017")


def test_bad_malformed_json(hand_root: Path) -> None:
    path = hand_root / "annotations" / "panoptic_val2017.json"
    path.write_text(path.read_text()[:-5])
    with pytest.raises(
        DatasetError, match=r"malformed JSON in .*panoptic_val2017\.json: Expecting"
    ):
        CocoPanopticDataset(hand_root, "val2017")


def test_bad_missing_key(hand_root: Path) -> None:
    _edit_json(hand_root, lambda d: d.pop("annotations"))
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json.*'annotations'"):
        CocoPanopticDataset(hand_root, "val2017")


def test_bad_annotation_for_unknown_image(hand_root: Path) -> None:
    _edit_json(hand_root, lambda d: d["annotations"][1].update(image_id=999))
    with pytest.raises(DatasetError, match=r"image id 999.*not listed in 'images'"):
        CocoPanopticDataset(hand_root, "val2017")


def test_bad_image_size_differs_from_png(hand_root: Path) -> None:
    Image.fromarray(np.zeros((HAND_H + 1, HAND_W, 3), np.uint8)).save(
        hand_root / "val2017" / "000000000102.png"
    )
    with pytest.raises(DatasetError, match=r"image id 102.*\(9, 12\).*\(8, 12\)"):
        CocoPanopticDataset(hand_root, "val2017")[1]


def test_bad_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="image folder not found"):
        CocoPanopticDataset(tmp_path / "nowhere", "val2017")


# ---------------------------------------------------------------- writer


def test_writer_json_layout_and_bbox(tmp_path: Path, make_sample: Any) -> None:
    cats = CategorySet([Category(5, "a", True), Category(40, "b", False)])
    ids = np.zeros((4, 6), dtype=np.int32)
    ids[1:3, 3:6] = 7  # rows 1-2, cols 3-5: bbox [x=3, y=1, w=3, h=2], area 6
    ids[3, :] = 8  # last row: bbox [0, 3, 6, 1], area 6
    ids[0, 0] = -1  # padding is written as void
    segments = [SegmentInfo(7, 5, iscrowd=True), SegmentInfo(8, 40)]
    out_json = tmp_path / "pred.json"
    with CocoPanopticWriter(out_json, tmp_path / "png", cats) as writer:
        writer.add(42, "foo.jpg", ids, segments)
        assert (tmp_path / "png" / "foo.png").is_file() and not out_json.exists()
    data = json.loads(out_json.read_text())
    assert data["images"] == [{"id": 42, "file_name": "foo.jpg", "height": 4, "width": 6}]
    assert data["annotations"] == [
        {
            "image_id": 42,
            "file_name": "foo.png",
            "segments_info": [
                {"id": 7, "category_id": 5, "iscrowd": 1, "area": 6, "bbox": [3, 1, 3, 2]},
                {"id": 8, "category_id": 40, "iscrowd": 0, "area": 6, "bbox": [0, 3, 6, 1]},
            ],
        }
    ]
    assert data["categories"] == cats.to_json()
    assert read_panoptic_png(tmp_path / "png" / "foo.png")[0, 0] == 0


def test_writer_rejects_inconsistent_input(tmp_path: Path) -> None:
    cats = CategorySet([Category(5, "a", True)])
    writer = CocoPanopticWriter(tmp_path / "p.json", tmp_path / "png", cats)
    ids = np.full((2, 2), 3, dtype=np.int32)
    with pytest.raises(ValueError, match="image id 1: map ids"):
        writer.add(1, "a.jpg", ids, [SegmentInfo(3, 5), SegmentInfo(4, 5)])
    with pytest.raises(ValueError, match="unknown category id 6"):
        writer.add(1, "a.jpg", ids, [SegmentInfo(3, 6)])
    writer.add(1, "a.jpg", ids, [SegmentInfo(3, 5)])
    with pytest.raises(ValueError, match="image id 1 added twice"):
        writer.add(1, "b.jpg", ids, [SegmentInfo(3, 5)])


def test_writer_context_manager_skips_json_on_error(tmp_path: Path) -> None:
    cats = CategorySet([Category(5, "a", True)])
    with (
        pytest.raises(RuntimeError),
        CocoPanopticWriter(tmp_path / "p.json", tmp_path / "png", cats),
    ):
        raise RuntimeError("boom")
    assert not (tmp_path / "p.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_writer_reader_round_trip_exact(tmp_path: Path) -> None:
    source = SyntheticPanoptic(3, seed=5, crowd_prob=0.5)
    samples = [source[i] for i in range(3)]
    write_coco_panoptic(samples, tmp_path, "val2017", synthetic_categories(), image_format="png")
    ds = CocoPanopticDataset(tmp_path, "val2017")
    assert ds.image_ids == [0, 1, 2]
    for i, expected in enumerate(samples):
        got = ds[i]
        np.testing.assert_array_equal(got.image, expected.image)
        np.testing.assert_array_equal(got.panoptic, expected.panoptic)
        assert got.segments == expected.segments
        assert got.file_name == f"{i:012d}.png"


def _png_variants(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """PNGs of one random id map in every layout a reader may meet, with the ids they hold."""
    rng = np.random.default_rng(3)
    ids = rng.choice([0, 7, 300, 2**24 - 1, 65_793, 123_456], size=(13, 17)).astype(np.int32)
    ids[4:9, 2:11] = 300  # runs, as in real maps
    rgb = panoptic_png.id2rgb(ids)
    out: dict[str, tuple[Path, np.ndarray]] = {}
    write_panoptic_png(tmp_path / "rgb.png", ids)
    out["rgb"] = (tmp_path / "rgb.png", ids)
    alpha = rng.integers(0, 256, size=ids.shape, dtype=np.uint8)  # alpha is ignored
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    out["rgba"] = (tmp_path / "rgba.png", ids)
    Image.fromarray(rgb).save(tmp_path / "interlaced.png", interlace=1)
    out["interlaced"] = (tmp_path / "interlaced.png", ids)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(
        tmp_path / "palette.png"
    )
    out["palette"] = (tmp_path / "palette.png", None)  # ids: whatever Pillow reads
    gray = (ids % 251).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    out["gray"] = (tmp_path / "gray.png", gray.astype(np.int32) * (1 + 256 + 256**2))
    Image.fromarray((ids % 60_000).astype(np.uint16)).save(tmp_path / "gray16.png")
    out["gray16"] = (tmp_path / "gray16.png", None)
    return out


def test_panoptic_png_fast_decoder_equals_pillow_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyspng = pytest.importorskip("pyspng")
    variants = _png_variants(tmp_path)
    fast_calls: list[int] = []
    real_load = pyspng.load

    def counting_load(data: bytes, *args: Any) -> np.ndarray:
        fast_calls.append(len(data))
        return real_load(data, *args)

    monkeypatch.setattr(panoptic_png.pyspng, "load", counting_load)
    fast = {name: read_panoptic_png(path) for name, (path, _) in variants.items()}
    assert len(fast_calls) == 3  # rgb, rgba, interlaced: 8-bit truecolour only
    monkeypatch.setattr(panoptic_png, "pyspng", None)  # pyspng missing: Pillow for everything
    for name, (path, expected) in variants.items():
        slow = read_panoptic_png(path)
        with Image.open(path) as im:
            reference = rgb2id(np.asarray(im.convert("RGB")).astype(np.int64))
        assert fast[name].dtype == slow.dtype == np.int32, name
        np.testing.assert_array_equal(fast[name], slow, err_msg=name)
        np.testing.assert_array_equal(slow, reference, err_msg=name)
        if expected is not None:
            np.testing.assert_array_equal(slow, expected, err_msg=name)

    def broken_load(data: bytes, *args: Any) -> np.ndarray:
        raise RuntimeError("pyspng: could not decode image")

    monkeypatch.setattr(panoptic_png, "pyspng", pyspng)
    monkeypatch.setattr(pyspng, "load", broken_load)  # pyspng failing: Pillow decodes
    np.testing.assert_array_equal(read_panoptic_png(variants["rgb"][0]), fast["rgb"])


@pytest.mark.parametrize("fast", [True, False])
def test_panoptic_png_errors_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    if not fast:
        monkeypatch.setattr(panoptic_png, "pyspng", None)
    write_panoptic_png(tmp_path / "ok.png", np.full((20, 30), 5, np.int32))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    for name in ("cut.png", "junk.png"):
        with pytest.raises(ValueError, match=name):
            read_panoptic_png(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_panoptic_png(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="panoptic PNG not found"):
        read_panoptic_png(tmp_path)


def test_rgb2id_is_exact_for_every_layout() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(7, 9, 4), dtype=np.uint8)
    wide = rgba.astype(np.int64)
    expected = wide[..., 0] + 256 * wide[..., 1] + 256**2 * wide[..., 2]
    layouts = {
        "rgba": (rgba, expected),
        "rgb view": (rgba[..., :3], expected),
        "rgb packed": (np.ascontiguousarray(rgba[..., :3]), expected),
        "strided": (np.ascontiguousarray(rgba[..., :3])[:, ::2], expected[:, ::2]),
        "int64": (wide, expected),
    }
    for name, (rgb, want) in layouts.items():
        ids = rgb2id(rgb)
        assert ids.dtype == np.int32, name
        np.testing.assert_array_equal(ids, want, err_msg=name)
    assert rgb2id(np.zeros((0, 4, 3), np.uint8)).shape == (0, 4)
    assert rgb2id(np.full((1, 1, 3), 255, np.uint8)).item() == 2**24 - 1


def test_class_to_category_inverts_the_label_space() -> None:
    from maskconver.data.types import Category, CategorySet

    cats = [Category(7, "a", True), Category(3, "b", False), Category(12, "c", True)]
    contiguous = CategorySet(cats)  # class index = position in id order
    assert contiguous.class_to_category(4) == [3, 7, 12, -1]
    assert [contiguous.category_id(i) for i in range(3)] == [3, 7, 12]
    raw = CategorySet(cats, "raw_ids")  # class index = category id
    expected = [-1] * 13
    expected[3], expected[7], expected[12] = 3, 7, 12
    assert raw.class_to_category(13) == expected
