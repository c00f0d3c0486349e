"""Overlap for ``maskconver predict`` on many images: read ahead and write behind the network.

* ``prefetch(items, load, depth=...)`` yields ``load(item)`` for every item, in order, exactly
  once, while one background thread loads up to ``depth`` items ahead (a bounded queue: memory
  stays at ``depth`` decoded images whatever the folder's size).
* ``load_input`` reads and transforms one input of ``predict`` (an unreadable file becomes a
  ``Loaded`` with its error); ``batches`` groups them.
* ``WriteBehind(depth)`` runs submitted calls in order on one background thread, at most
  ``depth`` waiting; ``close()`` waits for them and re-raises the first failure.

Decoding (Pillow), resizing and PNG / JPEG encoding release the GIL for most of their time, so on
a CPU where the network does not use every core a thread suffices; measured against process
workers in ``docs/profile.md`` ("Folder throughput").
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_DEPTH = 8
POLL_S = 0.1  # how often a blocked producer checks whether the consumer stopped


class _Failure:
    """An exception raised in the background thread, handed to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def prefetch(
    items: Iterable[T], load: Callable[[T], R], *, depth: int = DEFAULT_DEPTH
) -> Iterator[R]:
    """``load(item)`` for every item, in order, computed up to ``depth`` items ahead.

    Args:
        items: what to load (e.g. paths).
        load: one item -> its loaded value; an exception it raises is re-raised by the iterator
            at that item's place (catch expected errors, such as unreadable files, inside it).
        depth: how many loaded items may wait; ``0`` loads each item when it is asked for
            (no thread).

    Yields:
        ``load(item)`` in the order of ``items``.
    """
    if depth < 1:
        for item in items:
            yield load(item)
        return
    waiting: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                waiting.put(value, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(load(item)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failure(e))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="maskconver-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value = waiting.get()
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.error
            yield value
    finally:
        stop.set()  # the consumer stopped early (or finished): let the producer end
        thread.join()


class WriteBehind:
    """Run calls in submission order on one background thread (at most ``depth`` waiting).

    Args:
        depth: calls that may wait before ``submit`` blocks; ``0`` runs each call at once in
            the caller's thread.
    """

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        self.depth = depth
        self._error: BaseException | None = None
        self._calls: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._work, name="maskconver-write", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is _DONE:
                return
            if self._error is None:  # after a failure the rest is dropped
                try:
                    call()
                except BaseException as e:  # noqa: BLE001 - re-raised by submit / close
                    self._error = e

    def submit(self, call: Callable[[], object]) -> None:
        """Queue ``call``; raises the failure of an earlier call, if any."""
        if self._error is not None:
            raise self._error
        if self._thread is None:
            call()
            return
        self._calls.put(call)

    def close(self) -> None:
        """Wait for every queued call; raise the first failure."""
        if self._thread is not None:
            self._calls.put(_DONE)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Loaded:
    """One input read and transformed ahead of the network (``prefetch``).

    Attributes:
        path: the input file.
        stem: its unique output stem.
        image_id: its id in ``predictions.json``.
        image: ``[H, W, 3]`` uint8 RGB as read (the overlay's background); None if unreadable.
        sample: the eval-transformed sample the network takes; None if unreadable.
        error: why the file could not be read.
    """

    path: Path
    stem: str
    image_id: int | str
    image: Any = None
    sample: Any = None
    error: str | None = None


def load_input(predictor: Any, item: tuple[Path, str, int | str]) -> Loaded:
    """Decode and transform one input; an unreadable file becomes a ``Loaded`` with its error."""
    from maskconver.data.image_io import ImageReadError, load_image

    path, stem, image_id = item
    try:
        image = load_image(path)
    except ImageReadError as e:
        return Loaded(path, stem, image_id, error=str(e))
    sample = predictor.prepare(image)
    sample.file_name = path.name  # a failure during prediction names the file
    return Loaded(path, stem, image_id, image=image, sample=sample)


def batches(items: Iterable[Loaded], size: int) -> Iterator[list[Loaded]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch: list[Loaded] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
