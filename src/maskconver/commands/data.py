"""``maskconver data ...``: dataset utilities.

* ``synth``: write the synthetic dataset in the COCO panoptic layout;
* ``convert {coco-instances,labelme,voc}``: another annotation format -> COCO panoptic, with a
  report of what was converted, skipped and dropped; ``convert panoptic-to-instances``: the
  reverse, a COCO instance JSON;
* ``show``: the ground truth drawn over the images (the overlay style of ``predict``);
* ``stats``: per-category counts and areas, image sizes, crowd and void.

The rules of each converter are in ``docs/data-formats.md``. Heavy modules are imported inside
the run functions, so ``maskconver --help`` does not import torch.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from maskconver.commands.common import non_negative_int, positive_int, probability
from maskconver.errors import EXIT_OK, fail
from maskconver.locking import file_lock

DEFAULT_SPLIT = "train2017"
PANOPTIC_JSON_PREFIX = "panoptic_"
IMAGE_FILE_MODES = ("copy", "hardlink", "symlink")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` and its sub-subcommands to the top-level parser."""
    p = subparsers.add_parser(
        "data", help="dataset utilities: synth, convert, show, stats", description=__doc__
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    sub.required = True
    _register_synth(sub)
    _register_convert(sub)
    _register_show(sub)
    _register_stats(sub)
    p.set_defaults(func=run)


def _register_synth(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser(
        "synth", help="write the synthetic dataset in the COCO panoptic layout (train2017/val2017)"
    )
    synth.add_argument("--out", type=Path, required=True, help="dataset root to write")
    synth.add_argument(
        "--train", type=non_negative_int, default=2000, help="number of train images"
    )
    synth.add_argument("--val", type=non_negative_int, default=100, help="number of val images")
    synth.add_argument("--seed", type=non_negative_int, default=0, help="base seed (>= 0)")
    synth.add_argument("--min-size", type=positive_int, default=96, help="smallest image side")
    synth.add_argument("--max-size", type=positive_int, default=160, help="largest image side")
    synth.add_argument(
        "--image-format", choices=("jpg", "png"), default="jpg", help="image file format"
    )
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(data_func=run_synth)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="dataset root to write (COCO layout)")
    p.add_argument("--split", default=DEFAULT_SPLIT, help=f"split name (default {DEFAULT_SPLIT})")
    p.add_argument(
        "--image-files",
        choices=IMAGE_FILE_MODES,
        default="copy",
        help="how image files reach the output (default copy)",
    )
    _add_run_options(p)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing output (this split only)"
    )
    p.add_argument(
        "--strict", action="store_true", help="stop at the first problem instead of skipping"
    )
    p.add_argument("--report", type=Path, default=None, help="also write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_categories(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--categories",
        type=Path,
        default=None,
        help=f"category map (YAML/JSON list of name, id, isthing); {what}",
    )


