"""Label PNGs whose pixel values are class or object ids (VOC, semantic stuff maps).

Palette (``P``) PNGs are read as their palette indices, not their colours (VOC's
SegmentationClass / SegmentationObject); grayscale 8-bit (``L``), bilevel and 16/32-bit
integer PNGs as their values. Colour PNGs are refused: their values are not ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maskconver.data.coco_panoptic import DatasetError

LABEL_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L")


def read_label_png(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``[H, W]`` int64 pixel values of a label PNG (palette indices for ``P`` mode).

    Args:
        path: the PNG.
        shape: the ``(H, W)`` it must have (its image's size), or None.

    Raises:
        DatasetError: missing / unreadable file, a colour image, or the wrong size.
    """
    try:
        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
            if shape is not None and (height, width) != tuple(shape):  # before decoding pixels
                raise DatasetError(
                    f"label PNG {path} is {(height, width)} (H, W) but its image is {tuple(shape)}"
                )
            values = np.asarray(im).astype(np.int64) if mode in LABEL_MODES else None
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"label PNG not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read label PNG {path}: {e}") from e
    if values is None:
        raise DatasetError(
            f"{path} is a {mode} image; label PNGs must hold ids as palette indices (P) or gray "
            "values (L, 16-bit), not colours"
        )
    if shape is not None and values.shape != tuple(shape):
        raise DatasetError(
            f"label PNG {path} is {values.shape} (H, W) but its image is {tuple(shape)}"
        )
    return values
