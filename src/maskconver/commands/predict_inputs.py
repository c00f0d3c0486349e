"""Where ``maskconver predict`` reads and writes: the inputs, their output names, the checks.

* inputs: ``collect_images`` (files and folders, each skipped entry named), ``unique_stems``
  (no two outputs collide), ``image_ids`` (the stems, or a COCO ``images`` list's ids with its
  sizes checked against the images);
* outputs: ``planned_outputs`` (each stem's files), ``check_output`` (nothing is written over
  an input or a file no earlier run wrote; an earlier or killed run's files are replaced only
  with ``--overwrite``), ``OutputLock`` (one ``predict`` per folder; a killed run's planned
  files are known to the next one: ``killed_run_files``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from maskconver.locking import LockError, folder_lock, unfinished_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PREDICTIONS_JSON = "predictions.json"
LOCK_FILE = ".maskconver-predict.lock"


class PredictError(Exception):
    """A refused ``predict`` (the message says why and what to do)."""


def collect_images(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (non-recursive) into image paths, in a stable order.

    Returns:
        ``(paths, problems)``: image files found, and messages for inputs that do not exist,
        folders without images and entries skipped (a dangling or looping symlink), each named.
    """
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        if item.is_dir():
            named = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            found = [p for p in named if p.is_file()]
            problems.extend(f"skipped {p}: {_not_a_file(p)}" for p in named if not p.is_file())
            if not found:
                problems.append(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            problems.append(f"input not found: {item}")
    return paths, problems


def _not_a_file(path: Path) -> str:
    if path.is_symlink():
        return "a dangling or looping symlink"
    return "a folder" if path.is_dir() else "not a regular file"


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, with ``_2``, ``_3``... appended to repeats so outputs never collide."""
    seen: dict[str, int] = {}
    out: list[str] = []
    taken: set[str] = set()
    for path in paths:
        stem = path.stem
        count = seen.get(stem, 0)
        name = stem
        while name in taken:
            count += 1
            name = f"{stem}_{count + 1}"
        seen[stem] = count
        taken.add(name)
        out.append(name)
    return out


def image_ids(paths: list[Path], stems: list[str], info: Path | None) -> list[int | str]:
    """Ids by file name from a COCO ``images`` list, else the stems."""
    if info is None:
        return list(stems)
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
        by_name = {str(im["file_name"]): im["id"] for im in data["images"]}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise PredictError(
            f"--image-info {info}: not a COCO JSON with an 'images' list: {e}"
        ) from e
    missing = [p.name for p in paths if p.name not in by_name]
    if missing:
        raise PredictError(
            f"--image-info {info} has no image named {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    check_info_sizes(paths, {str(im["file_name"]): im for im in data["images"]}, info)
    return [by_name[p.name] for p in paths]


EXIF_ORIENTATION = 0x0112  # images are read upright (``load_image``): orientations 5-8 turn
EXIF_QUARTER_TURNS = (5, 6, 7, 8)


def check_info_sizes(paths: list[Path], by_name: dict[str, Any], info: Path) -> None:
    """Refuse ``--image-info`` sizes (``height``/``width``) that disagree with the images.

    Only image headers are read; an unreadable image is left to the prediction step.
    """
    from PIL import Image

    wrong = []
    for path in paths:
        entry = by_name[path.name]
        said = (entry.get("height"), entry.get("width")) if isinstance(entry, dict) else None
        if said is None or None in said:
            continue
        try:
            with Image.open(path) as im:
                width, height = im.size
                if im.getexif().get(EXIF_ORIENTATION) in EXIF_QUARTER_TURNS:  # read upright
                    width, height = height, width
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue
        if tuple(said) != (height, width):
            wrong.append(f"{path.name} is {height}x{width} but listed as {said[0]}x{said[1]}")
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise PredictError(
            f"--image-info {info} disagrees with the images (H x W): {wrong[0]}{more}; its "
            "predictions would not match that ground truth"
        )


def planned_outputs(output: Path, stems: list[str], overlay: bool) -> dict[str, list[Path]]:
    """The files each stem will write."""
    return {
        stem: [output / f"{stem}.png", *([output / f"{stem}_overlay.jpg"] if overlay else [])]
        for stem in stems
    }


def previous_run_files(output: Path) -> set[Path]:
    """Files an earlier run listed in ``predictions.json`` or a killed run claimed."""
    path = output / PREDICTIONS_JSON
    killed = killed_run_files(output)
    if not path.is_file():
        return killed
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = [str(a["file_name"]) for a in data.get("annotations", [])]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return killed
    files = set(killed)
    for name in names:
        files.add(output / name)
        files.add(output / f"{Path(name).stem}_overlay.jpg")
    return {f for f in files if f.parent == output}


def check_output(
    output: Path, inputs: list[Path], planned: dict[str, list[Path]], overwrite: bool
) -> set[Path]:
    """Refuse outputs that would destroy anything; returns the earlier run's files to remove."""
    earlier = previous_run_files(output)
    if (output / PREDICTIONS_JSON).exists() and not overwrite:
        raise PredictError(
            f"{output} already holds predictions ({PREDICTIONS_JSON}); pass --overwrite to "
            "replace that run or choose another --output"
        )
    killed = sorted(f for f in killed_run_files(output) if f.exists())
    if killed and not overwrite:
        raise PredictError(
            f"{output} holds {len(killed)} file(s) of a predict run that did not finish (e.g. "
            f"{killed[0].name}); pass --overwrite to replace them or choose another --output"
        )
    resolved_inputs = {p.resolve() for p in inputs}
    for files in planned.values():
        for target in files:
            if target.resolve() in resolved_inputs:
                raise PredictError(
                    f"{target} is an input image and would be overwritten; choose another --output"
                )
            if target.exists() and target not in earlier:
                raise PredictError(
                    f"{target} exists and is not from an earlier predict run; refusing to "
                    "overwrite it (choose another --output)"
                )
    return earlier if overwrite else set()


class OutputLock:
    """``<output>/.maskconver-predict.lock``: one ``predict`` per folder at a time.

    The shared ``locking.OutputLock`` (stale locks of dead or reused pids are replaced); it
    records the files this run will write, so a killed run's files are known to the next one
    (``killed_run_files``) and ``--overwrite`` can remove them.
    """

    def __init__(self, output: Path, planned: dict[str, list[Path]] | None = None) -> None:
        names = [p.name for files in (planned or {}).values() for p in files]
        self.lock = folder_lock(output, "predict", [*names, PREDICTIONS_JSON])
        self.path = self.lock.path

    def __enter__(self) -> OutputLock:
        try:
            self.lock.__enter__()
        except LockError as e:
            raise PredictError(str(e)) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(*exc)


def killed_run_files(output: Path) -> set[Path]:
    """Files a killed ``predict`` into ``output`` claimed (its stale lock or the journal)."""
    return unfinished_files(output / LOCK_FILE)
