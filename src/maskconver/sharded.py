"""Sharded and resumable ``predict``: the rank split, per-rank journals, the merge on rank 0.

``torchrun --nproc_per_node N -m maskconver predict ...`` (or ``predict --resume`` in one
process) goes through here:

* **Split.** Every rank lists the inputs in the same order
  (``predict_inputs.collect_images``: folders sorted, files in command-line order) and drops
  those already finished; rank ``r`` of ``W`` takes the ``i``-th remaining image where
  ``i % W == r`` (``Shard.take``).
* **Journal.** Each rank writes its images' outputs as one process would (``<stem>.png``,
  ``<stem>_overlay.jpg``) and appends to its partial predictions file
  ``.maskconver-predict/rank<r>.jsonl``: a ``started`` line before an image's files are written
  (flushed) and a ``done`` line holding its ``predictions.json`` entries after they are
  (flushed and ``fsync``-ed). A kill loses at most the images in flight.
* **Resume.** An image is finished when a ``done`` line or an earlier ``predictions.json`` lists
  it under the same image id and input file name, and every file it needs is present; a rerun
  predicts the rest only (a removed PNG or overlay is redone).
* **Merge.** After every rank finished (a collective), rank 0 writes one ``predictions.json``
  (atomically) listing the finished images in input order, the same content and order one
  process writes, then removes the journals.

Processes talk over gloo (``engine.distributed``), also when they predict on CUDA: the only
collectives are a broadcast of rank 0's verdict on the output folder and a final sum of counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from maskconver.errors import MaskconverError

if TYPE_CHECKING:
    import numpy as np

STATE_DIR = ".maskconver-predict"
PREDICTIONS_JSON = "predictions.json"
T = TypeVar("T")

Record = dict[str, Any]  # {"stem", "image": images entry, "annotation": annotations entry}


class ResumeError(MaskconverError):
    """An output folder that a resumed run must not write into (the message says why)."""


def world_size_from_env() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 without it)."""
    return int(os.environ.get("WORLD_SIZE") or 1)


@dataclass(frozen=True)
class Shard:
    """This process's place among the ``predict`` processes.

    Attributes:
        rank: global rank, 0..world_size-1.
        world_size: number of processes.
        local_rank: rank on this machine (picks ``cuda:<local_rank>``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Shard:
        """The shard ``torchrun`` describes (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``)."""
        env = os.environ
        return cls(
            rank=int(env.get("RANK") or 0),
            world_size=world_size_from_env(),
            local_rank=int(env.get("LOCAL_RANK") or 0),
        )

    def take(self, items: Sequence[T]) -> list[T]:
        """The items of this rank: every ``i``-th with ``i % world_size == rank``."""
        return list(items[self.rank :: self.world_size])

    def device(self, device: str) -> str:
        """``cuda`` becomes ``cuda:<local_rank>`` when several processes share a machine."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world_size > 1 else device


def join(shard: Shard) -> None:
    """Join the gloo process group of a multi-process run (no-op for one process)."""
    if shard.world_size > 1:
        from maskconver.engine.distributed import init_distributed

        init_distributed("cpu")


def leave() -> None:
    """Leave the process group (safe without one)."""
    from maskconver.engine.distributed import cleanup

    cleanup()


def broadcast_verdict(message: str | None) -> str | None:
    """Rank 0's ``message`` on every rank (an error that stops them all, or None)."""
    from maskconver.engine.distributed import is_dist

    if not is_dist():
        return message
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_counts(counts: list[int]) -> list[int]:
    """Element-wise sum over the ranks (also waits for every rank to get here)."""
    import torch

    from maskconver.engine.distributed import all_reduce_sum

    return [int(v) for v in all_reduce_sum(torch.tensor(counts, dtype=torch.int64)).tolist()]


def image_record(
    stem: str,
    image_id: int | str,
    file_name: str,
    panoptic: np.ndarray,
    segments: list[Any],
    *,
    png_name: str,
    category_ids: set[int],
) -> Record:
    """One prediction's ``images`` and ``annotations`` entries, with scores.

    ``data.writer.panoptic_entries``, as ``CocoPanopticWriter`` writes them.

    Raises:
        ValueError: map ids and segment ids differ, or a category id is unknown.
    """
    from maskconver.data.writer import panoptic_entries

    image, annotation = panoptic_entries(
        image_id,
        file_name,
        panoptic,
        segments,
        png_name=png_name,
        category_ids=category_ids,
        scores=True,
    )
    return {"stem": stem, "image": image, "annotation": annotation}


