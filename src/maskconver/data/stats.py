"""Statistics of a COCO panoptic split, counted from its JSON and PNGs (images are not read).

Per category: segments, instances (non-crowd segments of a thing category), crowd segments,
images that contain it and the area distribution (pixels, min / median / max). Per split: image
sizes, segments, crowd count, void fraction (pixels with id 0 over all pixels) and warnings for
categories with no segment. Areas come from the PNGs, never from the JSON's ``area``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.types import VOID

MOST_COMMON_SIZES = 5
TRAINING_SPLIT_WORD = "train"


def _distribution(values: list[int]) -> dict[str, float] | None:
    """``{min, median, max}`` of ``values`` (None when empty)."""
    if not values:
        return None
    return {
        "min": float(min(values)),
        "median": float(np.median(values)),
        "max": float(max(values)),
    }


def split_stats(
    json_path: str | Path,
    png_dir: str | Path,
    *,
    image_dir: str | Path | None = None,
    split: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Count the statistics of one split (module docstring); a bad PNG is listed, not fatal.

    Returns:
        A JSON-serialisable dict (``split``, ``images``, ``images_read``, ``problems``,
        ``segments``, ``instances``, ``stuff_segments``, ``crowd``, ``pixels``,
        ``void_fraction``, ``image_height`` / ``image_width`` distributions, ``image_sizes``
        (most common ``[H, W, count]``), ``categories`` (one dict per category) and
        ``warnings``).

    Raises:
        DatasetError: the JSON is missing or malformed.
    """
    from maskconver.data.convert.panoptic_source import PanopticSplit

    source = PanopticSplit(json_path, png_dir, image_dir)
    split = split or Path(json_path).stem
    areas: dict[int, list[int]] = defaultdict(list)
    crowd: Counter[int] = Counter()
    images_with: Counter[int] = Counter()
    heights: list[int] = []
    widths: list[int] = []
    sizes: Counter[tuple[int, int]] = Counter()
    problems: list[str] = []
    pixels = void = 0
    for entry in tqdm(source, desc=f"stats {split}", disable=None if progress else True):
        try:
            panoptic, segments = source.read(entry)
        except DatasetError as e:
            problems.append(str(e))
            continue
        height, width = panoptic.shape
        heights.append(height)
        widths.append(width)
        sizes[(height, width)] += 1
        pixels += panoptic.size
        void += int(np.count_nonzero(panoptic == VOID))
        for seg in segments:
            areas[seg.category_id].append(seg.area)
            crowd[seg.category_id] += int(seg.iscrowd)
        images_with.update({seg.category_id for seg in segments})
    categories: list[dict[str, Any]] = []
    warnings: list[str] = []
    for cat in source.categories.categories:
        count = len(areas[cat.id])
        categories.append(
            {
                "id": cat.id,
                "name": cat.name,
                "isthing": cat.isthing,
                "segments": count,
                "instances": count - crowd[cat.id] if cat.isthing else 0,
                "crowd": crowd[cat.id],
                "images": images_with[cat.id],
                "area": _distribution(areas[cat.id]),
            }
        )
        if count == 0:
            training = TRAINING_SPLIT_WORD in split
            warnings.append(
                f"category {cat.name!r} (id {cat.id}) has no segment in {split}"
                + (": the model never sees it in training" if training else "")
            )
    total = sum(c["segments"] for c in categories)
    return {
        "split": split,
        "json": str(json_path),
        "images": len(source),
        "images_read": len(heights),
        "problems": problems,
        "segments": total,
        "instances": sum(c["instances"] for c in categories),
        "stuff_segments": sum(c["segments"] for c in categories if not c["isthing"]),
        "crowd": sum(crowd.values()),
        "pixels": pixels,
        "void_fraction": void / pixels if pixels else 0.0,
        "image_height": _distribution(heights),
        "image_width": _distribution(widths),
        "image_sizes": [[h, w, n] for (h, w), n in sizes.most_common(MOST_COMMON_SIZES)],
        "categories": categories,
        "warnings": warnings,
    }


def _range(dist: dict[str, float] | None) -> str:
    if dist is None:
        return "-"
    return f"{dist['min']:g} / {dist['median']:g} / {dist['max']:g}"


def format_stats(stats: dict[str, Any]) -> str:
    """The printed form of ``split_stats``'s result."""
    lines = [
        f"{stats['split']}: {stats['images']} images ({stats['images_read']} read), "
        f"{stats['segments']} segments ({stats['instances']} thing instances, "
        f"{stats['stuff_segments']} stuff, {stats['crowd']} crowd), "
        f"void {100 * stats['void_fraction']:.1f}% of {stats['pixels']} px",
        f"image height min / median / max: {_range(stats['image_height'])}; width: "
        f"{_range(stats['image_width'])}; most common (H x W): "
        + ", ".join(f"{h}x{w} ({n})" for h, w, n in stats["image_sizes"]),
    ]
    width = max([len(c["name"]) for c in stats["categories"]] + [len("category")])
    lines.append(
        f"{'category':<{width}} {'id':>5} {'kind':<5} {'segments':>8} {'instances':>9} "
        f"{'crowd':>5} {'images':>6}  area min / median / max (px)"
    )
    for c in stats["categories"]:
        lines.append(
            f"{c['name']:<{width}} {c['id']:>5} {'thing' if c['isthing'] else 'stuff':<5} "
            f"{c['segments']:>8} {c['instances']:>9} {c['crowd']:>5} {c['images']:>6}  "
            f"{_range(c['area'])}"
        )
    lines.extend(f"problem: {p}" for p in stats["problems"])
    lines.extend(f"warning: {w}" for w in stats["warnings"])
    return "\n".join(lines)
