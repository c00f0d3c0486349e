"""COCO panoptic PNG encoding: segment id = R + 256 G + 256^2 B.

PNGs are decoded with pyspng (libspng, about 3x faster than Pillow) when it is installed and the
file is 8-bit truecolour (RGB or RGBA, what every COCO panoptic writer produces); anything else
(palette, grayscale, 16-bit, pyspng missing or failing) goes through Pillow, with the same result.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from maskconver.data.types import PADDING

try:  # optional fast decoder; Pillow is the reference and the fallback
    import pyspng
except ImportError:  # pragma: no cover - depends on the environment
    pyspng = None

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR is the first chunk: signature (8), length (4), b"IHDR" (4), width (4), height (4), then
# the bit depth and colour type bytes
IHDR_TAG = slice(12, 16)
BIT_DEPTH_AT, COLOUR_TYPE_AT = 24, 25
SPNG_COLOUR_TYPES = (2, 6)  # truecolour, truecolour + alpha: decoded as RGB8 / RGBA8
SPNG_BIT_DEPTH = 8
BYTES_PER_ID = 3


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` (or ``[H, W, 4]``, alpha ignored) colours -> ``[H, W]`` int32 segment ids."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an [H, W, 3] colour array, got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return _uint8_rgb_to_ids(rgb).view(np.int32)  # ids < 2^24: same values
    rgb = rgb[..., :3].astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _uint8_rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, C >= 3]`` uint8 -> ``[H, W]`` uint32 ``R + 256 G + 256^2 B`` in one pass.

    On a little-endian machine the 4 bytes from the start of pixel k of a packed RGB buffer read
    as one uint32 are ``R + 256 G + 256^2 B + 256^3 R'`` (R' the next pixel's red), so a uint32
    view with a 3-byte stride masked to its low 24 bits is the id; the last pixel, whose word would
    run past the buffer, is done apart.
    """
    height, width = rgb.shape[:2]
    num = height * width
    if (
        sys.byteorder != "little"
        or rgb.shape[2] != BYTES_PER_ID
        or not rgb.flags.c_contiguous
        or num == 0
    ):
        channels = rgb[..., :3].astype(np.uint32)
        ids = channels[..., 2] << 16
        ids |= channels[..., 1] << 8
        ids |= channels[..., 0]
        return ids
    flat = rgb.reshape(-1)
    words = np.ndarray((num - 1,), np.uint32, buffer=flat, strides=(BYTES_PER_ID,))
    ids = np.empty(num, np.uint32)
    np.bitwise_and(words, np.uint32(0xFFFFFF), out=ids[:-1])
    last = flat[-BYTES_PER_ID:].astype(np.uint32)
    ids[-1] = last[0] | last[1] << 8 | last[2] << 16
    return ids.reshape(height, width)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` non-negative ids (< 256^3) -> ``[H, W, 3]`` uint8 (padding -1 becomes 0)."""
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if low < PADDING or high >= 256**3:  # PADDING is -1: nothing below it
        raise ValueError("segment ids must lie in [0, 256^3) to be stored in a PNG")
    # little-endian uint32 bytes are (R, G, B, 0) = (id % 256, id / 256 % 256, id / 65536)
    packed = ids.astype("<u4")  # one 4-byte copy; padding -1 becomes 0xFFFFFFFF ...
    if low < 0:
        packed[ids == PADDING] = 0  # ... and then void
    return packed.view(np.uint8).reshape(*ids.shape, 4)[..., :3].copy()


def decode_png_rgb(path: str | Path) -> np.ndarray:
    """Decode a PNG into ``[H, W, 3]`` uint8 RGB (alpha dropped, palettes expanded).

    pyspng when available and the file is 8-bit RGB/RGBA, Pillow otherwise (or when pyspng
    fails); both give the same pixels.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be decoded (the message names it).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise FileNotFoundError(f"panoptic PNG not found: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot read panoptic PNG {path}: {e}") from e
    rgb = _decode_spng(data)
    if rgb is not None:
        return rgb
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError as e:
        raise ValueError(f"panoptic PNG {path} is over Pillow's decompression-bomb limit") from e
    except (OSError, SyntaxError, ValueError, MemoryError, EOFError) as e:
        raise ValueError(f"cannot read panoptic PNG {path}: {e}") from e


def _decode_spng(data: bytes) -> np.ndarray | None:
    """``[H, W, 3]`` uint8 from pyspng, or None where Pillow must decode instead."""
    if (
        pyspng is None
        or len(data) <= COLOUR_TYPE_AT
        or not data.startswith(PNG_SIGNATURE)
        or data[IHDR_TAG] != b"IHDR"
        or data[BIT_DEPTH_AT] != SPNG_BIT_DEPTH
        or data[COLOUR_TYPE_AT] not in SPNG_COLOUR_TYPES
    ):
        return None
    try:
        rgb = pyspng.load(data)
    except Exception:  # noqa: BLE001 - any pyspng failure: let Pillow decode (and report) it
        return None
    if rgb.ndim != 3 or rgb.dtype != np.uint8 or rgb.shape[2] not in (3, 4):
        return None
    return rgb if rgb.shape[2] == BYTES_PER_ID else rgb[..., :BYTES_PER_ID]


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Read a COCO panoptic PNG into ``[H, W]`` int32 ids; errors name the file."""
    return rgb2id(decode_png_rgb(path))


def write_panoptic_png(path: str | Path, ids: np.ndarray) -> None:
    """Write ``[H, W]`` ids as a COCO panoptic PNG (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(id2rgb(ids)).save(path)
