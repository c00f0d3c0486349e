"""``PanopticResult``: what ``Predictor`` returns, a ``PanopticPrediction`` with its image.

Beside ``panoptic`` (``[H, W]`` int32 ids, 0 void) and ``segments`` (one ``SegmentInfo`` per id)
it offers per-segment boolean ``masks`` (computed when first read), ``boxes``, ``areas``,
COCO ``rle()``, ``to_coco()`` (a COCO panoptic annotation and COCO instance results),
``plot()`` (the overlay as an ``[H, W, 3]`` uint8 array) and ``save(folder)`` (the panoptic
PNG in COCO id encoding, a JSON and the overlay PNG; existing files are refused unless
``overwrite=True``).

Example::

    result = predictor("photo.jpg")
    for segment, box, mask in zip(result.segments, result.boxes, result.masks):
        print(segment.category_id, segment.score, box, mask.sum())
    result.save("out/")  # out/photo.png, out/photo.json, out/photo_overlay.png
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from maskconver.data.types import CategorySet, SegmentInfo
from maskconver.postprocess.segments import PanopticPrediction

ROW_BLOCK = 512  # rows of the id map scanned at a time for the boxes (bounded index memory)


class SegmentMasks(Sequence[np.ndarray]):
    """The ``[H, W]`` bool mask of each segment, in ``segments`` order, computed when read."""

    def __init__(self, panoptic: np.ndarray, segments: Sequence[SegmentInfo]) -> None:
        self._panoptic = panoptic
        self._ids = [s.id for s in segments]

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self._panoptic == i for i in self._ids[index]]
        return self._panoptic == self._ids[index]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self._panoptic == i for i in self._ids)


@dataclass
class PanopticResult(PanopticPrediction):
    """A panoptic prediction of one image, with the image and the categories it was made with.

    Attributes:
        panoptic: ``[H, W]`` int32 segment ids, 0 = void.
        segments: one ``SegmentInfo`` per id in ``panoptic`` (category id, score, thing, area).
        image: the ``[H, W, 3]`` uint8 RGB input (for ``plot`` / ``save``), or None.
        categories: the model's categories (names and colours), or None.
        name: the input's file name ('' for arrays, bytes and PIL images).
    """

    image: np.ndarray | None = None
    categories: CategorySet | None = None
    name: str = ""
    _boxes: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def masks(self) -> SegmentMasks:
        """``[H, W]`` bool mask per segment (``segments`` order), each computed when read."""
        return SegmentMasks(self.panoptic, self.segments)

    def mask(self, segment_id: int) -> np.ndarray:
        """The ``[H, W]`` bool mask of the segment with id ``segment_id``."""
        return self.panoptic == segment_id

    @property
    def areas(self) -> np.ndarray:
        """``[N]`` int64 pixel count of each segment, counted on ``panoptic``."""
        top = max((s.id for s in self.segments), default=0)
        counts = np.bincount(self.panoptic.ravel().clip(0), minlength=top + 1)
        return np.asarray([counts[s.id] for s in self.segments], dtype=np.int64)

    @property
    def boxes(self) -> np.ndarray:
        """``[N, 4]`` int64 ``x0, y0, x1, y1`` per segment (pixel edges: ``x1 - x0`` = width).

        A segment with no pixel gets ``0, 0, 0, 0``. Computed once, in row blocks.
        """
        if self._boxes is None:
            self._boxes = _boxes(self.panoptic, [s.id for s in self.segments])
        return self._boxes

    def rle(self) -> list[dict[str, Any]]:
        """COCO RLE (``{"size": [H, W], "counts": str}``) of each segment, ``segments`` order."""
        from pycocotools import mask as mask_utils

        out = []
        for mask in self.masks:
            encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            counts = encoded["counts"]
            size = [int(v) for v in encoded["size"]]
            text = counts.decode("ascii") if isinstance(counts, bytes) else counts
            out.append({"size": size, "counts": text})
        return out

    def to_coco(
        self, image_id: int | str = 0, *, file_name: str | None = None, things_only: bool = True
    ) -> dict[str, Any]:
        """COCO structures of this result.

        Args:
            image_id: the COCO image id.
            file_name: the panoptic PNG's name (default ``<stem of name>.png``, or
                ``<image_id>.png``).
            things_only: instance results hold thing segments only (COCO detection's
                convention); False adds stuff segments.

        Returns:
            ``{"panoptic": annotation, "instances": [...]}``: ``annotation`` is a COCO panoptic
            annotation (``image_id``, ``file_name``, ``segments_info`` with ``id``,
            ``category_id``, ``iscrowd``, ``bbox`` ``[x, y, w, h]``, ``area``, ``score``,
            ``isthing``); ``instances`` are COCO instance results (``image_id``,
            ``category_id``, ``segmentation`` RLE, ``bbox``, ``area``, ``score``).
        """
        stem = Path(self.name).stem if self.name else str(image_id)
        boxes, areas, rles = self.boxes, self.areas, self.rle()
        infos, instances = [], []
        for k, seg in enumerate(self.segments):
            x0, y0, x1, y1 = (int(v) for v in boxes[k])
            bbox = [x0, y0, x1 - x0, y1 - y0]
            infos.append(
                {
                    "id": seg.id,
                    "category_id": seg.category_id,
                    "iscrowd": int(seg.iscrowd),
                    "bbox": bbox,
                    "area": int(areas[k]),
                    "score": float(seg.score),
                    "isthing": bool(seg.isthing),
                }
            )
            if seg.isthing or not things_only:
                instances.append(
                    {
                        "image_id": image_id,
                        "category_id": seg.category_id,
                        "segmentation": rles[k],
                        "bbox": bbox,
                        "area": int(areas[k]),
                        "score": float(seg.score),
                    }
                )
        annotation = {
            "image_id": image_id,
            "file_name": file_name or f"{stem}.png",
            "segments_info": infos,
        }
        return {"panoptic": annotation, "instances": instances}

    def plot(self, *, alpha: float = 0.5, labels: bool = True) -> np.ndarray:
        """The segments drawn over the image (``visualize.overlay``): ``[H, W, 3]`` uint8.

        Raises:
            ValueError: the result has no image or no categories (built by hand without them).
        """
        from maskconver.visualize import overlay

        if self.image is None or self.categories is None:
            raise ValueError("plot() needs the result's image and categories (None here)")
        return overlay(
            self.image,
            self.panoptic,
            self.segments,
            self.categories,
            alpha=alpha,
            draw_labels=labels,
        )

    def save(
        self,
        folder: str | Path,
        *,
        stem: str | None = None,
        image_id: int | str | None = None,
        overwrite: bool = False,
        overlay: bool = True,
    ) -> dict[str, Path]:
        """Write ``<stem>.png`` (COCO panoptic ids), ``<stem>.json`` and ``<stem>_overlay.png``.

        Args:
            folder: where to write (created).
            stem: file stem (default: the input's stem, else ``"prediction"``).
            image_id: the JSON's ``image_id`` (default: ``stem``).
            overwrite: replace existing files; without it an existing file is refused and
                nothing is written.
            overlay: also write the overlay (needs the image and categories).

        Returns:
            The written paths by kind (``"panoptic"``, ``"json"``, ``"overlay"``).

        Raises:
            FileExistsError: a file to write exists and ``overwrite`` is False (names it).
        """
        from maskconver.data.image_io import save_image
        from maskconver.data.panoptic_png import write_panoptic_png

        folder = Path(folder)
        stem = stem or (Path(self.name).stem if self.name else "prediction")
        paths = {"panoptic": folder / f"{stem}.png", "json": folder / f"{stem}.json"}
        if overlay:
            paths["overlay"] = folder / f"{stem}_overlay.png"
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(
                f"refusing to overwrite {', '.join(existing)} (pass overwrite=True to replace)"
            )
        picture = self.plot() if overlay else None  # before writing anything: may raise
        folder.mkdir(parents=True, exist_ok=True)
        write_panoptic_png(paths["panoptic"], self.panoptic)
        coco = self.to_coco(stem if image_id is None else image_id, file_name=f"{stem}.png")
        paths["json"].write_text(json.dumps(coco))
        if picture is not None:
            save_image(paths["overlay"], picture)
        return paths


def as_result(
    prediction: PanopticPrediction,
    *,
    image: np.ndarray | None = None,
    categories: CategorySet | None = None,
    name: str = "",
) -> PanopticResult:
    """A ``PanopticResult`` of a prediction (the map and segment list are shared, not copied)."""
    return PanopticResult(
        panoptic=prediction.panoptic,
        segments=prediction.segments,
        image=image,
        categories=categories,
        name=name,
    )


def _boxes(panoptic: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """``[N, 4]`` ``x0, y0, x1, y1`` of each id, from which rows and columns hold it."""
    height, width = panoptic.shape
    top = max(max(ids, default=0), int(panoptic.max(initial=0)))
    rows = np.zeros((top + 1, height), dtype=bool)
    cols = np.zeros((top + 1, width), dtype=bool)
    column_index = np.arange(width)
    for start in range(0, height, ROW_BLOCK):
        block = panoptic[start : start + ROW_BLOCK].clip(0)
        row_index = np.arange(start, start + block.shape[0])
        rows[block, row_index[:, None]] = True
        cols[block, column_index[None, :]] = True
    out = np.zeros((len(ids), 4), dtype=np.int64)
    for k, i in enumerate(ids):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if ys.size:
            out[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out
