"""``maskconver predict``: panoptic predictions for image files or folders.

Writes into ``--output``: ``<stem>.png`` (COCO panoptic id map), one ``predictions.json`` (COCO
panoptic ``images`` + ``annotations`` with every segment's ``score`` + ``categories``) and
``<stem>_overlay.jpg`` unless ``--no-overlay``. The stem is the image's file stem, made unique
with ``_2``, ``_3``... when two inputs share one; image ids are the stems, or the numeric ids of
a COCO image list given with ``--image-info`` (so the predictions score against that ground
truth). Unreadable images (also those over Pillow's decompression-bomb limit) are reported and
skipped; the exit code is 0 when at least one image succeeded. Reading and resizing the next
images and writing the finished ones run on background threads beside the network (bounded
queues, ``commands.pipeline``; ``--no-prefetch`` turns them off); the throughput (images/s) is
printed at the end.

Safe output: ``predictions.json`` lists exactly the files this run wrote and is written
atomically at the end; an output folder that already holds a run is refused unless
``--overwrite`` (which first removes the files that run listed); a file the run would write over
that is not its own (an input image, anything else) is always refused; a second ``predict`` into
the same folder at the same time fails at once (a lock file).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from maskconver.commands.common import (
    add_model_source,
    check_model_source,
    load_exported,
    positive_int,
    probability,
)
from maskconver.errors import EXIT_FAILED, EXIT_OK, fail
from maskconver.files import process_alive

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_BATCH_SIZE = 8
PREDICTIONS_JSON = "predictions.json"
LOCK_FILE = ".maskconver-predict.lock"
PREFETCH_DEPTH = 8  # images read ahead / waiting to be written (at least 2 batches)


class PredictError(Exception):
    """A refused ``predict`` (the message says why and what to do)."""


def register(subparsers: Any) -> None:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict",
        help="panoptic predictions (COCO PNG + JSON + overlays) for images or folders",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source(p)
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        type=Path,
        help=f"image files and/or folders (non-recursive; {', '.join(IMAGE_SUFFIXES)})",
    )
    p.add_argument("--output", required=True, type=Path, help="output folder")
    p.add_argument(
        "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="images per forward"
    )
    p.add_argument("--no-overlay", action="store_true", help="skip the <stem>_overlay.jpg pictures")
    p.add_argument(
        "--no-prefetch",
        action="store_true",
        help="read, predict and write one batch after another (no background threads)",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA ones")
    p.add_argument(
        "--score-threshold",
        type=probability,
        default=None,
        help="keep proposals scoring above this, in [0, 1] (default: the model's "
        "model.<meta_architecture>.merge.object_threshold)",
    )
    p.add_argument(
        "--overlap-threshold",
        type=probability,
        default=None,
        help="the merge's overlap threshold, in [0, 1] (default: the model's "
        "model.<meta_architecture>.merge.overlap_threshold)",
    )
    p.add_argument(
        "--image-info",
        type=Path,
        default=None,
        help="a COCO JSON whose 'images' give numeric ids by file_name (e.g. the ground truth)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier predict run in --output (only the files it listed are removed)",
    )
    p.set_defaults(func=run)


def collect_images(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (non-recursive) into image paths, in a stable order.

    Returns:
        ``(paths, problems)``: image files found, and messages for inputs that do not exist or
        folders without images.
    """
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(
                p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                problems.append(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            problems.append(f"input not found: {item}")
    return paths, problems


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
    return [by_name[p.name] for p in paths]


def planned_outputs(output: Path, stems: list[str], overlay: bool) -> dict[str, list[Path]]:
    """The files each stem will write."""
    return {
        stem: [output / f"{stem}.png", *([output / f"{stem}_overlay.jpg"] if overlay else [])]
        for stem in stems
    }


def previous_run_files(output: Path) -> set[Path]:
    """Files an earlier run listed in ``predictions.json`` (PNGs and their overlays)."""
    path = output / PREDICTIONS_JSON
    if not path.is_file():
        return set()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = [str(a["file_name"]) for a in data.get("annotations", [])]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return set()
    files = set()
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
    """``<output>/.maskconver-predict.lock`` (O_EXCL): one ``predict`` per folder at a time."""

    def __init__(self, output: Path) -> None:
        self.path = output / LOCK_FILE

    def __enter__(self) -> OutputLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and process_alive(owner):
                    raise PredictError(
                        f"another maskconver predict (pid {owner}) is writing into "
                        f"{self.path.parent}; wait for it or choose another --output"
                    ) from None
                self.path.unlink(missing_ok=True)  # a stale lock of a dead process
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise PredictError(f"cannot lock {self.path.parent} (remove {self.path})")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def load_predictor(args: argparse.Namespace) -> Any:
    """The ``Predictor`` of ``--checkpoint`` (torch) or ``--model`` (onnxruntime)."""
    from maskconver.predictor import Predictor

    if args.model:
        predictor = load_exported(args.model, threads=args.threads)
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=args.device, use_ema=not args.no_ema, optimize=args.optimize
        )
    post: Any = predictor.postprocessor
    if args.score_threshold is not None:
        post.object_threshold = args.score_threshold
    if args.overlap_threshold is not None:
        post.overlap_threshold = args.overlap_threshold
    return predictor


def run(args: argparse.Namespace) -> int:
    """Predict every input image; returns 0 if any succeeded."""
    if args.batch_size < 1:
        return fail("predict", f"--batch-size must be >= 1, got {args.batch_size}")
    problem = check_model_source(args)
    source = args.checkpoint or args.model
    if problem is None and not Path(source).exists():
        problem = f"{'checkpoint' if args.checkpoint else 'model'} not found: {source}"
    if problem:
        return fail("predict", problem)
    paths, problems = collect_images(list(args.input))
    for message in problems:
        print(f"warning: {message}", file=sys.stderr)
    if not paths:
        return fail("predict", "no input images")
    output: Path = args.output
    if output.exists() and not output.is_dir():
        return fail("predict", f"--output {output} is a file, not a folder")
    stems = unique_stems(paths)
    planned = planned_outputs(output, stems, overlay=not args.no_overlay)
    try:
        ids = image_ids(paths, stems, args.image_info)
        stale = check_output(output, paths, planned, args.overwrite)
        output.mkdir(parents=True, exist_ok=True)
        with OutputLock(output):
            stale = check_output(output, paths, planned, args.overwrite)  # re-check, locked
            predictor = load_predictor(args)
            for path in stale:
                path.unlink(missing_ok=True)
            (output / PREDICTIONS_JSON).unlink(missing_ok=True)
            done, failed = _predict_all(predictor, paths, stems, ids, output, args)
    except PredictError as e:
        return fail("predict", str(e))
    print(f"{done} image(s) predicted into {output} ({PREDICTIONS_JSON}, <stem>.png", end="")
    print(")" if args.no_overlay else ", <stem>_overlay.jpg)")
    if failed:
        print(f"{failed} image(s) could not be read and were skipped", file=sys.stderr)
    return EXIT_OK if done > 0 else EXIT_FAILED


def _predict_all(
    predictor: Any,
    paths: list[Path],
    stems: list[str],
    ids: list[int | str],
    output: Path,
    args: argparse.Namespace,
) -> tuple[int, int]:
    """Predict in batches; the JSON (written last, atomically) lists exactly what was written.

    Reading and transforming the next images (``prefetch``) and writing the finished ones
    (``WriteBehind``) run on background threads beside the network; the throughput is printed.
    """
    from tqdm import tqdm

    from maskconver.commands.pipeline import Loaded, WriteBehind, batches, load_input, prefetch
    from maskconver.data.image_io import save_image
    from maskconver.data.writer import CocoPanopticWriter
    from maskconver.inference import predict_samples
    from maskconver.visualize import overlay

    writer = CocoPanopticWriter(
        output / PREDICTIONS_JSON, output, predictor.categories, scores=True
    )
    done = failed = 0
    depth = 0 if args.no_prefetch else max(PREFETCH_DEPTH, 2 * args.batch_size)

    def write(item: Loaded, pred: Any) -> None:
        writer.add(
            item.image_id, item.path.name, pred.panoptic, pred.segments, png_name=f"{item.stem}.png"
        )
        if not args.no_overlay:
            picture = overlay(item.image, pred.panoptic, pred.segments, predictor.categories)
            save_image(output / f"{item.stem}_overlay.jpg", picture)

    # disable=None: no bar when stderr is not a terminal (a log file gets no carriage returns)
    bar = tqdm(total=len(paths), desc="predict", unit="img", dynamic_ncols=True, disable=None)
    start = time.perf_counter()
    behind = WriteBehind(depth)
    try:
        loaded = prefetch(
            zip(paths, stems, ids, strict=True),
            functools.partial(load_input, predictor),
            depth=depth,
        )
        for batch in batches(loaded, args.batch_size):
            good = []
            for item in batch:
                if item.error is None:
                    good.append(item)
                    continue
                failed += 1
                tqdm.write(f"skipped: {item.error}", file=sys.stderr)
                bar.update(1)
            if not good:
                continue
            predictions = predict_samples(
                predictor.model, predictor.postprocessor, [item.sample for item in good]
            )
            for item, pred in zip(good, predictions, strict=True):
                behind.submit(functools.partial(write, item, pred))
                done += 1
            bar.update(len(good))
        behind.close()  # every image written (a failure to write is raised here)
    finally:
        bar.close()
        try:
            behind.close()
        finally:
            writer.close()  # also after a failure: the JSON lists the images that were written
    seconds = time.perf_counter() - start
    if done:
        print(f"{done / seconds:.2f} images/s ({done} in {seconds:.1f} s)")
    return done, failed
