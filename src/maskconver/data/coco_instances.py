"""COCO instance JSON read directly as panoptic samples with thing segments only.

The instance-segmentation task (``model.dr1mask.task: instance``) trains on the same
``PanopticSample`` as the panoptic task: each annotation is decoded
(``convert.coco_json.segmentation_mask``: polygons, RLE, compressed RLE, all checked) and painted
into an id map in memory, non-crowd annotations first, then crowd (the converter's order,
``convert/coco_instances.py``); where annotations overlap the earlier one keeps the pixels, and an
annotation left without pixels is dropped. Everything not painted is void (``0``): there is no
stuff. Standard layout under ``root`` (``split`` like ``val2017``)::

    <root>/<split>/*.jpg                          images
    <root>/annotations/instances_<split>.json     images, annotations, categories

Evaluation must not see the painting: ``meta["instances"]`` keeps every annotation as it is in
the file (compressed RLE at the original size, ``iscrowd``, the JSON's ``area``), so mask AP
scores against exactly what pycocotools would read from the JSON.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from maskconver.data.coco_panoptic import DatasetError
from maskconver.data.convert.categories import check_unique, parse_category
from maskconver.data.convert.coco_json import (
    coco_lists,
    index_images,
    load_json_object,
    segmentation_mask,
)
from maskconver.data.convert.geometry import InvalidAnnotation
from maskconver.data.image_io import ImageReadError, load_image
from maskconver.data.types import VOID, CategorySet, PanopticSample, SegmentInfo

INSTANCE_KEYS = ("images", "annotations", "categories")


def instance_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(image_dir, json_path)`` of the standard COCO instance layout."""
    root = Path(root)
    return root / split, root / "annotations" / f"instances_{split}.json"


def instance_categories(data: dict[str, Any], path: Path, label_space: str) -> CategorySet:
    """The JSON's categories, all things (an ``isthing`` field is kept if present)."""
    categories = [
        parse_category(item, f"{path}: categories[{k}]", default_isthing=True)
        for k, item in enumerate(data["categories"])
    ]
    check_unique(categories, str(path))
    return CategorySet(categories, label_space)


class CocoInstanceDataset(Dataset[PanopticSample]):
    """COCO instance annotations as ``PanopticSample``s (thing segments only; module docstring).

    Args:
        image_dir: folder of the images.
        json_path: the instance JSON.
        label_space: ``"contiguous"`` or ``"raw_ids"`` (see ``CategorySet``).

    Attributes:
        categories: the JSON's categories.
        image_ids: image ids in the order of ``images`` in the JSON.
    """

    def __init__(
        self, image_dir: str | Path, json_path: str | Path, *, label_space: str = "contiguous"
    ) -> None:
        self.image_dir, self.json_path = Path(image_dir), Path(json_path)
        data = load_json_object(self.json_path, "instance JSON")
        coco_lists(data, self.json_path, INSTANCE_KEYS)
        self.categories = instance_categories(data, self.json_path, label_space)
        self._images = index_images(data["images"], self.json_path)
        self.image_ids = list(self._images)
        self._annotations: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for k, ann in enumerate(data["annotations"]):
            where = f"{self.json_path}: annotations[{k}]"
            if not isinstance(ann, dict):
                raise DatasetError(f"{where}: expected an object, got {ann!r}")
            if ann.get("image_id") not in self._images:
                raise DatasetError(f"{where}: unknown image id {ann.get('image_id')!r}")
            if ann.get("category_id") not in self.categories.by_id:
                raise DatasetError(
                    f"{where} (image id {ann['image_id']}): unknown category id "
                    f"{ann.get('category_id')!r}"
                )
            self._annotations[ann["image_id"]].append(ann)

    @classmethod
    def from_root(
        cls, root: str | Path, split: str, *, label_space: str = "contiguous"
    ) -> CocoInstanceDataset:
        """The standard layout (``<root>/<split>/``, ``annotations/instances_<split>.json``)."""
        image_dir, json_path = instance_paths(root, split)
        if not json_path.is_file():
            found = sorted(
                p.stem.removeprefix("instances_")
                for p in (Path(root) / "annotations").glob("instances_*.json")
            )
            raise DatasetError(
                f"instance JSON {json_path} not found (model.dr1mask.task=instance reads "
                f"annotations/instances_<split>.json; splits there: {', '.join(found) or 'none'})"
            )
        return cls(image_dir, json_path, label_space=label_space)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> PanopticSample:
        """Read and paint one image; ``meta`` holds ``orig_size`` and ``instances``.

        Raises:
            DatasetError: unreadable image, size mismatch, or an invalid segmentation (the
                message names the file, the image id and the annotation id).
        """
        image_id = self.image_ids[index]
        info = self._images[image_id]
        path = self.image_dir / info["file_name"]
        try:
            image = load_image(path)
        except ImageReadError as e:
            raise DatasetError(f"image id {image_id}: {e}") from e
        height, width = image.shape[:2]
        json_size = (info.get("height"), info.get("width"))
        if None not in json_size and tuple(json_size) != (height, width):
            raise DatasetError(
                f"image id {image_id}: {self.json_path} says (H, W) = {json_size} but {path} "
                f"is {(height, width)}"
            )
        panoptic = np.full((height, width), VOID, dtype=np.int32)
        segments: list[SegmentInfo] = []
        instances: list[dict[str, Any]] = []
        anns = self._annotations.get(image_id, [])
        for ann in sorted(anns, key=lambda a: bool(a.get("iscrowd", 0))):  # stable
            try:
                mask = segmentation_mask(ann.get("segmentation"), height, width)
            except InvalidAnnotation as e:
                raise DatasetError(
                    f"{self.json_path}: image id {image_id}, annotation id {ann.get('id')}: "
                    f"{e.reason}"
                ) from e
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            crowd = bool(ann.get("iscrowd", 0))
            area = ann.get("area")
            instances.append(
                {
                    "category_id": int(ann["category_id"]),
                    "iscrowd": crowd,
                    "area": float(area) if isinstance(area, int | float) else float(mask.sum()),
                    "segmentation": rle,
                }
            )
            free = mask & (panoptic == VOID)
            if not free.any():
                continue
            seg = SegmentInfo(
                id=len(segments) + 1,
                category_id=int(ann["category_id"]),
                iscrowd=crowd,
                isthing=True,
                area=int(free.sum()),
            )
            panoptic[free] = seg.id
            segments.append(seg)
        return PanopticSample(
            image=image,
            panoptic=panoptic,
            segments=segments,
            image_id=image_id,
            file_name=str(info["file_name"]),
            meta={"orig_size": (height, width), "instances": instances},
        )


class ThingsOnly(Dataset[PanopticSample]):
    """A panoptic dataset with its stuff segments turned to void (instance data from panoptic).

    Args:
        dataset: any indexable ``PanopticSample`` source with ``categories``.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.categories: CategorySet = dataset.categories

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> PanopticSample:
        """The sample with stuff pixels set to void and stuff segments removed."""
        sample = self.dataset[index]
        things = [s for s in sample.segments if self.categories.by_id[s.category_id].isthing]
        keep = np.isin(sample.panoptic, [s.id for s in things])
        panoptic = np.where(keep | (sample.panoptic < VOID), sample.panoptic, VOID)
        return PanopticSample(
            image=sample.image,
            panoptic=panoptic.astype(np.int32),
            segments=things,
            image_id=sample.image_id,
            file_name=sample.file_name,
            meta=dict(sample.meta),
        )
