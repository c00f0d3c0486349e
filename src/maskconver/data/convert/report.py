"""What a conversion did: images converted, segments per source, what was skipped and why.

Two kinds of problems are recorded, each with the file (or image / annotation) and the reason:

* *skipped*: a whole input file or image is left out (missing image, malformed JSON, ...);
* *dropped*: one annotation or shape is left out of an image that is still converted (a point
  shape, an empty mask, an instance mostly covered by earlier ones, ...).

Dropping by a documented rule (``drop``) is never an error. With ``strict=True`` the first
*skipped* file, and the first annotation dropped because it is invalid (``invalid``: bad
coordinates, a wrong RLE, an unknown shape type), raise ``StrictStop`` (a ``DatasetError``)
instead.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from maskconver.data.coco_panoptic import DatasetError

if TYPE_CHECKING:
    from maskconver.data.convert.paint import CanvasSegment
    from maskconver.data.types import CategorySet

MAX_LINES_PER_LIST = 20  # longer skip / drop lists are cut in the printed summary (not the JSON)


class StrictStop(DatasetError):
    """The first problem of a ``strict`` conversion (converters let it through, uncaught)."""


@dataclass(frozen=True)
class Problem:
    """One skipped file or dropped annotation: where (file, image or annotation) and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ConvertReport:
    """The outcome of one conversion.

    Attributes:
        source: the converter's name (``labelme``, ``voc``, ...).
        output: the written JSON (or dataset root).
        strict: raise ``StrictStop`` on the first skipped file instead of recording it.
        images_seen: input images (or annotation files) looked at.
        images_converted: images written to the output.
        segments_by_source: segments written, per input source (``instances``, ``stuff-json``,
            ``shapes``, ``SegmentationObject``, ...).
        segments_by_category: segments written, per category name.
        crowd: crowd segments written.
        skipped: whole files or images left out.
        dropped: single annotations / shapes left out.
        notes: things the user must know (generated categories, remapped ids, ...).
    """

    source: str
    output: str = ""
    strict: bool = False
    images_seen: int = 0
    images_converted: int = 0
    segments_by_source: Counter[str] = field(default_factory=Counter)
    segments_by_category: Counter[str] = field(default_factory=Counter)
    crowd: int = 0
    skipped: list[Problem] = field(default_factory=list)
    dropped: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, where: str | Path, reason: str) -> None:
        """Record a whole file / image left out (raises ``StrictStop`` when strict)."""
        problem = Problem(str(where), reason)
        if self.strict:
            raise StrictStop(f"{problem} (--strict)")
        self.skipped.append(problem)

    def drop(self, where: str | Path, reason: str) -> None:
        """Record one annotation / shape left out by a rule (never an error, even when strict)."""
        self.dropped.append(Problem(str(where), reason))

    def invalid(self, where: str | Path, reason: str) -> None:
        """Record one annotation / shape left out as invalid (raises ``StrictStop`` when strict).

        Args:
            where: the file, image id and annotation (or shape) it is.
            reason: what is wrong with it.
        """
        problem = Problem(str(where), reason)
        if self.strict:
            raise StrictStop(f"{problem} (--strict)")
        self.dropped.append(problem)

    def note(self, message: str) -> None:
        """Record something the user must be told (never an error)."""
        self.notes.append(message)

    def count_segment(self, source: str, category_name: str, *, crowd: bool = False) -> None:
        """Count one written segment."""
        self.segments_by_source[source] += 1
        self.segments_by_category[category_name] += 1
        self.crowd += int(crowd)

    def count_image(self, kept: Iterable[CanvasSegment], categories: CategorySet) -> None:
        """Count one converted image and the segments written for it."""
        self.images_converted += 1
        for seg in kept:
            name = categories.by_id[seg.category_id].name
            self.count_segment(seg.source, name, crowd=seg.iscrowd)

    def to_json(self) -> dict[str, object]:
        """A JSON-serialisable dict of everything above."""
        return {
            "source": self.source,
            "output": self.output,
            "images_seen": self.images_seen,
            "images_converted": self.images_converted,
            "segments_by_source": dict(self.segments_by_source),
            "segments_by_category": dict(sorted(self.segments_by_category.items())),
            "crowd_segments": self.crowd,
            "skipped": [{"where": p.where, "reason": p.reason} for p in self.skipped],
            "dropped": [{"where": p.where, "reason": p.reason} for p in self.dropped],
            "notes": list(self.notes),
        }

    def write_json(self, path: str | Path) -> None:
        """Write ``to_json()`` to ``path`` (atomically)."""
        from maskconver.files import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

    def format(self) -> str:
        """The human-readable summary printed by ``maskconver data convert``."""
        lines = [f"note: {n}" for n in self.notes]
        lines.append(
            f"{self.source}: converted {self.images_converted} of {self.images_seen} images"
            + (f" into {self.output}" if self.output else "")
        )
        total = sum(self.segments_by_source.values())
        per_source = ", ".join(f"{k} {v}" for k, v in sorted(self.segments_by_source.items()))
        lines.append(
            f"segments: {total}"
            + (f" ({per_source})" if per_source else "")
            + f", crowd {self.crowd}"
        )
        if self.segments_by_category:
            per_category = ", ".join(
                f"{k} {v}" for k, v in sorted(self.segments_by_category.items())
            )
            lines.append(f"per category: {per_category}")
        for title, problems in (("skipped", self.skipped), ("dropped", self.dropped)):
            if not problems:
                continue
            lines.append(f"{title} {len(problems)}:")
            lines.extend(f"  {p}" for p in problems[:MAX_LINES_PER_LIST])
            if len(problems) > MAX_LINES_PER_LIST:
                lines.append(
                    f"  ... and {len(problems) - MAX_LINES_PER_LIST} more (all in --report FILE)"
                )
        return "\n".join(lines)
