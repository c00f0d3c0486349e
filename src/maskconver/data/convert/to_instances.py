"""COCO panoptic -> COCO instance JSON (for tools that read instance annotations).

Every thing segment becomes one annotation with a compressed RLE ``segmentation`` (pycocotools,
``counts`` as a string), ``area`` (pixels), ``bbox`` (``[x, y, w, h]`` of the mask) and
``iscrowd`` kept; ``stuff=True`` adds the stuff segments too. ``categories`` keep ``isthing``
and ``color``, so ``convert_coco_instances`` reads the file back into the same panoptic split
(segments are disjoint, so no overlap rule applies). Like panopticapi's
``panoptic2detection_coco_format`` (which writes RLE for every segment, or things only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.convert.output import check_output
from maskconver.data.convert.panoptic_source import PanopticSplit
from maskconver.data.convert.report import ConvertReport, StrictStop
from maskconver.data.writer import atomic_write_json

THINGS, STUFF = "things", "stuff"


def segment_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of an ``[H, W]`` bool mask, ``counts`` as a JSON string."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def panoptic_to_instances(
    json_path: str | Path,
    png_dir: str | Path,
    out_json: str | Path,
    *,
    image_dir: str | Path | None = None,
    stuff: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = False,
) -> ConvertReport:
    """Write the COCO instance JSON of a panoptic split.

    Args:
        json_path: panoptic JSON.
        png_dir: its PNG folder.
        out_json: the instance JSON to write (refused when it exists, unless ``overwrite``).
        image_dir: the split's image folder (not read; listed so it is never written over).
        stuff: include stuff segments.
        overwrite: replace an existing ``out_json``.
        strict: stop at the first bad PNG instead of leaving the image out.
        progress: show a progress bar.

    Raises:
        DatasetError: bad panoptic input, an output that would overwrite something, or no
            image converted.
    """
    from pycocotools import mask as mask_utils

    json_path, png_dir, out_json = Path(json_path), Path(png_dir), Path(out_json)
    split = PanopticSplit(json_path, png_dir, image_dir)
    inputs = [json_path, png_dir] + ([Path(image_dir)] if image_dir is not None else [])
    check_output([out_json], inputs, overwrite=overwrite)
    report = ConvertReport(source="panoptic-to-instances", output=str(out_json), strict=strict)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for entry in tqdm(split, desc="to instances", disable=None if progress else True):
        report.images_seen += 1
        try:
            panoptic, segments = split.read(entry)
        except StrictStop:
            raise
        except DatasetError as e:
            report.skip(entry.png_path, str(e))
            continue
        height, width = panoptic.shape
        images.append({**entry.image, "height": int(height), "width": int(width)})
        for seg in segments:
            if not (seg.isthing or stuff):
                continue
            rle = segment_rle(panoptic == seg.id)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": entry.image["id"],
                    "category_id": seg.category_id,
                    "segmentation": rle,
                    "area": seg.area,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": int(seg.iscrowd),
                }
            )
            category = split.categories.by_id[seg.category_id]
            report.count_segment(THINGS if seg.isthing else STUFF, category.name, crowd=seg.iscrowd)
        report.images_converted += 1
    if report.images_converted == 0:
        first = report.skipped[0] if report.skipped else "none"
        raise DatasetError(f"no image converted from {json_path} (first problem: {first})")
    categories = [
        {"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
        for c in split.categories.categories
        if c.isthing or stuff
    ]
    payload = {
        "info": {"description": f"instances of {os.path.basename(json_path)} (maskconver)"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_json, payload)
    return report
