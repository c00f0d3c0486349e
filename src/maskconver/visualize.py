"""Panoptic visualisation: colour maps, overlays with boundaries and labels, GT | prediction panels.

Colours are deterministic: each category has a base colour (its ``Category.color``, or a hue from
the golden-ratio sequence when that is black), and the k-th instance of a category (segments in
ascending id order) is a shade of it (alternately lighter and darker, with a small hue step), so
one category keeps one hue family while its instances stay apart. Void and padding are black.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from maskconver.data.types import PADDING, VOID, CategorySet, PanopticSample, SegmentInfo

if TYPE_CHECKING:
    from maskconver.postprocess.segments import PanopticPrediction

GOLDEN_RATIO_CONJUGATE = 0.618033988749895  # hue step between generated category colours
GENERATED_SATURATION, GENERATED_VALUE = 0.65, 0.9
SHADE_STEP = 0.22  # lightness change per instance step (fraction of the way to white / black)
MAX_SHADE = 0.66
HUE_STEP = 0.025  # small hue rotation per instance step, so far-apart shades still differ
BOUNDARY_COLOR = (255, 255, 255)
VOID_COLOR = (0, 0, 0)
LABEL_TEXT_COLOR = (255, 255, 255)
LABEL_DARKEN = 0.45  # label box = segment colour darkened by this factor
LABEL_PADDING = 2  # pixels around the label text
MIN_LABEL_AREA = 48  # segments smaller than this (pixels) get no label
LABEL_FONT_SIZE = 11
TITLE_FONT_SIZE = 14
TITLE_HEIGHT = 24  # pixels of the title strip above each panel
PANEL_GAP = 6  # pixels between panels
BACKGROUND = (24, 24, 24)
TITLE_COLOR = (235, 235, 235)
BLOCK_PIXELS = 1 << 20  # pixels per block of full-image colour work (bounds temporaries)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size`` (scalable where FreeType is available)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType: fixed bitmap font
        return ImageFont.load_default()


def category_color(categories: CategorySet, category_id: int) -> tuple[int, int, int]:
    """Base RGB colour of a category: its own ``color``, else a golden-ratio hue."""
    category = categories.by_id.get(category_id)
    if category is not None and any(category.color):
        return category.color
    index = categories.categories.index(category) if category is not None else category_id
    hue = (index * GOLDEN_RATIO_CONJUGATE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, GENERATED_SATURATION, GENERATED_VALUE)
    return round(r * 255), round(g * 255), round(b * 255)


def instance_color(base: tuple[int, int, int], k: int) -> tuple[int, int, int]:
    """Shade ``k`` (0 = the base colour) of a category colour.

    Odd k go toward black, even k toward white, by ``SHADE_STEP`` per pair; every step also
    rotates the hue a little, so shades beyond ``MAX_SHADE`` still differ.
    """
    if k == 0:
        return base
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in base))
    r, g, b = colorsys.hsv_to_rgb((h + HUE_STEP * k) % 1.0, s, v)
    amount = min(SHADE_STEP * ((k + 1) // 2), MAX_SHADE)
    target = 0.0 if k % 2 else 1.0
    rgb = [c + (target - c) * amount for c in (r, g, b)]
    return round(rgb[0] * 255), round(rgb[1] * 255), round(rgb[2] * 255)


def segment_colors(
    segments: list[SegmentInfo], categories: CategorySet
) -> dict[int, tuple[int, int, int]]:
    """Segment id -> RGB: category hue family, one shade per instance (ascending id order)."""
    colors: dict[int, tuple[int, int, int]] = {}
    seen: dict[int, int] = {}
    for seg in sorted(segments, key=lambda s: s.id):
        k = seen.get(seg.category_id, 0)
        seen[seg.category_id] = k + 1
        colors[seg.id] = instance_color(category_color(categories, seg.category_id), k)
    return colors


def _check_map(panoptic: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(panoptic)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: expected an [H, W] integer id map, got {arr.dtype} {arr.shape}")
    return arr


def _check_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image: expected [H, W, 3] uint8, got {arr.dtype} {arr.shape}")
    if arr.shape[:2] != shape:
        raise ValueError(f"image {arr.shape[:2]} and panoptic map {shape} differ in size")
    return arr


def colorize_panoptic(
    panoptic: np.ndarray, segments: list[SegmentInfo], categories: CategorySet
) -> np.ndarray:
    """Colour a panoptic map.

    Args:
        panoptic: ``[H, W]`` segment ids (0 void, -1 padding).
        segments: the map's segments.
        categories: gives each category its colour.

    Returns:
        ``[H, W, 3]`` uint8 RGB; void, padding and ids without a segment are black.
    """
    panoptic = _check_map(panoptic, "panoptic")
    colors = segment_colors(segments, categories)
    ids = np.array(sorted(colors), dtype=np.int64)
    table = np.array([VOID_COLOR, *(colors[i] for i in ids)], dtype=np.uint8)  # row 0: void
    out = np.empty((*panoptic.shape, 3), np.uint8)
    for rows in _row_blocks(panoptic.shape):
        block = panoptic[rows].astype(np.int64)
        if len(ids):
            pos = np.minimum(np.searchsorted(ids, block), len(ids) - 1)
            out[rows] = table[np.where(ids[pos] == block, pos + 1, 0)]
        else:
            out[rows] = table[0]
    return out


def _row_blocks(shape: tuple[int, ...]) -> list[slice]:
    """Row slices of about ``BLOCK_PIXELS`` pixels, so big pictures need no full-size temps."""
    height, width = shape[0], max(shape[1], 1)
    step = max(1, BLOCK_PIXELS // width)
    return [slice(r, min(r + step, height)) for r in range(0, height, step)]


def boundaries(panoptic: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: pixels whose right or lower neighbour has another id (1 px lines)."""
    panoptic = _check_map(panoptic, "panoptic")
    edge = np.zeros(panoptic.shape, dtype=bool)
    edge[:, :-1] |= panoptic[:, :-1] != panoptic[:, 1:]
    edge[:-1, :] |= panoptic[:-1, :] != panoptic[1:, :]
    return edge


