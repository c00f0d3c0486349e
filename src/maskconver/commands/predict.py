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

Video (the ``video`` extra, PyAV): a ``--input`` file with a video suffix (``.mp4``, ``.mkv``,
``.webm``...) writes ``<stem>_overlay<suffix>`` in the input's codec family, and with
``--frames-png`` / ``--jsonl`` per-frame panoptic PNGs / one JSON line per frame; ``--every N``
and ``--max-frames N`` pick the frames (``maskconver.video``).

Sharded and resumable: ``torchrun --nproc_per_node N -m maskconver predict ...`` splits the
images over N processes (gloo), each journals what it finished, and rank 0 (which alone holds
the folder lock) merges one ``predictions.json``, the same as one process writes; ``--resume``
continues a killed or partial run, predicting only images whose outputs are missing
(``maskconver.sharded``).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maskconver.commands.common import (
    add_model_source,
    check_model_source,
    load_exported,
    positive_int,
    probability,
)
from maskconver.commands.predict_inputs import (
    IMAGE_SUFFIXES,
    PREDICTIONS_JSON,
    OutputLock,
    PredictError,
    check_output,
    collect_images,
    image_ids,
    killed_run_files,
    planned_outputs,
    unique_stems,
)
from maskconver.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, fail
from maskconver.sharded import clear_journals, world_size_from_env
from maskconver.video import VIDEO_SUFFIXES

DEFAULT_BATCH_SIZE = 8
PREFETCH_DEPTH = 8  # images read ahead / waiting to be written (at least 2 batches)


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
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an earlier (killed, partial or finished) run in --output with the same "
        "model and options: only images whose outputs are missing are predicted",
    )
    video = p.add_argument_group("video inputs (the video extra: pip install 'maskconver[video]')")
    video.add_argument(
        "--every",
        type=positive_int,
        default=1,
        metavar="N",
        help="predict every N-th decoded frame (the overlay video plays at rate / N)",
    )
    video.add_argument(
        "--max-frames",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N predicted frames per video",
    )
    video.add_argument(
        "--frames-png",
        action="store_true",
        help="also write <stem>_frames/<frame>.png: one COCO panoptic id PNG per predicted frame",
    )
    video.add_argument(
        "--jsonl",
        action="store_true",
        help="also write <stem>.jsonl: one JSON line per predicted frame (frame index, pts, "
        "time in s, size, segments with score, area and bbox)",
    )
    p.set_defaults(func=run)


