r"""``maskconver train``: train a model from a preset or YAML config.

Examples::

    maskconver train --config tiny --output-dir runs/tiny
    maskconver train --config mobilenet_mh_256 --data-root /data/coco --output-dir runs/mh256 \\
        --set train.batch_size=32 --set train.max_steps=100000
    torchrun --nproc_per_node 2 -m maskconver train --config tiny --output-dir runs/ddp
    maskconver train --config tiny --output-dir runs/tiny --resume   # continue the latest one

Without ``--data-root`` (and no ``data.root`` in the config) it trains on synthetic scenes.
``train.batch_size`` is the global batch per optimizer step (split over processes and
``train.grad_accum`` micro-batches). Output: ``config.yaml``, ``metrics.jsonl``,
``checkpoints/step_*/`` and ``checkpoints/best/``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from maskconver.commands.common import add_overrides, positive_int
from maskconver.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, fail, one_line


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train a model (synthetic data or a COCO panoptic root; torchrun for DDP)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="preset name (e.g. tiny) or path to a YAML file")
    p.add_argument("--data-root", default=None, help="COCO panoptic root (default: synthetic data)")
    add_overrides(p)
    p.add_argument("--output-dir", required=True, type=Path, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads of each process (default: torch's choice)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print the summary as JSON; returns the exit code."""
    from maskconver.config import ConfigError, load_config
    from maskconver.data.coco_panoptic import DatasetError
    from maskconver.engine.checkpoint import CheckpointError
    from maskconver.engine.train import NonFiniteLossError, train

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        return fail("train", str(e), EXIT_BAD_INPUT)
    if args.threads is not None:
        if args.threads < 1:
            return fail("train", f"--threads must be >= 1, got {args.threads}", EXIT_BAD_INPUT)
        import torch

        torch.set_num_threads(args.threads)
    try:
        summary = train(
            cfg,
            args.output_dir,
            resume=args.resume,
            data_root=args.data_root,
            progress=not args.no_progress,
        )
    except (ConfigError, FileExistsError, DatasetError, CheckpointError) as e:
        return fail("train", one_line(e), EXIT_BAD_INPUT)  # bad input: exit 2
    except NonFiniteLossError as e:
        return fail("train", one_line(e), EXIT_FAILED)  # the run itself failed
    if os.environ.get("RANK", "0") == "0":  # torchrun sets RANK; print the summary once
        print(json.dumps(summary, indent=2, default=str))
    error = (summary.get("metrics") or {}).get("error")
    if error:  # the final evaluation failed: the run produced no result, the weights are kept
        return fail(
            "train",
            f"the final evaluation failed ({error}); the checkpoint {summary['checkpoint']} is "
            "kept: evaluate it with `maskconver evaluate --checkpoint` once the data is fixed",
            EXIT_FAILED,
        )
    return EXIT_OK
