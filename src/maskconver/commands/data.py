"""``maskconver data ...``: dataset utilities (``synth`` writes the synthetic COCO panoptic set)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` and its sub-subcommands to the top-level parser."""
    p = subparsers.add_parser("data", help="dataset utilities (synthetic dataset writer)")
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    sub.required = True

    synth = sub.add_parser(
        "synth", help="write the synthetic dataset in the COCO panoptic layout (train2017/val2017)"
    )
    synth.add_argument("--out", type=Path, required=True, help="dataset root to write")
    synth.add_argument("--train", type=int, default=2000, help="number of train images")
    synth.add_argument("--val", type=int, default=100, help="number of val images")
    synth.add_argument("--seed", type=int, default=0, help="base seed (>= 0)")
    synth.add_argument("--min-size", type=int, default=96, help="smallest image side")
    synth.add_argument("--max-size", type=int, default=160, help="largest image side")
    synth.add_argument(
        "--image-format", choices=("jpg", "png"), default="jpg", help="image file format"
    )
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(data_func=run_synth)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen ``data`` sub-subcommand."""
    return int(args.data_func(args))


def run_synth(args: argparse.Namespace) -> int:
    """Write the synthetic dataset and print what was written."""
    from maskconver.data.coco_panoptic import standard_paths
    from maskconver.data.synthetic import write_synthetic_dataset

    if args.train < 0 or args.val < 0:
        raise SystemExit(f"--train and --val must be >= 0, got {args.train}, {args.val}")
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
    return 0
