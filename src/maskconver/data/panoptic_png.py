"""COCO panoptic PNG encoding: segment id = R + 256 G + 256^2 B."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maskconver.data.types import PADDING


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> ``[H, W]`` int32 segment ids."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an [H, W, 3] colour array, got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` non-negative ids (< 256^3) -> ``[H, W, 3]`` uint8 (padding -1 becomes 0)."""
    ids = np.where(ids == PADDING, 0, ids).astype(np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("segment ids must lie in [0, 256^3) to be stored in a PNG")
    out = np.empty((*ids.shape, 3), dtype=np.uint8)
    out[..., 0] = ids % 256
    out[..., 1] = (ids // 256) % 256
    out[..., 2] = ids // (256 * 256)
    return out


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Read a COCO panoptic PNG into ``[H, W]`` int32 ids; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"panoptic PNG not found: {path}")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read panoptic PNG {path}: {e}") from e
    return rgb2id(rgb)


def write_panoptic_png(path: str | Path, ids: np.ndarray) -> None:
    """Write ``[H, W]`` ids as a COCO panoptic PNG (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(id2rgb(ids)).save(path)
