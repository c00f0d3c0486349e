"""Data types shared by readers, writers, transforms, targets and evaluation.

Conventions (one place for all of them):

* images are ``numpy.uint8`` arrays ``[H, W, 3]`` in RGB order;
* a panoptic map is an ``int32`` array ``[H, W]`` of segment ids: ``0`` is void (unlabelled),
  ``-1`` is padding added by a transform (ignored by every loss), any other value is the ``id`` of
  one entry of ``segments``; on disk ids are encoded as ``R + 256 G + 256^2 B`` (COCO panoptic);
* category ids are the dataset's own ids (never assumed contiguous); ``CategorySet`` maps them to
  the model's class indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

VOID = 0
PADDING = -1
RGB_CHANNELS = 3


@dataclass(frozen=True)
class Category:
    """One dataset category (``isthing`` False means stuff)."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (0, 0, 0)


@dataclass
class SegmentInfo:
    """One segment of a panoptic map (COCO ``segments_info`` entry)."""

    id: int
    category_id: int
    iscrowd: bool = False
    score: float = 1.0  # predictions only; 1.0 for ground truth
    isthing: bool = False  # filled by readers and post-processing from the category
    area: int = 0  # pixel count (readers fill it from the map, not from the JSON)


@dataclass
class PanopticSample:
    """One image with its panoptic labels.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        panoptic: ``[H, W]`` int32 segment ids (0 void, -1 padding).
        segments: the segments that occur in ``panoptic`` (crowd segments flagged).
        image_id: the dataset's image id (int or str, kept as given).
        file_name: image file name relative to the image folder (may be empty).
    """

    image: np.ndarray
    panoptic: np.ndarray
    segments: list[SegmentInfo]
    image_id: int | str = 0
    file_name: str = ""
    meta: dict[str, object] = field(default_factory=dict)


def copy_sample(sample: PanopticSample) -> PanopticSample:
    """A shallow copy with its own ``segments`` and ``meta`` (transforms keep the GT intact)."""
    return PanopticSample(
        image=sample.image,
        panoptic=sample.panoptic,
        segments=list(sample.segments),
        image_id=sample.image_id,
        file_name=sample.file_name,
        meta=dict(sample.meta),
    )


class CategorySet:
    """Ordered categories with the map between dataset ids and model class indices.

    ``label_space='contiguous'`` numbers categories 0..C-1 in ascending id order;
    ``'raw_ids'`` uses the category id itself as the class index (the reference's 201 COCO
    channels), which needs ``num_classes > max(id)``.
    """

    def __init__(self, categories: list[Category], label_space: str = "contiguous") -> None:
        if not categories:
            raise ValueError("a dataset needs at least one category")
        ids = [c.id for c in categories]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate category ids: {sorted(ids)}")
        if any(i <= 0 for i in ids):
            raise ValueError(f"category ids must be positive (0 is void): {sorted(ids)}")
        if label_space not in ("contiguous", "raw_ids"):
            raise ValueError(f"unknown label_space {label_space!r}")
        self.categories = sorted(categories, key=lambda c: c.id)
        self.label_space = label_space
        self.by_id = {c.id: c for c in self.categories}
        if label_space == "contiguous":
            self._id_to_index = {c.id: i for i, c in enumerate(self.categories)}
        else:
            self._id_to_index = {c.id: c.id for c in self.categories}
        self._index_to_id = {v: k for k, v in self._id_to_index.items()}

    def __len__(self) -> int:
        return len(self.categories)

    @property
    def num_classes(self) -> int:
        """Channels the model needs for this label space."""
        if self.label_space == "contiguous":
            return len(self.categories)
        return max(self._id_to_index.values()) + 1

    def index(self, category_id: int) -> int:
        """Model class index of a dataset category id (KeyError names the id)."""
        try:
            return self._id_to_index[category_id]
        except KeyError:
            raise KeyError(f"unknown category id {category_id}") from None

    def category_id(self, index: int) -> int:
        """Dataset category id of a model class index."""
        try:
            return self._index_to_id[index]
        except KeyError:
            raise KeyError(f"class index {index} maps to no category") from None

    def class_to_category(self, num_classes: int) -> list[int]:
        """``[num_classes]`` dataset category id of each class index, -1 where none maps."""
        out = [-1] * num_classes
        for c in self.categories:
            out[self._id_to_index[c.id]] = c.id
        return out

    def is_thing_mask(self, num_classes: int | None = None) -> np.ndarray:
        """``[num_classes]`` bool: True where the class index is a thing category."""
        n = num_classes if num_classes is not None else self.num_classes
        out = np.zeros(n, dtype=bool)
        for c in self.categories:
            out[self._id_to_index[c.id]] = c.isthing
        return out

    def to_json(self) -> list[dict[str, object]]:
        """COCO ``categories`` list."""
        return [
            {"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
            for c in self.categories
        ]

    @classmethod
    def from_json(
        cls, items: list[dict[str, object]], label_space: str = "contiguous"
    ) -> CategorySet:
        """From a COCO ``categories`` list (``color`` optional)."""
        cats = []
        for item in items:
            raw_color = cast(Sequence[Any], item.get("color") or (0, 0, 0))
            if len(raw_color) != RGB_CHANNELS:
                raise ValueError(
                    f"category {item.get('id')}: color must be [r, g, b], got {raw_color}"
                )
            try:  # int() of inf / nan / a string raises OverflowError / ValueError / TypeError
                color = (int(raw_color[0]), int(raw_color[1]), int(raw_color[2]))
                category_id = int(item["id"])  # type: ignore[call-overload]
            except (TypeError, ValueError, OverflowError):
                raise ValueError(
                    f"category {item.get('id')!r}: id and color [r, g, b] must be finite "
                    f"numbers, got id {item.get('id')!r} and color {raw_color!r}"
                ) from None
            cats.append(
                Category(
                    id=category_id,
                    name=str(item.get("name", item["id"])),
                    isthing=bool(item.get("isthing", 1)),
                    color=color,
                )
            )
        return cls(cats, label_space)
