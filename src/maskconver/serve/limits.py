"""Request bounds: declared and streamed body size, requests in flight, the body read deadline.

None of these read a body into memory beyond its limit: ``check_declared_length`` refuses a
``Content-Length`` over it before a byte is read, and ``read_body`` counts the bytes as they
stream in and stops at the first chunk past it (a chunked body has no declared length).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

from maskconver.serve.errors import HttpError

HTTP_BAD_REQUEST = 400
HTTP_TIMEOUT = 408
HTTP_TOO_LARGE = 413
HTTP_BUSY = 503
BYTES_PER_MB = 1 << 20


def too_large(limit: int) -> HttpError:
    """The 413 of a body over ``limit`` bytes."""
    return HttpError(
        HTTP_TOO_LARGE, f"request body over the server's limit of {limit / BYTES_PER_MB:g} MB"
    )


def check_declared_length(header: str | None, limit: int) -> None:
    """Refuse a ``Content-Length`` over ``limit`` bytes (413) or not a number (400).

    Args:
        header: the ``Content-Length`` header, or None when absent (chunked upload).
        limit: the largest body accepted, in bytes.
    """
    if header is None:
        return
    text = header.strip()
    if not text.isdigit():
        raise HttpError(HTTP_BAD_REQUEST, f"Content-Length is not a byte count: {header!r}")
    if int(text) > limit:
        raise too_large(limit)


async def read_body(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Read a streamed body whole, refusing it (413) as soon as it passes ``limit`` bytes.

    Args:
        chunks: the body as it arrives (``request.stream()``).
        limit: the largest body accepted, in bytes.

    Returns:
        The body, at most ``limit`` bytes.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


class InFlight:
    """A non-blocking counter of requests being handled: over ``limit`` is a 503, not a queue.

    Args:
        limit: the most requests admitted at once.
        retry_after_s: the ``Retry-After`` seconds of the 503.
    """

    def __init__(self, limit: int, *, retry_after_s: int = 1) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {limit}")
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Requests admitted now."""
        return self._count

    def enter(self) -> None:
        """Admit one request, or raise the 503 (with ``Retry-After``) when ``limit`` are in."""
        with self._lock:
            if self._count >= self.limit:
                raise HttpError(
                    HTTP_BUSY,
                    f"server busy: {self.limit} requests in flight (--max-concurrency); retry "
                    f"in {self.retry_after_s} s",
                    {"Retry-After": str(self.retry_after_s)},
                )
            self._count += 1

    def leave(self) -> None:
        """Release the slot that ``enter`` gave."""
        with self._lock:
            self._count -= 1
