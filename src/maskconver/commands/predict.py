"""``maskconver predict``: panoptic predictions for image files or folders.

Writes into ``--output``: ``<stem>.png`` (COCO panoptic id map), one ``predictions.json`` (COCO
panoptic ``annotations`` + ``images`` + ``categories``; image id = file stem, made unique with a
``_<n>`` suffix when two inputs share a stem) and ``<stem>_overlay.jpg`` unless ``--no-overlay``.
Unreadable images are reported and skipped; the exit code is 0 when at least one image succeeded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from maskconver.commands.common import add_model_source, check_model_source

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_BATCH_SIZE = 8


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
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per forward")
    p.add_argument("--no-overlay", action="store_true", help="skip the <stem>_overlay.jpg pictures")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA ones")
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


def run(args: argparse.Namespace) -> int:
    """Predict every input image; returns 0 if any succeeded."""
    from maskconver.data.image_io import ImageReadError, load_image, save_image
    from maskconver.data.writer import CocoPanopticWriter
    from maskconver.predictor import Predictor
    from maskconver.visualize import overlay

    if args.batch_size < 1:
        print(
            f"maskconver predict: error: --batch-size must be >= 1, got {args.batch_size}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    problem = check_model_source(args)
    source = args.checkpoint or args.model
    if problem is None and not Path(source).exists():
        problem = f"{'checkpoint' if args.checkpoint else 'model'} not found: {source}"
    if problem:
        print(f"maskconver predict: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    paths, problems = collect_images(list(args.input))
    for message in problems:
        print(f"warning: {message}", file=sys.stderr)
    if not paths:
        print("maskconver predict: error: no input images", file=sys.stderr)
        return EXIT_USAGE
    if args.model:
        predictor = Predictor.from_onnx(args.model, threads=args.threads)
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=args.device, use_ema=not args.no_ema
        )
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    writer = CocoPanopticWriter(output / "predictions.json", output, predictor.categories)
    stems = unique_stems(paths)
    failed: list[str] = []
    done = 0
    bar = tqdm(total=len(paths), desc="predict", unit="img", dynamic_ncols=True)
    for start in range(0, len(paths), args.batch_size):
        batch: list[tuple[Path, str, Any]] = []
        for path, stem in zip(
            paths[start : start + args.batch_size], stems[start : start + args.batch_size]
        ):
            try:
                batch.append((path, stem, load_image(path)))
            except ImageReadError as e:
                failed.append(str(e))
                tqdm.write(f"skipped: {e}", file=sys.stderr)
                bar.update(1)
        if not batch:
            continue
        predictions = predictor.predict_batch(
            [image for _, _, image in batch], batch_size=len(batch)
        )
        for (path, stem, image), pred in zip(batch, predictions):
            writer.add(stem, f"{stem}{path.suffix}", pred.panoptic, pred.segments)
            if not args.no_overlay:
                picture = overlay(image, pred.panoptic, pred.segments, predictor.categories)
                save_image(output / f"{stem}_overlay.jpg", picture)
            done += 1
        bar.update(len(batch))
    bar.close()
    writer.close()
    print(f"{done} image(s) predicted into {output} (predictions.json, <stem>.png", end="")
    print(")" if args.no_overlay else ", <stem>_overlay.jpg)")
    if failed:
        print(f"{len(failed)} image(s) could not be read and were skipped", file=sys.stderr)
    return EXIT_OK if done > 0 else EXIT_FAILED
