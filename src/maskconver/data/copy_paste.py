"""Panoptic copy-paste (reference section 2.8, ``MC/modeling/layers/copypaste.py``).

Pastes thing segments and whole stuff classes of a second sample onto the first. One id map holds
the result, so segments stay disjoint by construction. Padding of both inputs becomes void (0),
not -1, as in the reference (its pitfall 17): the padded border is a negative region afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

import numpy as np

from maskconver.data.transforms import LargeScaleJitter
from maskconver.data.types import PADDING, VOID, PanopticSample, SegmentInfo


class PanopticCopyPaste:
    """``copy_paste(sample, other, rng) -> new sample`` (inputs untouched).

    Order: ``other`` is rescaled by ``jitter`` (if given) to the same size as ``sample``; each THING
    segment of ``other`` is pasted with probability ``prob`` (new ids above every id of ``sample``);
    then each STUFF class of ``other`` with probability ``prob`` (the whole class region; merged
    into ``sample``'s segment of the same class if there is one). Image pixels are copied without
    blending. Segments of ``sample`` that end up fully covered are dropped.
    """

    def __init__(
        self,
        *,
        thing_category_ids: Collection[int] | Callable[[int], bool],
        prob: float = 0.5,
        jitter: LargeScaleJitter | None = None,
    ) -> None:
        """Configure the paste.

        Args:
            thing_category_ids: the thing category ids (or a ``category_id -> bool`` predicate);
                every other category is stuff.
            prob: paste probability of each thing segment and each stuff class.
            jitter: rescales ``other`` first (the reference's second scale range); without it
                ``other`` must already have ``sample``'s size.
        """
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"copy-paste probability must lie in [0, 1], got {prob}")
        if callable(thing_category_ids):
            self.is_thing: Callable[[int], bool] = thing_category_ids
        else:
            thing_ids = frozenset(int(i) for i in thing_category_ids)
            self.is_thing = thing_ids.__contains__
        self.prob = prob
        self.jitter = jitter

    def __call__(
        self, sample: PanopticSample, other: PanopticSample, rng: np.random.Generator
    ) -> PanopticSample:
        """Paste segments of ``other`` onto ``sample`` (see the class docstring)."""
        if self.jitter is not None:
            other = self.jitter(other, rng)
        if other.panoptic.shape != sample.panoptic.shape:
            raise ValueError(
                f"copy-paste of image id {other.image_id} onto {sample.image_id}: sizes "
                f"{other.panoptic.shape} and {sample.panoptic.shape} differ (give a jitter with "
                "the same output size)"
            )
        panoptic = np.where(sample.panoptic == PADDING, VOID, sample.panoptic).astype(np.int32)
        image = sample.image.copy()
        src_map = other.panoptic
        segments = [dataclasses.replace(s) for s in sample.segments]
        used = {s.id for s in segments} | set(np.unique(panoptic).tolist())
        next_id = max(used) + 1

        def paste(mask: np.ndarray, seg_id: int) -> None:
            panoptic[mask] = seg_id
            image[mask] = other.image[mask]

        present = set(np.unique(src_map).tolist())
        src_segments = [s for s in other.segments if s.id in present and s.id != VOID]
        for seg in src_segments:
            if self.is_thing(seg.category_id) and rng.random() < self.prob:
                paste(src_map == seg.id, next_id)
                segments.append(dataclasses.replace(seg, id=next_id, isthing=True))
                next_id += 1

        stuff_classes = sorted(
            {s.category_id for s in src_segments if not self.is_thing(s.category_id)}
        )
        for category_id in stuff_classes:
            if rng.random() >= self.prob:
                continue
            ids = [s.id for s in src_segments if s.category_id == category_id]
            existing = [s for s in segments if s.category_id == category_id and not s.iscrowd]
            if existing:
                target_id = existing[0].id
            else:
                target_id = next_id
                next_id += 1
                segments.append(SegmentInfo(id=target_id, category_id=category_id, isthing=False))
            paste(np.isin(src_map, ids), target_id)

        segment_ids, counts = np.unique(panoptic, return_counts=True)
        area = dict(zip(segment_ids.tolist(), counts.tolist(), strict=True))
        kept = [dataclasses.replace(s, area=area[s.id]) for s in segments if s.id in area]
        meta = dict(sample.meta)
        meta["copy_paste_source"] = other.image_id
        return PanopticSample(
            image=image,
            panoptic=panoptic,
            segments=kept,
            image_id=sample.image_id,
            file_name=sample.file_name,
            meta=meta,
        )