def _label_point(mask: np.ndarray) -> tuple[int, int, tuple[int, int]]:
    """Where a segment's label goes: a pixel deep inside it, and its top and bottom rows.

    Returns ``(y, x)`` of the mask pixel farthest from the mask border (inside even for
    non-convex shapes) and ``(top, bottom)``.
    """
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1)  # a border of background, so edges count as border
    distance = ndimage.distance_transform_edt(crop)
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(y0 + y - 1), int(x0 + x - 1), (int(y0), int(y1))


def _draw_labels(
    canvas: Image.Image,
    panoptic: np.ndarray,
    segments: list[SegmentInfo],
    categories: CategorySet,
    colors: dict[int, tuple[int, int, int]],
) -> None:
    draw = ImageDraw.Draw(canvas)
    font = _font(LABEL_FONT_SIZE)
    width, height = canvas.size
    for seg in sorted(segments, key=lambda s: s.id):
        mask = panoptic == seg.id
        area = int(mask.sum())
        if area < MIN_LABEL_AREA:
            continue
        category = categories.by_id.get(seg.category_id)
        text = category.name if category is not None else str(seg.category_id)
        if seg.iscrowd:
            text += " (crowd)"
        y, x, (top_row, bottom_row) = _label_point(mask)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2 * LABEL_PADDING, bottom - top + 2 * LABEL_PADDING
        by = y - h // 2
        if w * h > area:  # the label would hide a small segment: put it just above (or below)
            by = top_row - h - 1 if top_row - h - 1 >= 0 else bottom_row + 1
        bx = int(np.clip(x - w // 2, 0, max(width - w, 0)))
        by = int(np.clip(by, 0, max(height - h, 0)))
        box_color = tuple(round(c * (1 - LABEL_DARKEN)) for c in colors[seg.id])
        draw.rectangle((bx, by, bx + w - 1, by + h - 1), fill=box_color)
        draw.text(
            (bx + LABEL_PADDING - left, by + LABEL_PADDING - top),
            text,
            fill=LABEL_TEXT_COLOR,
            font=font,
        )


def overlay(
    image: np.ndarray,
    panoptic: np.ndarray,
    segments: list[SegmentInfo],
    categories: CategorySet,
    *,
    alpha: float = 0.5,
    draw_boundaries: bool = True,
    draw_labels: bool = True,
) -> np.ndarray:
    """Blend segment colours over an image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        panoptic: ``[H, W]`` segment ids (0 void, -1 padding: left unblended).
        segments: the map's segments.
        categories: names and colours.
        alpha: weight of the segment colour (0 = image only, 1 = colours only).
        draw_boundaries: 1-pixel white lines where the id changes.
        draw_labels: each segment's category name at its innermost pixel (PIL default font).

    Returns:
        ``[H, W, 3]`` uint8 RGB.
    """
    panoptic = _check_map(panoptic, "panoptic")
    image = _check_image(image, panoptic.shape)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    color = colorize_panoptic(panoptic, segments, categories)
    out = image.copy()
    for rows in _row_blocks(panoptic.shape):  # float temporaries of one block at a time
        labelled = (panoptic[rows] != VOID) & (panoptic[rows] != PADDING)
        blended = image[rows].astype(np.float32) * (1 - alpha) + color[rows] * np.float32(alpha)
        out[rows][labelled] = blended[labelled].round().astype(np.uint8)
    if draw_boundaries:
        out[boundaries(panoptic)] = BOUNDARY_COLOR
    if draw_labels and segments:
        canvas = Image.fromarray(out)
        _draw_labels(canvas, panoptic, segments, categories, segment_colors(segments, categories))
        out = np.asarray(canvas).copy()
    return out


def side_by_side(
    image: np.ndarray,
    gt_panoptic: np.ndarray,
    gt_segments: list[SegmentInfo],
    pred_panoptic: np.ndarray,
    pred_segments: list[SegmentInfo],
    categories: CategorySet,
    *,
    titles: tuple[str, str] = ("ground truth", "prediction"),
) -> np.ndarray:
    """Three titled panels: image | ground-truth overlay | prediction overlay.

    Returns:
        ``[TITLE_HEIGHT + H, 3 W + 2 PANEL_GAP, 3]`` uint8 RGB.
    """
    panels = [
        _check_image(image, np.shape(gt_panoptic)),
        overlay(image, gt_panoptic, gt_segments, categories),
        overlay(image, pred_panoptic, pred_segments, categories),
    ]
    height, width = panels[0].shape[:2]
    canvas = Image.new("RGB", (3 * width + 2 * PANEL_GAP, TITLE_HEIGHT + height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(TITLE_FONT_SIZE)
    for k, (panel, title) in enumerate(zip(panels, ("image", *titles))):
        x = k * (width + PANEL_GAP)
        canvas.paste(Image.fromarray(panel), (x, TITLE_HEIGHT))
        left, top, right, bottom = draw.textbbox((0, 0), title, font=font)
        tx = x + (width - (right - left)) // 2 - left
        ty = (TITLE_HEIGHT - (bottom - top)) // 2 - top
        draw.text((tx, ty), title, fill=TITLE_COLOR, font=font)
    return np.asarray(canvas).copy()


def save_prediction_pictures(
    directory: str | Path,
    name: str,
    sample: PanopticSample,
    prediction: PanopticPrediction,
    categories: CategorySet,
    *,
    scale: int = 1,
) -> None:
    """Write ``<name>_overlay.jpg`` and ``<name>_gt_vs_pred.jpg`` for one image.

    Args:
        directory: output folder (created).
        name: file-name stem.
        sample: the image with its ground truth (``image [H, W, 3]``, ``panoptic``, segments).
        prediction: the predicted ``panoptic [H, W]`` and segments.
        categories: names and colours.
        scale: enlarge by pixel repetition first (small images keep readable labels).
    """
    from maskconver.data.image_io import save_image

    def enlarge(array: np.ndarray) -> np.ndarray:
        return array.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else array

    image, gt, predicted = (
        enlarge(a) for a in (sample.image, sample.panoptic, prediction.panoptic)
    )
    directory = Path(directory)
    save_image(
        directory / f"{name}_overlay.jpg",
        overlay(image, predicted, prediction.segments, categories),
    )
    save_image(
        directory / f"{name}_gt_vs_pred.jpg",
        side_by_side(image, gt, sample.segments, predicted, prediction.segments, categories),
    )
