"""Visualisation: colours (deterministic, hue families), boundaries, overlays, panels, saving."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskconver import visualize as vis
from maskconver.data.image_io import save_image
from maskconver.data.types import Category, CategorySet, SegmentInfo

RED_THING, PLAIN_THING, SKY = 4, 9, 17
CATS = CategorySet(
    [
        Category(RED_THING, "apple", True, (200, 30, 30)),
        Category(PLAIN_THING, "pear", True),  # no colour: a generated hue
        Category(SKY, "sky", False, (90, 150, 230)),
    ]
)


def _scene() -> tuple[np.ndarray, np.ndarray, list[SegmentInfo]]:
    """48x64 grey image; sky on top, three apples and one pear below, a void strip."""
    pan = np.zeros((48, 64), np.int32)
    pan[:16] = 1
    pan[20:40, 0:14], pan[20:40, 16:30], pan[20:40, 32:46] = 11, 12, 13
    pan[20:40, 48:62] = 21
    segs = [
        SegmentInfo(1, SKY),
        SegmentInfo(11, RED_THING),
        SegmentInfo(12, RED_THING),
        SegmentInfo(13, RED_THING, iscrowd=True),
        SegmentInfo(21, PLAIN_THING),
    ]
    image = np.full((48, 64, 3), 100, np.uint8)
    return image, pan, segs


def _hue(rgb: tuple[int, int, int] | np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))[0]


def test_colorize_shapes_void_and_determinism() -> None:
    _, pan, segs = _scene()
    pan[0, 0] = -1  # padding
    pan[0, 1] = 999  # an id without a segment
    out = vis.colorize_panoptic(pan, segs, CATS)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    for y, x in [(45, 5), (0, 0), (0, 1)]:  # void, padding, unknown id -> black
        assert tuple(out[y, x]) == vis.VOID_COLOR
    # same colours whatever the order of the segment list
    np.testing.assert_array_equal(out, vis.colorize_panoptic(pan, segs[::-1], CATS))
    # the first instance of a coloured category wears exactly the category colour
    assert tuple(out[25, 5]) == (200, 30, 30) and tuple(out[5, 5]) == (90, 150, 230)


def test_instances_share_a_hue_family_but_differ() -> None:
    _, pan, segs = _scene()
    out = vis.colorize_panoptic(pan, segs, CATS)
    apples = [tuple(out[25, x]) for x in (5, 20, 36)]
    assert len(set(apples)) == 3
    # shades rotate the hue by HUE_STEP per instance: k=2 is at most 2 steps from the base
    for k, color in enumerate(apples):
        assert abs(_hue(color) - _hue((200, 30, 30))) <= k * vis.HUE_STEP + 0.01
    pear = tuple(out[25, 55])
    assert pear != vis.VOID_COLOR and pear not in apples
    # the generated pear colour is the golden-ratio hue of its index (1) in the category set
    assert _hue(pear) == pytest.approx(vis.GOLDEN_RATIO_CONJUGATE % 1.0, abs=0.01)


def test_boundaries_are_one_pixel_where_ids_change() -> None:
    pan = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]])
    # right-neighbour change at column 1 (rows 0-1), lower-neighbour change on row 1
    expected = np.array([[0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(vis.boundaries(pan), expected)


def test_overlay_blends_draws_boundaries_and_keeps_void() -> None:
    image, pan, segs = _scene()
    out = vis.overlay(image, pan, segs, CATS, alpha=0.5, draw_labels=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    # inside the sky: 0.5 * 100 + 0.5 * (90, 150, 230) = (95, 125, 165)
    assert tuple(out[5, 30]) == (95, 125, 165)
    assert tuple(out[45, 30]) == (100, 100, 100)  # void: the image itself
    edge = vis.boundaries(pan)
    assert (out[edge] == vis.BOUNDARY_COLOR).all()
    assert not (out[~edge] == vis.BOUNDARY_COLOR).all(axis=-1).any()
    no_lines = vis.overlay(image, pan, segs, CATS, draw_boundaries=False, draw_labels=False)
    np.testing.assert_array_equal(no_lines[~edge], out[~edge])
    with pytest.raises(ValueError, match="differ in size"):
        vis.overlay(image[:10], pan, segs, CATS)
    with pytest.raises(ValueError, match="alpha"):
        vis.overlay(image, pan, segs, CATS, alpha=1.5)


def test_labels_are_drawn_inside_large_segments() -> None:
    image, pan, segs = _scene()
    plain = vis.overlay(image, pan, segs, CATS, draw_labels=False)
    labelled = vis.overlay(image, pan, segs, CATS, draw_labels=True)
    changed = (plain != labelled).any(axis=-1)
    assert changed[:16].any()  # "sky" text in the sky band
    # every segment of >= MIN_LABEL_AREA pixels got a label near it
    for y0, y1, x0, x1 in [(0, 16, 0, 64), (18, 42, 0, 16), (18, 42, 46, 64)]:
        assert changed[y0:y1, x0:x1].any()
    assert labelled.dtype == np.uint8


def test_side_by_side_layout(tmp_path: Path) -> None:
    image, pan, segs = _scene()
    pred = pan.copy()
    pred[pred == 12] = 0
    pred_segs = [s for s in segs if s.id != 12]
    out = vis.side_by_side(image, pan, segs, pred, pred_segs, CATS)
    h, w = pan.shape
    assert out.shape == (vis.TITLE_HEIGHT + h, 3 * w + 2 * vis.PANEL_GAP, 3)
    np.testing.assert_array_equal(out[vis.TITLE_HEIGHT :, :w], image)
    x = w + vis.PANEL_GAP
    np.testing.assert_array_equal(
        out[vis.TITLE_HEIGHT :, x : x + w], vis.overlay(image, pan, segs, CATS)
    )
    x = 2 * (w + vis.PANEL_GAP)
    np.testing.assert_array_equal(
        out[vis.TITLE_HEIGHT :, x : x + w], vis.overlay(image, pred, pred_segs, CATS)
    )
    assert (out[: vis.TITLE_HEIGHT] != vis.BACKGROUND).any()  # titles were written
    path = tmp_path / "sub" / "panel.png"
    save_image(path, out)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), out)
    with pytest.raises(ValueError, match="uint8"):
        save_image(path, out.astype(np.float32))
