"""The one error type of the server: an HTTP status, a one-line reason and optional headers."""

from __future__ import annotations

from maskconver.errors import MaskconverError


class HttpError(MaskconverError):
    """A refused request; the app answers ``status`` with ``{"error": message}``.

    Args:
        status: the HTTP status code (400, 408, 413, 415, 503...).
        message: the reason, one line.
        headers: extra response headers (``Retry-After`` of a 503).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())
        self.headers = dict(headers or {})