def _register_convert(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser(
        "convert",
        help="convert annotations into the COCO panoptic layout (or panoptic -> instances)",
        description="Convert annotations; the rules are in docs/data-formats.md.",
    )
    formats = convert.add_subparsers(dest="convert_format", metavar="FORMAT")
    formats.required = True

    coco = formats.add_parser(
        "coco-instances",
        help="COCO instance JSON (polygons / RLE) + optional stuff JSON or label PNGs",
    )
    coco.add_argument("instances", type=Path, help="COCO instance annotation JSON")
    coco.add_argument("--images", type=Path, required=True, help="folder of the JSON's images")
    stuff = coco.add_mutually_exclusive_group()
    stuff.add_argument("--stuff-json", type=Path, help="COCO-stuff style JSON of stuff segments")
    stuff.add_argument(
        "--stuff-pngs", type=Path, help="folder of <image stem>.png label maps (value = id)"
    )
    coco.add_argument(
        "--stuff-categories", type=Path, help="category map of the --stuff-pngs values"
    )
    _add_categories(coco, "replaces the JSON categories; other categories are left out")
    coco.add_argument(
        "--overlap",
        choices=("resolve", "error"),
        default="resolve",
        help="overlapping things: resolve (earlier wins, duplicates dropped) or error (skip the "
        "image, as panopticapi's detection2panoptic)",
    )
    coco.add_argument(
        "--overlap-threshold",
        type=probability,
        default=0.5,
        help="drop an instance whose area is more than this fraction taken (default 0.5)",
    )
    coco.add_argument(
        "--stuff-min-area",
        type=non_negative_int,
        default=0,
        help="drop smaller stuff segments (pixels)",
    )
    _add_output_options(coco)
    coco.set_defaults(data_func=run_convert_coco)

    labelme = formats.add_parser("labelme", help="a folder of labelme JSON files")
    labelme.add_argument("input", type=Path, help="folder of labelme *.json (recursive)")
    _add_categories(labelme, "default: every label a thing, ids 1..n in sorted order")
    _add_output_options(labelme)
    labelme.set_defaults(data_func=run_convert_labelme)

    voc = formats.add_parser("voc", help="VOC SegmentationObject + SegmentationClass PNGs")
    voc.add_argument("input", type=Path, help="VOC folder (JPEGImages, Segmentation*)")
    voc.add_argument(
        "--class-names", type=Path, help="class names file (default INPUT/class_names.txt)"
    )
    _add_categories(voc, "matched to the class names (default: classes 1..n are things)")
    voc.add_argument("--image-set", help="use ImageSets/Segmentation/NAME.txt (e.g. train)")
    _add_output_options(voc)
    voc.set_defaults(data_func=run_convert_voc)

    back = formats.add_parser(
        "panoptic-to-instances", help="COCO panoptic split -> COCO instance JSON (RLE)"
    )
    _add_split_source(back)
    back.add_argument("--out", type=Path, required=True, help="instance JSON file to write")
    back.add_argument("--stuff", action="store_true", help="include stuff segments")
    _add_run_options(back)
    back.set_defaults(data_func=run_panoptic_to_instances)


def _add_split_source(p: argparse.ArgumentParser, json_flag: str = "--json") -> None:
    """ROOT [--split] or the split's files (``json_flag``, --pngs, --images)."""
    p.add_argument("root", type=Path, nargs="?", help="dataset root (COCO panoptic layout)")
    p.add_argument("--split", default=None, help="split (default: every split found)")
    p.add_argument(
        json_flag, dest="json", type=Path, default=None, help="panoptic JSON (instead of ROOT)"
    )
    p.add_argument(
        "--pngs", type=Path, default=None, help=f"panoptic PNG folder (with {json_flag})"
    )
    p.add_argument("--images", type=Path, default=None, help=f"image folder (with {json_flag})")
    p.set_defaults(json_flag=json_flag)


def _register_show(sub: argparse._SubParsersAction) -> None:
    show = sub.add_parser("show", help="draw the ground truth over the images (JPEGs)")
    _add_split_source(show)
    show.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a new folder here)"
    )
    show.add_argument("--limit", type=positive_int, default=None, help="at most N images per split")
    show.add_argument(
        "--scale", type=positive_int, default=1, help="enlarge small images N times first"
    )
    show.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    show.add_argument("--no-progress", action="store_true", help="no progress bar")
    show.set_defaults(data_func=run_show)