class Journal:
    """One rank's partial predictions file; takes the place of ``CocoPanopticWriter``.

    ``add`` (the writer's signature) journals ``started``, writes the PNG and keeps the record;
    ``finish(stem)`` journals it ``done`` once all its files are written.

    Args:
        output: the output folder.
        rank: this process's rank (names the file).
        category_ids: the ids a segment may have.
    """

    def __init__(self, output: Path, rank: int, category_ids: set[int]) -> None:
        self.output = output
        self.path = output / STATE_DIR / f"rank{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.category_ids = category_ids
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        self._pending: dict[str, Record] = {}

    def _append(self, entry: dict[str, Any], *, sync: bool) -> None:
        assert self._file is not None, f"journal {self.path} is closed"
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def add(
        self,
        image_id: int | str,
        file_name: str,
        panoptic: np.ndarray,
        segments: list[Any],
        *,
        png_name: str,
    ) -> None:
        """Journal the image as started, write ``<png_name>`` and hold its record."""
        from maskconver.data.panoptic_png import write_panoptic_png

        stem = Path(png_name).stem
        record = image_record(
            stem,
            image_id,
            file_name,
            panoptic,
            segments,
            png_name=png_name,
            category_ids=self.category_ids,
        )
        self._append({"started": stem}, sync=False)
        write_panoptic_png(self.output / png_name, panoptic)
        self._pending[stem] = record

    def finish(self, stem: str) -> None:
        """Journal ``stem`` as done (flushed and fsync-ed): every file of it is written."""
        self._append({"done": self._pending.pop(stem)}, sync=True)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_state(output: Path) -> tuple[dict[str, Record], set[str]]:
    """Finished records by stem and stems started, from ``predictions.json`` and the journals.

    Journal lines win over ``predictions.json``, later lines over earlier ones; a line cut off
    by a kill is ignored.
    """
    records: dict[str, Record] = {}
    started: set[str] = set()
    try:
        data = json.loads((output / PREDICTIONS_JSON).read_text(encoding="utf-8"))
        for image, annotation in zip(data["images"], data["annotations"], strict=True):
            stem = Path(str(annotation["file_name"])).stem
            records[stem] = {"stem": stem, "image": image, "annotation": annotation}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        pass
    for journal in sorted((output / STATE_DIR).glob("rank*.jsonl")):
        for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "started" in entry:
                started.add(str(entry["started"]))
            elif "done" in entry:
                records[str(entry["done"]["stem"])] = entry["done"]
    return records, started


def is_finished(record: Record | None, image_id: int | str, path: Path, files: list[Path]) -> bool:
    """Whether ``record`` is this input's (same id and file name) and its ``files`` exist."""
    if record is None:
        return False
    image = record.get("image", {})
    same = image.get("id") == image_id and image.get("file_name") == path.name
    return same and all(f.is_file() for f in files)


def check_resume(
    inputs: list[Path],
    planned: dict[str, list[Path]],
    records: dict[str, Record],
    started: set[str],
    known: set[Path],
) -> None:
    """Refuse a resumed run that would write over an input or a file of no earlier run.

    Args:
        inputs: the input images.
        planned: the files each stem writes.
        records: finished records by stem (``read_state``).
        started: stems a journal saw started.
        known: other files of earlier runs (those a killed run's lock claimed).

    Raises:
        ResumeError: naming the file.
    """
    resolved = {p.resolve() for p in inputs}
    for stem, files in planned.items():
        ours = stem in records or stem in started
        for target in files:
            if target in known:
                continue
            if target.resolve() in resolved:
                raise ResumeError(
                    f"{target} is an input image and would be overwritten; choose another --output"
                )
            if target.exists() and not ours:
                raise ResumeError(
                    f"{target} exists and is not from an earlier predict run; refusing to "
                    "overwrite it (choose another --output)"
                )


def merge(
    output: Path,
    order: list[tuple[str, int | str, Path]],
    planned: dict[str, list[Path]],
    categories: list[dict[str, Any]],
) -> int:
    """Write ``predictions.json`` from the finished records, in input order; returns the count.

    Args:
        output: the output folder.
        order: ``(stem, image_id, input path)`` of every input, in input order.
        planned: the files each stem needs.
        categories: the ``categories`` list (``CategorySet.to_json()``).
    """
    from maskconver.data.writer import atomic_write_json

    records, _ = read_state(output)
    images, annotations = [], []
    for stem, image_id, path in order:
        record = records.get(stem)
        if record is not None and is_finished(record, image_id, path, planned[stem]):
            images.append(record["image"])
            annotations.append(record["annotation"])
    payload = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_json(output / PREDICTIONS_JSON, payload)
    return len(images)


def clear_journals(output: Path) -> None:
    """Remove ``.maskconver-predict/`` (its journals) after a merge or for a fresh run."""
    state = output / STATE_DIR
    for journal in state.glob("rank*.jsonl"):
        journal.unlink(missing_ok=True)
    if state.is_dir() and not any(state.iterdir()):
        state.rmdir()