def load_predictor(args: argparse.Namespace) -> Any:
    """The ``Predictor`` of ``--checkpoint`` (torch) or ``--model`` (onnxruntime)."""
    from maskconver.predictor import SYNTHETIC_ONLY_NOTE, Predictor

    if args.model:
        predictor = load_exported(args.model, threads=args.threads, precision=args.precision)
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        predictor = Predictor.from_checkpoint(
            args.checkpoint,
            device=args.device,
            use_ema=not args.no_ema,
            optimize=args.optimize,
            warn_synthetic=False,  # one plain line below instead
        )
    if predictor.synthetic_only:
        print(f"warning: {SYNTHETIC_ONLY_NOTE}", file=sys.stderr)
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
    videos = [p for p in args.input if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        return _run_videos(args, videos)
    if args.every != 1 or args.max_frames or args.frames_png or args.jsonl:
        return fail("predict", "--every, --max-frames, --frames-png and --jsonl are for videos")
    paths, problems = collect_images(list(args.input))
    for message in problems:
        print(f"warning: {message}", file=sys.stderr)
    if not paths:
        return fail("predict", "no input images")
    output: Path = args.output
    if output.exists() and not output.is_dir():
        return fail("predict", f"--output {output} is a file, not a folder")
    stems = unique_stems(paths)
    from maskconver.tasks.instance_cli import is_instance_checkpoint, predict_instance_files

    if is_instance_checkpoint(args.checkpoint):  # DR1Mask's instance task: instances.json
        try:
            return predict_instance_files(args, paths, image_ids(paths, stems, args.image_info))
        except PredictError as e:
            return fail("predict", str(e))
    planned = planned_outputs(output, stems, overlay=not args.no_overlay)
    if args.resume or world_size_from_env() > 1:
        return _run_sharded(args, paths, stems, planned)
    try:
        ids = image_ids(paths, stems, args.image_info)
        stale = check_output(output, paths, planned, args.overwrite)
        output.mkdir(parents=True, exist_ok=True)
        with OutputLock(output, planned):
            stale = check_output(output, paths, planned, args.overwrite)  # re-check, locked
            predictor = load_predictor(args)
            for path in stale:
                path.unlink(missing_ok=True)
            (output / PREDICTIONS_JSON).unlink(missing_ok=True)
            clear_journals(output)  # a killed sharded run's records would outlive its files
            done, failed = _predict_all(predictor, paths, stems, ids, output, args)
    except PredictError as e:
        return fail("predict", str(e))
    print(f"{done} image(s) predicted into {output} ({PREDICTIONS_JSON}, <stem>.png", end="")
    print(")" if args.no_overlay else ", <stem>_overlay.jpg)")
    skipped = [m for m in problems if m.startswith("skipped ")]
    if failed or skipped:
        print(
            f"{failed + len(skipped)} input(s) skipped: {failed} image(s) could not be read, "
            f"{len(skipped)} folder entr(ies) were not files (each named above)",
            file=sys.stderr,
        )
    return EXIT_OK if done > 0 else EXIT_FAILED


def _predict_all(
    predictor: Any,
    paths: list[Path],
    stems: list[str],
    ids: list[int | str],
    output: Path,
    args: argparse.Namespace,
    *,
    writer: Any = None,
    on_written: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Predict in batches; the JSON (written last, atomically) lists exactly what was written.

    Reading and transforming the next images (``prefetch``) and writing the finished ones
    (``WriteBehind``) run on background threads beside the network; the throughput is printed.
    ``writer`` replaces the ``CocoPanopticWriter`` (a ``sharded.Journal``) and
    ``on_written(stem)`` is called once all files of an image are written.
    """
    from tqdm import tqdm

    from maskconver.commands.pipeline import Loaded, WriteBehind, batches, load_input, prefetch
    from maskconver.data.image_io import save_image
    from maskconver.data.writer import CocoPanopticWriter
    from maskconver.inference import predict_samples
    from maskconver.visualize import overlay

    if writer is None:
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
        if on_written is not None:
            on_written(item.stem)

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


def _run_videos(args: argparse.Namespace, videos: list[Path]) -> int:
    """Predict each video's frames (``maskconver.video``); images go in a separate run."""
    from maskconver.video import VideoOutputs, predict_video, probe, require_av

    if len(videos) != len(args.input):
        return fail("predict", "give videos and images (or folders) in separate predict runs")
    if world_size_from_env() > 1 or args.resume:
        return fail("predict", "videos are predicted in one process, without --resume")
    require_av()  # without PyAV: one line naming the extra to install
    for video in videos:
        probe(video)  # an unreadable file fails before the model loads (VideoError, one line)
    output: Path = args.output
    if output.exists() and not output.is_dir():
        return fail("predict", f"--output {output} is a file, not a folder")
    plans = [
        VideoOutputs.plan(
            output,
            stem,
            path.suffix,
            overlay=not args.no_overlay,
            frames_png=args.frames_png,
            jsonl=args.jsonl,
        )
        for path, stem in zip(videos, unique_stems(videos), strict=True)
    ]
    if not plans[0].paths():
        return fail("predict", "--no-overlay without --frames-png or --jsonl writes nothing")
    existing = [p for plan in plans for p in plan.paths() if p.exists()]
    if existing and not args.overwrite:
        return fail("predict", f"{existing[0]} exists; pass --overwrite or choose another --output")
    try:
        with OutputLock(output):
            predictor = load_predictor(args)
            for path in existing:  # only what a video run writes: its files, its frame PNGs
                for frame in path.glob("[0-9]*.png") if path.is_dir() else [path]:
                    frame.unlink()
            frames = sum(
                predict_video(
                    predictor,
                    video,
                    plan,
                    batch_size=args.batch_size,
                    every=args.every,
                    max_frames=args.max_frames,
                    prefetch_frames=not args.no_prefetch,
                )
                for video, plan in zip(videos, plans, strict=True)
            )
    except PredictError as e:
        return fail("predict", str(e))
    print(f"{frames} frame(s) of {len(videos)} video(s) predicted into {output}")
    return EXIT_OK if frames > 0 else EXIT_FAILED


def _run_sharded(
    args: argparse.Namespace, paths: list[Path], stems: list[str], planned: dict[str, list[Path]]
) -> int:
    """``torchrun`` ranks (or ``--resume``): split, journal, merge (``maskconver.sharded``).

    Rank 0 alone checks the folder and holds its lock for the whole run; its verdict reaches
    every rank before anything is written.
    """
    from maskconver import sharded

    shard = sharded.Shard.from_env()
    output: Path = args.output
    if args.resume and args.overwrite:
        return fail("predict", "--resume keeps an earlier run, --overwrite removes it: pick one")
    sharded.join(shard)
    lock: OutputLock | None = None
    try:
        verdict = None
        if shard.rank == 0:
            try:
                ids = image_ids(paths, stems, args.image_info)
                if args.resume:
                    records, started = sharded.read_state(output)
                    known = killed_run_files(output)
                    sharded.check_resume(paths, planned, records, started, known)
                else:
                    stale = check_output(output, paths, planned, args.overwrite)
                lock = OutputLock(output, planned).__enter__()
                if not args.resume:
                    for path in stale:
                        path.unlink(missing_ok=True)
                    (output / PREDICTIONS_JSON).unlink(missing_ok=True)
                    sharded.clear_journals(output)
            except (PredictError, sharded.ResumeError) as e:
                verdict = str(e)
        verdict = sharded.broadcast_verdict(verdict)
        if verdict is not None:  # printed once, by rank 0
            return fail("predict", verdict) if shard.rank == 0 else EXIT_BAD_INPUT
        ids = image_ids(paths, stems, args.image_info)
        records, _ = sharded.read_state(output)
        todo = [
            i
            for i, (path, stem) in enumerate(zip(paths, stems, strict=True))
            if not sharded.is_finished(records.get(stem), ids[i], path, planned[stem])
        ]
        mine = shard.take(todo)
        args.device = shard.device(args.device)
        predictor = load_predictor(args)
        category_ids = {c.id for c in predictor.categories.categories}
        journal = sharded.Journal(output, shard.rank, category_ids)
        done, failed = _predict_all(
            predictor,
            [paths[i] for i in mine],
            [stems[i] for i in mine],
            [ids[i] for i in mine],
            output,
            args,
            writer=journal,
            on_written=journal.finish,
        )
        done, failed = sharded.sum_counts([done, failed])  # every rank has finished
        if shard.rank != 0:
            return EXIT_OK
        order = list(zip(stems, ids, paths, strict=True))
        listed = sharded.merge(output, order, planned, predictor.categories.to_json())
        sharded.clear_journals(output)
    finally:
        if lock is not None:
            lock.__exit__(*sys.exc_info())  # a failed run leaves its claims for the next one
        sharded.leave()
    kept = len(paths) - len(todo)
    print(
        f"{done} image(s) predicted by {shard.world_size} process(es), {kept} kept from the "
        f"earlier run; {PREDICTIONS_JSON} in {output} lists {listed}"
    )
    if failed:
        print(f"{failed} image(s) could not be read and were skipped", file=sys.stderr)
    return EXIT_OK if listed > 0 else EXIT_FAILED
