"""The image of a request: a multipart field ``file`` or a raw body, decoded in memory.

Nothing is written to disk: the multipart parser's callbacks collect the parts into memory (the
body is already bounded by ``limits.read_body``). Decoding opens only the formats in
``ALLOWED_FORMATS``, reads the header's size first and refuses more than ``max_pixels`` pixels
before any pixel is decompressed (so a decompression bomb costs nothing), then decodes with
EXIF orientation applied into ``[H, W, 3]`` uint8 RGB (``data.image_io.pil_to_rgb_array``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskconver.data.image_io import pil_to_rgb_array
from maskconver.serve.errors import HttpError

HTTP_BAD_REQUEST = 400
HTTP_UNSUPPORTED = 415
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
FILE_FIELD = "file"
MAX_PARTS = 16  # form parts accepted in one request
RAW_TYPES = ("application/octet-stream",)  # besides image/*
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


def _form_parts(body: bytes, boundary: bytes) -> list[_Part]:
    """The parts of a ``multipart/form-data`` body, in memory (400 when it does not parse)."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser

    parts: list[_Part] = []
    header = [b"", b""]  # field, value of the header being read

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise HttpError(HTTP_BAD_REQUEST, f"multipart form with over {MAX_PARTS} parts")
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1].headers[header[0].strip().lower()] = header[1].strip()
        header[0] = header[1] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise HttpError(HTTP_BAD_REQUEST, f"malformed multipart form: {e}") from e
    return parts


def image_bytes(body: bytes, content_type: str | None) -> tuple[bytes, str]:
    """The uploaded image's bytes and a name for messages, from a request body.

    Args:
        body: the whole request body.
        content_type: its ``Content-Type`` header: ``multipart/form-data`` (the image is the
            field ``file``), ``image/*`` or ``application/octet-stream`` (the body is the image),
            or None (taken as a raw body).

    Returns:
        ``(data, name)``: the image file's bytes and ``"file 'x.jpg'"`` or ``"request body"``.
    """
    from python_multipart.multipart import parse_options_header

    kind, params = parse_options_header(content_type or "")
    media = kind.decode("latin-1").lower()
    if media == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise HttpError(HTTP_BAD_REQUEST, "multipart/form-data without a boundary")
        if not body:
            raise HttpError(HTTP_BAD_REQUEST, "empty request body: send an image")
        for part in _form_parts(body, boundary):
            disposition = part.headers.get(b"content-disposition", b"")
            _, options = parse_options_header(disposition)
            if options.get(b"name") == FILE_FIELD.encode():
                filename = options.get(b"filename", b"").decode("utf-8", "replace")
                name = f"file {filename!r}" if filename else f"field {FILE_FIELD!r}"
                if not part.data:
                    raise HttpError(HTTP_BAD_REQUEST, f"the uploaded {name} is empty (0 bytes)")
                return bytes(part.data), name
        raise HttpError(HTTP_BAD_REQUEST, f"multipart form without a {FILE_FIELD!r} field")
    if media and not media.startswith("image/") and media not in RAW_TYPES:
        raise HttpError(
            HTTP_UNSUPPORTED,
            f"unsupported Content-Type {media}: send the image as the body (image/*, "
            f"application/octet-stream) or as the field {FILE_FIELD!r} of multipart/form-data",
        )
    if not body:
        raise HttpError(HTTP_BAD_REQUEST, "empty request body: send an image")
    return body, "request body"


def decode_image(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded image to ``[H, W, 3]`` uint8 RGB (EXIF orientation applied).

    Args:
        data: the file's bytes.
        name: what to call it in messages (``"file 'x.jpg'"``).
        max_pixels: the largest ``width * height`` accepted; checked on the header.

    Returns:
        ``[H, W, 3]`` uint8 RGB.

    Raises:
        HttpError: 415 for bytes that are no image in ``ALLOWED_FORMATS``; 400 for a truncated
            or corrupt image or one over ``max_pixels``.
    """
    try:
        with warnings.catch_warnings():
            # our own limit (checked next) replaces Pillow's warning; its error (at twice
            # Image.MAX_IMAGE_PIXELS) stays as a backstop
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise HttpError(
                        HTTP_BAD_REQUEST,
                        f"{name}: image of {width} x {height} = {width * height} pixels is over "
                        f"the server's limit of {max_pixels} pixels",
                    )
                opened.load()
                oriented = ImageOps.exif_transpose(opened)
                return pil_to_rgb_array(oriented if oriented is not None else opened)
    except UnidentifiedImageError as e:
        raise HttpError(
            HTTP_UNSUPPORTED,
            f"{name} is not an image in a supported format ({', '.join(ALLOWED_FORMATS)})",
        ) from e
    except Image.DecompressionBombError as e:
        raise HttpError(HTTP_BAD_REQUEST, f"{name}: decompression bomb refused ({e})") from e
    except MemoryError as e:
        raise HttpError(HTTP_BAD_REQUEST, f"{name}: image does not fit in memory") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise HttpError(HTTP_BAD_REQUEST, f"{name}: truncated or corrupt image ({e})") from e
