"""Image reading that always gives ``[H, W, 3]`` uint8 RGB, whatever the file's mode.

Handled modes: RGB, L / LA (grayscale), RGBA / P with transparency (alpha composited on black),
P (palette), 1 (bilevel), I;16* / I (16/32-bit integer, scaled to 8 bit by the type's range),
F (float, clipped to 0..255), CMYK and YCbCr. EXIF orientation is applied, so the returned array
is the image as a viewer shows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskconver.errors import MaskconverError

UINT8_MAX = 255
UINT16_MAX = 65535
# "I" images are 32-bit signed, but in practice hold 16-bit data (PIL opens most 16-bit PNGs so)
INT32_IMAGE_ASSUMED_MAX = UINT16_MAX


class ImageReadError(MaskconverError, ValueError):
    """An image file is missing, unreadable or has an unsupported mode (message names the file)."""


def _integer_to_uint8(values: np.ndarray, max_value: int) -> np.ndarray:
    """Scale ``[H, W]`` integers in ``0..max_value`` linearly to uint8 (rounded, clipped)."""
    scaled = np.rint(values.astype(np.float64) * (UINT8_MAX / max_value))
    return np.clip(scaled, 0, UINT8_MAX).astype(np.uint8)


def _high_depth_to_rgb(im: Image.Image) -> np.ndarray:
    """16/32-bit integer or float grayscale image -> ``[H, W, 3]`` uint8."""
    values = np.asarray(im)
    if im.mode == "F":
        gray = np.clip(np.rint(values), 0, UINT8_MAX).astype(np.uint8)
    elif im.mode.startswith("I;16"):
        gray = _integer_to_uint8(values, UINT16_MAX)
    else:  # "I": 32-bit signed; values beyond the assumed 16-bit range are clipped
        gray = _integer_to_uint8(np.clip(values, 0, INT32_IMAGE_ASSUMED_MAX), UINT16_MAX)
    return np.repeat(gray[:, :, None], 3, axis=2)


def pil_to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert an opened PIL image (any supported mode) to ``[H, W, 3]`` uint8 RGB.

    Transparent pixels are composited on black; EXIF orientation is NOT applied here.
    """
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return _high_depth_to_rgb(im)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA")).astype(np.float64)
        alpha = rgba[..., 3:4] / UINT8_MAX
        # composite on black: colour * alpha
        return np.rint(rgba[..., :3] * alpha).astype(np.uint8)
    return np.asarray(im.convert("RGB")).copy()


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB, EXIF orientation applied.

    Args:
        path: image file (any format PIL reads).

    Returns:
        ``[H, W, 3]`` uint8 RGB array (H, W after EXIF transposition).

    Raises:
        ImageReadError: the file is missing, truncated/corrupt or not an image; the message names
            the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            return pil_to_rgb_array(oriented if oriented is not None else opened)
    except UnidentifiedImageError as e:
        raise ImageReadError(f"not a readable image file: {path} ({e})") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(
            f"image {path} is over Pillow's decompression-bomb limit ({e}); if you trust it, "
            "raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from e
    except MemoryError as e:
        raise ImageReadError(f"image {path} does not fit in memory") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e


def save_image(path: str | Path, image: np.ndarray, *, jpeg_quality: int = 95) -> None:
    """Write an ``[H, W, 3]`` RGB or ``[H, W]`` grey uint8 array; the format follows the suffix.

    Parent folders are created. Raises ``ValueError`` naming the file for any other array.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise ValueError(
            f"save_image: expected an [H, W(, 3)] uint8 image for {path}, got {image.dtype} "
            f"{image.shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        pil.save(path, quality=jpeg_quality)
    else:
        pil.save(path)
