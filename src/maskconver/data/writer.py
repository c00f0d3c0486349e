"""COCO panoptic writer: PNGs as they come, the JSON atomically at the end.

Used for ground truth (``write_coco_panoptic``, the synthetic dataset) and for predictions
(evaluation / ``predict`` output), so that ``CocoPanopticDataset`` and the official tools read both.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from maskconver.data.image_io import save_image
from maskconver.data.panoptic_png import write_panoptic_png
from maskconver.data.types import PADDING, VOID, CategorySet, PanopticSample, SegmentInfo

IMAGE_FORMATS = ("jpg", "png")
DEFAULT_JPEG_QUALITY = 95


def segment_bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, w, h]`` of a ``[H, W]`` bool mask (inclusive extent, so 1 px -> w = h = 1)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def atomic_write_json(path: Path, payload: object) -> None:
    """Write JSON to ``path`` through a temporary sibling and ``os.replace`` (normal mode)."""
    from maskconver.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f)


def panoptic_entries(
    image_id: int | str,
    file_name: str,
    panoptic: np.ndarray,
    segments: Iterable[SegmentInfo],
    *,
    png_name: str,
    category_ids: Container[int],
    scores: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``images`` and ``annotations`` entries of one ``[H, W]`` id map (COCO panoptic).

    Areas and boxes are counted from the map; ``scores`` adds each segment's ``score``.

    Raises:
        ValueError: a segment id absent from the map, a map id without a segment, or a
            category id not in ``category_ids``.
    """
    segments = list(segments)
    ids, counts = np.unique(panoptic, return_counts=True)
    area = {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i not in (VOID, PADDING)}
    listed = {s.id for s in segments}
    if set(area) - listed or listed - set(area):
        raise ValueError(
            f"image id {image_id}: map ids {sorted(area)} and segment ids {sorted(listed)} "
            "differ (every segment must occur in the map and vice versa)"
        )
    infos = []
    for seg in segments:
        if seg.category_id not in category_ids:
            raise ValueError(f"image id {image_id}: unknown category id {seg.category_id}")
        infos.append(
            {
                "id": int(seg.id),
                "category_id": int(seg.category_id),
                "iscrowd": int(seg.iscrowd),
                "area": area[seg.id],
                "bbox": segment_bbox(panoptic == seg.id),
            }
        )
        if scores:
            infos[-1]["score"] = float(seg.score)
    height, width = panoptic.shape
    image = {"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}
    return image, {"image_id": image_id, "file_name": png_name, "segments_info": infos}


class CocoPanopticWriter:
    """Collects panoptic maps and writes them in the COCO panoptic format.

    ``add`` writes ``<png_dir>/<stem of file_name>.png`` immediately; ``close`` writes the JSON
    (``images``, ``annotations`` with ``segments_info`` [id, category_id, iscrowd, area, bbox],
    ``categories``). As a context manager the JSON is written on a clean exit only.
    """

    def __init__(
        self,
        out_json: str | Path,
        png_dir: str | Path,
        categories: CategorySet,
        *,
        scores: bool = False,
    ) -> None:
        """Open a writer (nothing is written before ``add``).

        Args:
            out_json: the JSON file to write on ``close``.
            png_dir: folder for the PNGs (created).
            categories: written as the ``categories`` list.
            scores: write each segment's ``score`` (predictions; ground truth has none).
        """
        self.scores = scores
        self.out_json = Path(out_json)
        self.png_dir = Path(png_dir)
        self.categories = categories
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._image_ids: set[int | str] = set()
        self._png_names: set[str] = set()
        self._closed = False
        self.png_dir.mkdir(parents=True, exist_ok=True)

    def add(
        self,
        image_id: int | str,
        file_name: str,
        panoptic: np.ndarray,
        segments: list[SegmentInfo],
        *,
        png_name: str | None = None,
    ) -> None:
        """Write one ``[H, W]`` id map and record its annotation.

        Padding (-1) is written as void. Areas and boxes are counted from the map; a segment's
        ``score`` (predictions) is written too. ``png_name`` (default: ``file_name``'s stem
        + ``.png``) names the PNG, while ``file_name`` stays the image's own name.

        Raises:
            ValueError: repeated image id / PNG name, a segment id absent from the map, a map id
                without a segment, or a category id not in ``categories``.
        """
        if self._closed:
            raise ValueError(f"writer for {self.out_json} is closed")
        if panoptic.ndim != 2:
            raise ValueError(f"image id {image_id}: panoptic must be [H, W], got {panoptic.shape}")
        png_name = png_name or Path(file_name).stem + ".png"
        if image_id in self._image_ids:
            raise ValueError(f"image id {image_id} added twice to {self.out_json}")
        if png_name in self._png_names:
            raise ValueError(f"image id {image_id}: PNG name {png_name} already used")
        image, annotation = panoptic_entries(
            image_id,
            file_name,
            panoptic,
            segments,
            png_name=png_name,
            category_ids=self.categories.by_id,
            scores=self.scores,
        )
        write_panoptic_png(self.png_dir / png_name, panoptic)
        self._image_ids.add(image_id)
        self._png_names.add(png_name)
        self._images.append(image)
        self._annotations.append(annotation)

    def close(self) -> None:
        """Write the JSON atomically (idempotent)."""
        if self._closed:
            return
        payload = {
            "images": self._images,
            "annotations": self._annotations,
            "categories": self.categories.to_json(),
        }
        atomic_write_json(self.out_json, payload)
        self._closed = True

    def __enter__(self) -> CocoPanopticWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()


def write_coco_panoptic(
    samples: Iterable[PanopticSample],
    root: str | Path,
    split: str,
    categories: CategorySet,
    *,
    image_format: str = "jpg",
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> Path:
    """Write images and ground truth in the standard layout read by ``CocoPanopticDataset``.

    Image names are the stem of ``sample.file_name`` (or the zero-padded image id) plus
    ``.<image_format>``. Use ``image_format="png"`` for lossless images.

    Returns:
        The path of the written JSON.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    root = Path(root)
    image_dir = root / split
    out_json = root / "annotations" / f"panoptic_{split}.json"
    image_dir.mkdir(parents=True, exist_ok=True)
    with CocoPanopticWriter(out_json, root / "annotations" / f"panoptic_{split}", categories) as w:
        for sample in samples:
            stem = Path(sample.file_name).stem if sample.file_name else _default_stem(sample)
            file_name = f"{stem}.{image_format}"
            save_image(image_dir / file_name, sample.image, jpeg_quality=jpeg_quality)
            w.add(sample.image_id, file_name, sample.panoptic, sample.segments)
    return out_json


def _default_stem(sample: PanopticSample) -> str:
    """COCO-style ``000000000042`` for int ids, the id itself otherwise."""
    if isinstance(sample.image_id, int):
        return f"{sample.image_id:012d}"
    return str(sample.image_id)