def _register_stats(sub: argparse._SubParsersAction) -> None:
    stats = sub.add_parser(
        "stats",
        help="per-category counts and areas, sizes, crowd, void",
        description="Per-category segment counts and areas, image sizes, crowd and void of a "
        "COCO panoptic dataset: every split under ROOT (or one with --split), or one split "
        "given by its files (--panoptic-json FILE --pngs DIR, and --images DIR for the image "
        "sizes). --json prints the statistics as JSON instead of text.",
    )
    _add_split_source(stats, json_flag="--panoptic-json")
    stats.add_argument(
        "--json", dest="json_output", action="store_true", help="print JSON instead of text"
    )
    stats.add_argument("--no-progress", action="store_true", help="no progress bar")
    stats.set_defaults(data_func=run_stats)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen ``data`` sub-subcommand; one writer per ``--out`` at a time.

    The lock file lies beside ``--out`` (``locking.file_lock``), so a folder that must be empty
    stays empty.
    """
    out: Path | None = getattr(args, "out", None)
    if out is None:
        return int(args.data_func(args))
    with file_lock(out, "data"):
        return int(args.data_func(args))


def run_synth(args: argparse.Namespace) -> int:
    """Write the synthetic dataset and print what was written."""
    from maskconver.data.coco_panoptic import standard_paths
    from maskconver.data.synthetic import write_synthetic_dataset

    if args.train < 0 or args.val < 0:  # argparse checks the flags; a namespace from elsewhere
        return fail("data synth", f"--train and --val must be >= 0, got {args.train}, {args.val}")
    if args.min_size > args.max_size:
        return fail(
            "data synth",
            f"--min-size must be <= --max-size, got {args.min_size} > {args.max_size}",
        )
    write_synthetic_dataset(
        args.out,
        train=args.train,
        val=args.val,
        seed=args.seed,
        min_size=args.min_size,
        max_size=args.max_size,
        image_format=args.image_format,
        progress=not args.no_progress,
    )
    for split, count in (("train2017", args.train), ("val2017", args.val)):
        images, json_path, png_dir = standard_paths(args.out, split)
        print(f"{split}: {count} images in {images}, annotations {json_path} + {png_dir}/")
    return EXIT_OK


def _finish_report(report: Any, args: argparse.Namespace) -> int:
    print(report.format())
    if args.report is not None:
        report.write_json(args.report)
        print(f"report: {args.report}")
    return EXIT_OK


def _output_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "split": args.split,
        "overwrite": args.overwrite,
        "strict": args.strict,
        "image_mode": args.image_files,
        "progress": not args.no_progress,
    }


def run_convert_coco(args: argparse.Namespace) -> int:
    """``data convert coco-instances``."""
    from maskconver.data.convert.coco_instances import convert_coco_instances

    report = convert_coco_instances(
        args.instances,
        args.images,
        args.out,
        stuff_json=args.stuff_json,
        stuff_pngs=args.stuff_pngs,
        stuff_categories=args.stuff_categories,
        categories=args.categories,
        overlap=args.overlap,
        overlap_threshold=args.overlap_threshold,
        stuff_min_area=args.stuff_min_area,
        **_output_kwargs(args),
    )
    return _finish_report(report, args)


def run_convert_labelme(args: argparse.Namespace) -> int:
    """``data convert labelme``."""
    from maskconver.data.convert.labelme import convert_labelme

    report = convert_labelme(
        args.input, args.out, categories=args.categories, **_output_kwargs(args)
    )
    return _finish_report(report, args)


def run_convert_voc(args: argparse.Namespace) -> int:
    """``data convert voc``."""
    from maskconver.data.convert.voc import convert_voc

    report = convert_voc(
        args.input,
        args.out,
        class_names=args.class_names,
        categories=args.categories,
        image_set=args.image_set,
        **_output_kwargs(args),
    )
    return _finish_report(report, args)


def _splits(
    args: argparse.Namespace, *, need_images: bool
) -> list[tuple[str, Path, Path, Path | None]]:
    """``(name, json, png_dir, image_dir)`` of the chosen splits (ROOT + --split, or files)."""
    from maskconver.data.coco_panoptic import DatasetError, standard_paths

    flag = getattr(args, "json_flag", "--json")  # ``data stats`` names it --panoptic-json
    explicit = (args.json, args.pngs, args.images)
    if any(p is not None for p in explicit):
        if args.root is not None or args.split is not None:
            raise DatasetError(f"give either ROOT [--split] or {flag}/--pngs/--images, not both")
        if args.json is None or args.pngs is None or (need_images and args.images is None):
            needed = f"{flag}, --pngs and --images" if need_images else f"{flag} and --pngs"
            raise DatasetError(f"{needed} go together")
        name = args.json.stem.removeprefix(PANOPTIC_JSON_PREFIX)
        return [(name, args.json, args.pngs, args.images)]
    if args.root is None:
        raise DatasetError(f"give a dataset ROOT (or {flag}/--pngs/--images)")
    if args.split is not None:
        names = [args.split]
    else:
        found = sorted((args.root / "annotations").glob(f"{PANOPTIC_JSON_PREFIX}*.json"))
        names = [p.stem.removeprefix(PANOPTIC_JSON_PREFIX) for p in found]
        if not names:
            raise DatasetError(
                f"no annotations/{PANOPTIC_JSON_PREFIX}<split>.json under {args.root}"
            )
    out = []
    for name in names:
        image_dir, json_path, png_dir = standard_paths(args.root, name)
        out.append((name, json_path, png_dir, image_dir if image_dir.is_dir() else None))
    return out


def run_panoptic_to_instances(args: argparse.Namespace) -> int:
    """``data convert panoptic-to-instances``."""
    from maskconver.data.coco_panoptic import DatasetError
    from maskconver.data.convert.to_instances import panoptic_to_instances

    splits = _splits(args, need_images=False)
    if len(splits) != 1:
        names = ", ".join(s[0] for s in splits)
        raise DatasetError(f"{args.root} holds several splits ({names}); choose one with --split")
    _, json_path, png_dir, image_dir = splits[0]
    report = panoptic_to_instances(
        json_path,
        png_dir,
        args.out,
        image_dir=image_dir,
        stuff=args.stuff,
        overwrite=args.overwrite,
        strict=args.strict,
        progress=not args.no_progress,
    )
    return _finish_report(report, args)


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def _show_dir(args: argparse.Namespace, protected: list[Path]) -> Path:
    """The output folder of ``show``: never inside the dataset; a new one by default."""
    from maskconver.data.coco_panoptic import DatasetError

    if args.out is not None:
        for folder in protected:
            if _is_within(args.out, folder):
                raise DatasetError(f"--out {args.out} lies inside the dataset ({folder})")
        if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
            raise DatasetError(f"--out {args.out} is not empty; pass --overwrite to write into it")
        return args.out
    base = Path.cwd()
    for folder in protected:
        if _is_within(base, folder):
            base = Path(os.path.abspath(folder)).parent
    stem = f"show_{(args.root or args.json).resolve().name}"
    candidate, k = base / stem, 1
    while candidate.exists():
        k += 1
        candidate = base / f"{stem}_{k}"
    return candidate


def run_show(args: argparse.Namespace) -> int:
    """``data show``: one JPEG per image, the ground truth drawn with ``visualize.overlay``."""
    from tqdm import tqdm

    from maskconver.data.coco_panoptic import CocoPanopticDataset, DatasetError
    from maskconver.data.image_io import save_image
    from maskconver.visualize import overlay

    if args.limit is not None and args.limit < 1:
        raise DatasetError(f"--limit must be >= 1, got {args.limit}")
    if args.scale < 1:
        raise DatasetError(f"--scale must be >= 1, got {args.scale}")
    splits = _splits(args, need_images=True)
    protected = [args.root] if args.root is not None else [p for s in splits for p in s[1:] if p]
    out_dir = _show_dir(args, protected)
    written = skipped = 0
    for name, json_path, png_dir, image_dir in splits:
        if image_dir is None:
            raise DatasetError(f"image folder of split {name} not found under {args.root}")
        dataset = CocoPanopticDataset(image_dir=image_dir, json_path=json_path, png_dir=png_dir)
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        for index in tqdm(
            range(count), desc=f"show {name}", disable=True if args.no_progress else None
        ):
            try:
                sample = dataset[index]
            except DatasetError as e:
                tqdm.write(f"skipped: {e}")
                skipped += 1
                continue
            image, panoptic = sample.image, sample.panoptic
            if args.scale > 1:
                image = image.repeat(args.scale, axis=0).repeat(args.scale, axis=1)
                panoptic = panoptic.repeat(args.scale, axis=0).repeat(args.scale, axis=1)
            picture = overlay(image, panoptic, sample.segments, dataset.categories)
            target = out_dir / name / Path(sample.file_name).with_suffix(".jpg")
            save_image(target, picture)
            written += 1
    if written == 0:
        raise DatasetError(f"no picture written ({skipped} images could not be read)")
    print(f"wrote {written} pictures to {out_dir}" + (f" ({skipped} skipped)" if skipped else ""))
    return EXIT_OK


def run_stats(args: argparse.Namespace) -> int:
    """``data stats``: print (or ``--json``) the statistics of each chosen split."""
    from maskconver.data.stats import format_stats, split_stats

    results = [
        split_stats(
            json_path, png_dir, image_dir=image_dir, split=name, progress=not args.no_progress
        )
        for name, json_path, png_dir, image_dir in _splits(args, need_images=False)
    ]
    if args.json_output:
        root = str(args.root) if args.root is not None else None
        print(json.dumps({"root": root, "splits": results}, indent=2))
    else:
        print("\n\n".join(format_stats(r) for r in results))
    return EXIT_OK
