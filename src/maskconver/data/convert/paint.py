"""``Canvas``: the ``[H, W]`` segment-id map that a converter paints one image into.

Two ways to put a mask down, chosen by each converter (``docs/data-formats.md``):

* ``paint``: over whatever is there (labelme: later shapes win, as labelme's own exporters do);
* ``fill``: only pixels nobody took yet (stuff under things, overlap resolution of COCO instances).

``erase`` paints void. Stuff has one segment per category and image (``stuff_segment``). At the
end ``finish`` drops segments left with no pixel and numbers the others 1..n in creation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskconver.data.types import VOID, SegmentInfo


@dataclass
class CanvasSegment:
    """A segment being painted: what it is and where it came from (for the report)."""

    id: int
    category_id: int
    isthing: bool
    iscrowd: bool
    source: str  # e.g. "instances", "stuff-json", "shapes"
    name: str  # how the report names it, e.g. "annotation 17", "shape 3 ('person')"


class Canvas:
    """A ``[height, width]`` int32 id map (0 = void) and its segments."""

    def __init__(self, height: int, width: int) -> None:
        self.ids = np.zeros((height, width), dtype=np.int32)
        self.segments: dict[int, CanvasSegment] = {}
        self._stuff: dict[int, int] = {}

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (int(self.ids.shape[0]), int(self.ids.shape[1]))

    def new_segment(
        self, category_id: int, *, isthing: bool, source: str, name: str, iscrowd: bool = False
    ) -> int:
        """Register a segment (no pixels yet) and return its working id."""
        seg_id = len(self.segments) + 1
        self.segments[seg_id] = CanvasSegment(seg_id, category_id, isthing, iscrowd, source, name)
        return seg_id

    def stuff_segment(self, category_id: int, *, source: str, name: str) -> int:
        """The one segment of a stuff category in this image (created on first use)."""
        if category_id not in self._stuff:
            self._stuff[category_id] = self.new_segment(
                category_id, isthing=False, source=source, name=name
            )
        return self._stuff[category_id]

    def paint(self, seg_id: int, mask: np.ndarray) -> None:
        """Give every pixel of the ``[H, W]`` bool ``mask`` to ``seg_id`` (over anything)."""
        self.ids[mask] = seg_id

    def erase(self, mask: np.ndarray) -> None:
        """Make every pixel of ``mask`` void."""
        self.ids[mask] = VOID

    def free(self, mask: np.ndarray) -> np.ndarray:
        """``[H, W]`` bool: the pixels of ``mask`` that no segment owns."""
        return mask & (self.ids == VOID)

    def fill(self, seg_id: int, mask: np.ndarray) -> int:
        """Give the free pixels of ``mask`` to ``seg_id``; returns how many it got."""
        free = self.free(mask)
        self.ids[free] = seg_id
        return int(free.sum())

    def owners(self, mask: np.ndarray) -> dict[int, int]:
        """Segment id -> pixels of ``mask`` it already owns (void not listed)."""
        ids, counts = np.unique(self.ids[mask], return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts) if i != VOID}

    def finish(
        self,
    ) -> tuple[np.ndarray, list[SegmentInfo], list[CanvasSegment], list[CanvasSegment]]:
        """Number the segments that kept pixels 1..n (creation order).

        Returns:
            ``(panoptic [H, W] int32, segments, kept, vanished)``: the map, its ``SegmentInfo``
            list (areas counted), the kept ``CanvasSegment`` records (same order, new ids) and
            the ones left with no pixel (old ids).
        """
        ids, counts = np.unique(self.ids, return_counts=True)
        area = {int(i): int(c) for i, c in zip(ids, counts) if i != VOID}
        table = np.zeros(len(self.segments) + 1, dtype=np.int32)
        kept: list[CanvasSegment] = []
        vanished: list[CanvasSegment] = []
        infos: list[SegmentInfo] = []
        for old_id, seg in self.segments.items():
            if old_id not in area:
                vanished.append(seg)
                continue
            new_id = len(kept) + 1
            table[old_id] = new_id
            kept.append(
                CanvasSegment(
                    new_id, seg.category_id, seg.isthing, seg.iscrowd, seg.source, seg.name
                )
            )
            infos.append(
                SegmentInfo(
                    id=new_id,
                    category_id=seg.category_id,
                    iscrowd=seg.iscrowd,
                    isthing=seg.isthing,
                    area=area[old_id],
                )
            )
        return table[self.ids], infos, kept, vanished
