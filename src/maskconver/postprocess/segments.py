"""The panoptic result every meta-architecture returns, and the numbering step that builds it.

``number_segments`` is the small Python step after a merge's tensor core
(``postprocess.merge.MergeCore``): it numbers the kept proposals (things separately, stuff merged
per class) and builds ``segments_info``; every backend (torch, an exported graph) shares it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maskconver.data.types import SegmentInfo
from maskconver.postprocess.merge import MergeCore

UNUSED_CLASS = -1  # class_to_category entry of an index that maps to no category


def class_tables(
    class_to_category: Sequence[int], is_thing_class: Sequence[bool]
) -> tuple[list[int], list[bool]]:
    """The per-class tables every post-processor keeps, checked to have one entry per class."""
    if len(class_to_category) != len(is_thing_class):
        raise ValueError(
            f"class_to_category ({len(class_to_category)}) and is_thing_class "
            f"({len(is_thing_class)}) must have one entry per class"
        )
    return [int(c) for c in class_to_category], [bool(t) for t in is_thing_class]


@dataclass
class PanopticPrediction:
    """A panoptic result for one image at its original resolution.

    Attributes:
        panoptic: ``[H, W]`` int32 segment ids, 0 = void.
        segments: one ``SegmentInfo`` per id in ``panoptic``: ``category_id`` is the
            dataset's category id, ``score`` the proposal score, ``isthing`` and ``area``
            filled in.
    """

    panoptic: np.ndarray
    segments: list[SegmentInfo]


def number_segments(
    core: MergeCore,
    *,
    class_to_category: Sequence[int],
    is_thing_class: Sequence[bool],
    stuff: tuple[np.ndarray, dict[int, float]] | None = None,
) -> PanopticPrediction:
    """Number the kept proposals and paint the id map (the Python step after the tensor core).

    Kept proposals are visited in score order: each thing gets a new segment id, the first stuff
    proposal of a class gets a new id and later stuff proposals of that class join it. Ids run
    1..n; 0 is void.

    Args:
        core: the tensor core's result for one image.
        class_to_category: class index -> dataset category id.
        is_thing_class: class index -> thing (True) or stuff.
        stuff: region-based stuff, ``([H, W] stuff class per pixel or -1, {class: score})``:
            after the proposals, each listed class becomes one segment on its pixels.

    Returns:
        The ``[H, W]`` int32 panoptic map and one ``SegmentInfo`` per id (with score and area).
    """
    keep = core.keep.cpu().numpy()
    classes = core.classes.cpu().numpy()
    scores = core.scores.float().cpu().numpy()
    areas = core.areas.cpu().numpy()
    segment_of = np.zeros(len(keep) + 1, dtype=np.int32)  # proposal -> id; index -1 is void
    segments: list[SegmentInfo] = []
    stuff_segment: dict[int, SegmentInfo] = {}
    for k in np.flatnonzero(keep):
        cls = int(classes[k])
        is_thing = bool(is_thing_class[cls])
        if not is_thing and cls in stuff_segment:
            merged = stuff_segment[cls]
            segment_of[k] = merged.id
            merged.area += int(areas[k])
            continue
        seg = SegmentInfo(
            id=len(segments) + 1,
            category_id=int(class_to_category[cls]),
            score=float(scores[k]),
            isthing=is_thing,
            area=int(areas[k]),
        )
        segment_of[k] = seg.id
        segments.append(seg)
        if not is_thing:
            stuff_segment[cls] = seg
    panoptic = segment_of[core.owner.cpu().numpy()]  # owner -1 -> the void entry
    if stuff is not None:
        stuff_map, stuff_scores = stuff
        for cls, score in sorted(stuff_scores.items()):
            region = stuff_map == cls
            seg = SegmentInfo(
                id=len(segments) + 1,
                category_id=int(class_to_category[cls]),
                score=float(score),
                isthing=False,
                area=int(region.sum()),
            )
            panoptic[region] = seg.id
            segments.append(seg)
    return PanopticPrediction(panoptic=panoptic.astype(np.int32, copy=False), segments=segments)
