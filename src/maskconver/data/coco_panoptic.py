"""COCO panoptic dataset reader.

Standard layout under ``root`` (``split`` like ``train2017`` / ``val2017``)::

    <root>/<split>/*.jpg                              images
    <root>/annotations/panoptic_<split>.json          images, annotations, categories
    <root>/annotations/panoptic_<split>/*.png         id maps (id = R + 256 G + 256^2 B)

Explicit ``image_dir`` / ``json_path`` / ``png_dir`` override the layout. What is cheap is checked
when the dataset is built (JSON structure, image ids, category ids, duplicate segment ids); what
needs the pixels is checked per sample. Every problem raises ``DatasetError`` naming the file and
the image id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from maskconver.data.image_io import ImageReadError, load_image
from maskconver.data.panoptic_png import read_panoptic_png
from maskconver.data.types import VOID, CategorySet, PanopticSample, SegmentInfo
from maskconver.errors import MaskconverError

REQUIRED_KEYS = ("images", "annotations", "categories")
MAX_IDS_IN_MESSAGE = 10


class DatasetError(MaskconverError, ValueError):
    """A dataset file is missing or inconsistent (message names the file and the image id)."""


def standard_paths(root: str | Path, split: str) -> tuple[Path, Path, Path]:
    """``(image_dir, json_path, png_dir)`` of the standard COCO panoptic layout."""
    root = Path(root)
    return (
        root / split,
        root / "annotations" / f"panoptic_{split}.json",
        root / "annotations" / f"panoptic_{split}",
    )


def available_splits(root: str | Path) -> list[str]:
    """Names of the splits with an ``annotations/panoptic_<split>.json`` under ``root``, sorted."""
    found = (Path(root) / "annotations").glob("panoptic_*.json")
    return sorted(p.stem.removeprefix("panoptic_") for p in found if p.is_file())


def _load_json(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise DatasetError(f"annotation JSON not found: {json_path}")
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"malformed JSON in {json_path}: {e}") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{json_path} is not UTF-8 text (JSON must be UTF-8): {e}") from e
    except OSError as e:
        raise DatasetError(f"cannot read {json_path}: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{json_path}: top level must be an object, got {type(data).__name__}")
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: missing or non-list key {key!r}")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: Any, where: str) -> None:
    """Image ids are integers or strings (COCO uses integers)."""
    if not (_is_int(value) or isinstance(value, str)):
        raise DatasetError(
            f"{where} must be an integer or a string, got {value!r} ({type(value).__name__})"
        )


def _short(ids: Sequence[object]) -> str:
    """At most ``MAX_IDS_IN_MESSAGE`` ids for an error message."""
    head = ", ".join(str(i) for i in ids[:MAX_IDS_IN_MESSAGE])
    return head + (", ..." if len(ids) > MAX_IDS_IN_MESSAGE else "")


class CocoPanopticDataset(Dataset[PanopticSample]):
    """COCO panoptic ground truth as ``PanopticSample``s (images ``[H, W, 3]`` uint8 RGB).

    Attributes:
        categories: the dataset's categories (non-contiguous ids allowed; 0 is void).
        image_ids: image ids in dataset order (the order of ``images`` in the JSON).
        image_dir, json_path, png_dir: the resolved paths.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "val2017",
        *,
        image_dir: str | Path | None = None,
        json_path: str | Path | None = None,
        png_dir: str | Path | None = None,
        label_space: str = "contiguous",
    ) -> None:
        """Index the dataset and validate its JSON.

        Args:
            root: dataset root with the standard layout (may be None if all paths are given).
            split: split name, e.g. ``"val2017"``.
            image_dir: folder of the images (overrides the layout).
            json_path: panoptic JSON (overrides the layout).
            png_dir: folder of the panoptic PNGs (overrides the layout).
            label_space: ``"contiguous"`` or ``"raw_ids"`` (see ``CategorySet``).

        Raises:
            DatasetError: missing paths, malformed JSON or inconsistent annotations.
        """
        if root is None and (image_dir is None or json_path is None or png_dir is None):
            raise DatasetError(
                "CocoPanopticDataset needs either root or all of image_dir, json_path, png_dir"
            )
        std_images, std_json, std_pngs = standard_paths(root or ".", split)
        self.image_dir = Path(image_dir) if image_dir is not None else std_images
        self.json_path = Path(json_path) if json_path is not None else std_json
        self.png_dir = Path(png_dir) if png_dir is not None else std_pngs
        for name, folder in (("image folder", self.image_dir), ("PNG folder", self.png_dir)):
            if not folder.is_dir():
                raise DatasetError(f"{name} not found: {folder} (annotations {self.json_path})")

        data = _load_json(self.json_path)
        for k, cat in enumerate(data["categories"]):
            if not isinstance(cat, dict) or not _is_int(cat.get("id")):
                raise DatasetError(
                    f"{self.json_path}: categories[{k}] needs an integer 'id', got "
                    f"{cat.get('id') if isinstance(cat, dict) else cat!r}"
                )
        try:
            self.categories = CategorySet.from_json(data["categories"], label_space)
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{self.json_path}: bad 'categories': {e}") from e
        self._images = self._index_images(data["images"])
        self._annotations = self._index_annotations(data["annotations"])
        missing = [i for i in self._images if i not in self._annotations]
        if missing:
            raise DatasetError(
                f"{self.json_path}: images without a panoptic annotation: {_short(missing)}"
            )
        self.image_ids: list[int | str] = list(self._images)

    def _index_images(self, images: list[Any]) -> dict[int | str, dict[str, Any]]:
        out: dict[int | str, dict[str, Any]] = {}
        for k, img in enumerate(images):
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise DatasetError(f"{self.json_path}: images[{k}] needs 'id' and 'file_name'")
            _check_id(img["id"], f"{self.json_path}: images[{k}] 'id'")
            if not isinstance(img["file_name"], str) or not img["file_name"]:
                raise DatasetError(
                    f"{self.json_path}: images[{k}] (id {img['id']}) 'file_name' must be a "
                    f"non-empty string, got {img['file_name']!r}"
                )
            if img["id"] in out:
                raise DatasetError(f"{self.json_path}: duplicate image id {img['id']}")
            out[img["id"]] = img
        return out

    def _index_annotations(self, annotations: list[Any]) -> dict[int | str, dict[str, Any]]:
        out: dict[int | str, dict[str, Any]] = {}
        for k, ann in enumerate(annotations):
            where = f"{self.json_path}: annotations[{k}]"
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise DatasetError(f"{where} has no 'image_id'")
            image_id = ann["image_id"]
            _check_id(image_id, f"{where} 'image_id'")
            where = f"{where} (image id {image_id})"
            if image_id not in self._images:
                raise DatasetError(f"{where}: image id not listed in 'images'")
            if image_id in out:
                raise DatasetError(f"{where}: second annotation for the same image")
            if not isinstance(ann.get("file_name"), str) or not isinstance(
                ann.get("segments_info"), list
            ):
                raise DatasetError(
                    f"{where}: needs a 'file_name' string and a 'segments_info' list"
                )
            seen: set[int] = set()
            for seg in ann["segments_info"]:
                if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
                    raise DatasetError(f"{where}: segments need 'id' and 'category_id'")
                for key in ("id", "category_id"):
                    if not _is_int(seg[key]):
                        raise DatasetError(
                            f"{where}: segment {key} must be an integer, got {seg[key]!r} "
                            f"({type(seg[key]).__name__})"
                        )
                if seg["category_id"] not in self.categories.by_id:
                    raise DatasetError(
                        f"{where}: segment {seg['id']} has unknown category id {seg['category_id']}"
                    )
                if seg["id"] == VOID or seg["id"] in seen:
                    raise DatasetError(f"{where}: segment id {seg['id']} is void (0) or repeated")
                seen.add(seg["id"])
            out[image_id] = ann
        return out

    def __len__(self) -> int:
        return len(self.image_ids)

    def check_files(self, headers: bool = True) -> list[str]:
        """Problems found before training: missing images or PNGs, unreadable images.

        Args:
            headers: also open and decode every image (``Image.load``: catches non-images,
                corrupt headers and truncated pixel data; bounded by Pillow's pixel limit).

        Returns:
            One message per bad sample (file and image id), in dataset order.
        """
        from PIL import Image

        problems = []
        for image_id in self.image_ids:
            image_path = self.image_dir / self._images[image_id]["file_name"]
            png_path = self.png_dir / self._annotations[image_id]["file_name"]
            if not image_path.is_file():
                problems.append(f"image id {image_id}: image file not found: {image_path}")
            elif not png_path.is_file():
                problems.append(f"image id {image_id}: panoptic PNG not found: {png_path}")
            elif headers:
                try:
                    with Image.open(image_path) as im:
                        im.load()  # decodes: a truncated file fails here, not at evaluation
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                    problems.append(f"image id {image_id}: cannot read image {image_path}: {e}")
        return problems

    def image_info(self, index: int) -> dict[str, Any]:
        """The JSON ``images`` entry of sample ``index`` (id, file_name, height, width)."""
        return self._images[self.image_ids[index]]

    def __getitem__(self, index: int) -> PanopticSample:
        """Read one sample; ``meta["orig_size"] = (H, W)``.

        Raises:
            DatasetError: missing/unreadable image or PNG, size mismatch, or segments that do not
                match the PNG's ids.
        """
        image_id = self.image_ids[index]
        info = self._images[image_id]
        ann = self._annotations[image_id]
        image_path = self.image_dir / info["file_name"]
        png_path = self.png_dir / ann["file_name"]
        try:
            image = load_image(image_path)
        except ImageReadError as e:
            raise DatasetError(f"image id {image_id}: {e}") from e
        try:
            panoptic = read_panoptic_png(png_path)
        except (FileNotFoundError, ValueError) as e:
            raise DatasetError(f"image id {image_id}: {e}") from e
        if image.shape[:2] != panoptic.shape:
            raise DatasetError(
                f"image id {image_id}: image {image_path} is {image.shape[:2]} (H, W) but its "
                f"panoptic PNG {png_path} is {panoptic.shape}"
            )
        json_size = (info.get("height"), info.get("width"))
        if None not in json_size and tuple(json_size) != panoptic.shape:
            raise DatasetError(
                f"image id {image_id}: {self.json_path} says (H, W) = {json_size} but "
                f"{png_path} is {panoptic.shape}"
            )
        segments = self._segments(image_id, ann, panoptic, png_path)
        return PanopticSample(
            image=image,
            panoptic=panoptic,
            segments=segments,
            image_id=image_id,
            file_name=str(info["file_name"]),
            meta={"orig_size": (int(panoptic.shape[0]), int(panoptic.shape[1]))},
        )

    def _segments(
        self, image_id: int | str, ann: dict[str, Any], panoptic: np.ndarray, png_path: Path
    ) -> list[SegmentInfo]:
        """``segments_info`` checked against the ``[H, W]`` id map, with areas counted from it."""
        ids, counts = np.unique(panoptic, return_counts=True)
        area = {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i != VOID}
        listed = {int(seg["id"]) for seg in ann["segments_info"]}
        not_listed = sorted(set(area) - listed)
        if not_listed:
            raise DatasetError(
                f"image id {image_id}: {png_path} has ids {_short(not_listed)} that are not in "
                f"its segments_info ({self.json_path})"
            )
        absent = sorted(listed - set(area))
        if absent:
            raise DatasetError(
                f"image id {image_id}: segments_info ids {_short(absent)} in {self.json_path} "
                f"do not occur in {png_path}"
            )
        return [
            SegmentInfo(
                id=int(seg["id"]),
                category_id=int(seg["category_id"]),
                iscrowd=bool(seg.get("iscrowd", 0)),
                isthing=self.categories.by_id[int(seg["category_id"])].isthing,
                area=area[int(seg["id"])],
            )
            for seg in ann["segments_info"]
        ]
