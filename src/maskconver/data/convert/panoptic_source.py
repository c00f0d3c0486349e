"""A COCO panoptic split read without its images: the JSON and the id-map PNGs.

Used by ``to_instances`` and ``maskconver.data.stats``. The JSON is validated by
``CocoPanopticDataset`` (same checks, same messages); ``read`` decodes one PNG and checks that its
ids and the ``segments_info`` agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskconver.data.coco_panoptic import CocoPanopticDataset, DatasetError
from maskconver.data.panoptic_png import read_panoptic_png
from maskconver.data.types import VOID, CategorySet, SegmentInfo


@dataclass(frozen=True)
class PanopticEntry:
    """One image of the split: its ``images`` entry, ``annotations`` entry and PNG path."""

    image: dict[str, Any]
    annotation: dict[str, Any]
    png_path: Path


class PanopticSplit:
    """The annotations of one split.

    Args:
        json_path: the panoptic JSON.
        png_dir: folder of its PNGs.
        image_dir: the image folder when there is one (only checked to exist; images are never
            read here).

    Attributes:
        categories: the split's categories.
        entries: one ``PanopticEntry`` per image, in JSON order.
    """

    def __init__(
        self, json_path: str | Path, png_dir: str | Path, image_dir: str | Path | None = None
    ) -> None:
        self.json_path, self.png_dir = Path(json_path), Path(png_dir)
        checked = CocoPanopticDataset(
            image_dir=image_dir if image_dir is not None else self.png_dir,
            json_path=self.json_path,
            png_dir=self.png_dir,
        )
        self.categories: CategorySet = checked.categories
        with open(self.json_path, encoding="utf-8") as f:
            data = json.load(f)
        by_image = {ann["image_id"]: ann for ann in data["annotations"]}
        images = {img["id"]: img for img in data["images"]}
        self.entries = [
            PanopticEntry(images[i], by_image[i], self.png_dir / by_image[i]["file_name"])
            for i in checked.image_ids
        ]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[PanopticEntry]:
        return iter(self.entries)

    def read(self, entry: PanopticEntry) -> tuple[np.ndarray, list[SegmentInfo]]:
        """``(panoptic [H, W] int32, segments)`` of one image, areas counted from the PNG.

        Raises:
            DatasetError: missing / unreadable PNG, ids that disagree with ``segments_info``, or
                a PNG whose size is not the JSON's ``height`` / ``width``.
        """
        image_id = entry.image["id"]
        try:
            panoptic = read_panoptic_png(entry.png_path)
        except (FileNotFoundError, ValueError) as e:
            raise DatasetError(f"image id {image_id}: {e}") from e
        listed_size = (entry.image.get("height"), entry.image.get("width"))
        if None not in listed_size and tuple(listed_size) != panoptic.shape:
            raise DatasetError(
                f"image id {image_id}: {self.json_path} says (H, W) = {listed_size} but "
                f"{entry.png_path} is {panoptic.shape}"
            )
        ids, counts = np.unique(panoptic, return_counts=True)
        area = {int(i): int(c) for i, c in zip(ids, counts) if i != VOID}
        listed = {int(s["id"]) for s in entry.annotation["segments_info"]}
        if set(area) != listed:
            raise DatasetError(
                f"image id {image_id}: {entry.png_path} has ids {sorted(area)[:10]} but its "
                f"segments_info lists {sorted(listed)[:10]} ({self.json_path})"
            )
        segments = [
            SegmentInfo(
                id=int(s["id"]),
                category_id=int(s["category_id"]),
                iscrowd=bool(s.get("iscrowd", 0)),
                isthing=self.categories.by_id[int(s["category_id"])].isthing,
                area=area[int(s["id"])],
            )
            for s in entry.annotation["segments_info"]
        ]
        return panoptic, segments
