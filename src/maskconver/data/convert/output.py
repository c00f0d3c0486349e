"""Writing a converted split: the output guard, image copies, PNGs + JSON via the writer.

Layout (what ``CocoPanopticDataset(root, split)`` reads)::

    <root>/<split>/<file_name>                      images (copied, hard- or sym-linked)
    <root>/annotations/panoptic_<split>.json
    <root>/annotations/panoptic_<split>/<stem>.png

The guard: no output path may be an input or lie inside an input folder (or contain an input),
and the split's three paths must not exist yet (other splits under the same root are fine);
``overwrite=True`` removes exactly those three first. Nothing is created before the first image,
and the JSON is written (atomically) only when at least one image was converted.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from maskconver.data.coco_panoptic import DatasetError, standard_paths
from maskconver.data.types import CategorySet, SegmentInfo
from maskconver.data.writer import CocoPanopticWriter

IMAGE_MODES = ("copy", "hardlink", "symlink")
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size(source: Path | bytes, where: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file or its bytes as ``load_image`` returns it (EXIF applied).

    Only the header is read. Raises ``DatasetError`` naming ``where`` when it is no image.
    """
    try:
        opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with opened as im:
            width, height = im.size
            orientation = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {where}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {where}: {e}") from e
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return int(height), int(width)


def image_suffix(data: bytes) -> str:
    """The file suffix (``.jpg``, ``.png``, ...) of encoded image bytes, from their format."""
    with Image.open(io.BytesIO(data)) as im:
        fmt = (im.format or "png").lower()
    return ".jpg" if fmt == "jpeg" else f".{fmt}"


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _occupied(path: Path) -> bool:
    return path.is_file() or path.is_symlink() or (path.is_dir() and any(path.iterdir()))


def check_output(targets: Iterable[Path], inputs: Iterable[Path], *, overwrite: bool) -> None:
    """Refuse outputs that touch an input, or that exist while ``overwrite`` is off.

    Raises:
        DatasetError: naming the output path and the input (or the existing path).
    """
    targets = [Path(os.path.abspath(t)) for t in targets]
    inputs = [Path(os.path.abspath(i)) for i in inputs]
    for target in targets:
        for source in inputs:
            if _is_within(source, target):
                raise DatasetError(
                    f"output {target} would write over the input {source}; choose another "
                    "output folder or split"
                )
            if source.is_dir() and _is_within(target, source):
                raise DatasetError(
                    f"output {target} lies inside the input folder {source}; choose an output "
                    "folder outside the input"
                )
    existing = [t for t in targets if _occupied(t)]
    if existing and not overwrite:
        raise DatasetError(
            f"output {existing[0]} already exists and is not empty; pass --overwrite to replace "
            "this split (only its image folder, JSON and PNG folder are removed)"
        )


class DatasetOutput:
    """One split being written: images, panoptic PNGs and (on ``close``) the JSON.

    Args:
        root: dataset root to write.
        split: split name (``train2017``, ...).
        categories: the output categories.
        inputs: files and folders that must not be written over.
        overwrite: replace an existing split (its three paths are removed first).
        image_mode: ``copy``, ``hardlink`` or ``symlink`` for image files given by path.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        categories: CategorySet,
        *,
        inputs: Iterable[Path],
        overwrite: bool = False,
        image_mode: str = "copy",
    ) -> None:
        if image_mode not in IMAGE_MODES:
            raise ValueError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
        self.image_dir, self.json_path, self.png_dir = standard_paths(root, split)
        targets = (self.image_dir, self.json_path, self.png_dir)
        check_output(targets, inputs, overwrite=overwrite)
        if overwrite:
            for target in targets:
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
        self.categories = categories
        self.image_mode = image_mode
        self._writer: CocoPanopticWriter | None = None
        self.images_written = 0

    def add(
        self,
        image_id: int,
        file_name: str,
        panoptic: np.ndarray,
        segments: list[SegmentInfo],
        *,
        image_path: Path | None = None,
        image_bytes: bytes | None = None,
    ) -> None:
        """Write one image (from ``image_path`` or ``image_bytes``) and its ``[H, W]`` id map.

        Raises:
            DatasetError: the file name is taken or the image / PNG cannot be written.
        """
        if (image_path is None) == (image_bytes is None):
            raise ValueError("give exactly one of image_path and image_bytes")
        if self._writer is None:
            self._writer = CocoPanopticWriter(self.json_path, self.png_dir, self.categories)
        destination = self.image_dir / file_name
        if destination.exists() or destination.is_symlink():
            raise DatasetError(f"image id {image_id}: output file name {file_name} is used twice")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if image_bytes is not None:
            destination.write_bytes(image_bytes)
        elif self.image_mode == "symlink":
            destination.symlink_to(Path(os.path.abspath(image_path)))  # type: ignore[arg-type]
        elif self.image_mode == "hardlink":
            os.link(image_path, destination)  # type: ignore[arg-type]
        else:
            shutil.copyfile(image_path, destination)  # type: ignore[arg-type]
        png_name = str(PurePosixPath(file_name).with_suffix(".png"))
        try:
            self._writer.add(image_id, file_name, panoptic, segments, png_name=png_name)
        except ValueError as e:
            destination.unlink()
            raise DatasetError(f"image id {image_id} ({file_name}): {e}") from e
        self.images_written += 1

    def close(self) -> None:
        """Write the JSON when at least one image was added."""
        if self._writer is not None:
            self._writer.close()
