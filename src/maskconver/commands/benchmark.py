"""``maskconver benchmark``: parameters, multiply-accumulates and latency of a model config.

* ``params``: every parameter of the model (the network's learnable weights).
* ``macs``: ``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2 for one eval-mode forward of a
  single image (convolutions, matmuls, einsum; resizes, norms and activations are not counted),
  measured on a ``meta``-device copy so counting costs no compute.
* ``latency_ms``: median wall time of forward + panoptic post-processing under
  ``torch.inference_mode`` (batch 1, random image), after warm-up runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

# measure imports torch lazily: the parser is built without it (``maskconver --help``)
from maskconver.benchmarking.measure import (
    DEFAULT_NUM_CLASSES,
    DEFAULT_RUNS,
    DEFAULT_WARMUP,
    benchmark,
    format_table,
)
from maskconver.commands.common import add_overrides, non_negative_int, positive_int
from maskconver.errors import EXIT_BAD_INPUT, EXIT_OK


def register(subparsers: Any) -> None:
    """Add the ``benchmark`` subcommand."""
    p = subparsers.add_parser(
        "benchmark",
        help="parameters, MACs and latency of a preset or config file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", required=True, help="preset name (see `maskconver config list`) or YAML path"
    )
    add_overrides(p, "model.num_proposals=100")
    p.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="input size (default: eval.input_size square)",
    )
    p.add_argument(
        "--runs", type=non_negative_int, default=DEFAULT_RUNS, help="timed runs (0: skip latency)"
    )
    p.add_argument(
        "--warmup", type=non_negative_int, default=DEFAULT_WARMUP, help="untimed warm-up runs"
    )
    p.add_argument(
        "--num-classes",
        type=positive_int,
        default=DEFAULT_NUM_CLASSES,
        help="classes when the config leaves model.num_classes unset",
    )
    p.add_argument(
        "--threads", type=positive_int, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument("--device", default="cpu", help="torch device for the latency runs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--compare",
        action="store_true",
        help="torch eager / optimised, onnxruntime fp32 (with and without spinning) / int8, "
        "OpenVINO fp32 / int8 and TFLite where installed, against Mask2Former-R50, "
        "MaskFormer-R50 and EoMT ViT-S / ViT-B (the peers extra), interleaved, at --sizes; "
        "prints the CPU model",
    )
    p.add_argument(
        "--sizes",
        type=positive_int,
        nargs="+",
        default=[256, 640],
        help="square input sizes of --compare",
    )
    p.add_argument(
        "--rounds", type=positive_int, default=10, help="interleaved rounds of --compare"
    )
    p.add_argument("--no-peers", action="store_true", help="--compare without the peers")
    p.add_argument(
        "--also",
        nargs="+",
        default=[],
        metavar="PRESET",
        help="--compare: more presets timed beside --config (torch eager and onnxruntime fp32 "
        "rows), e.g. --config tiny --also kmax_tiny",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="per-layer table of the exported network in onnxruntime (op, shape, MACs, time, "
        "GFLOP/s, bound) and its roofline floor from a dense-conv rate and the memory "
        "bandwidth measured in the same run (--size, --threads, --rounds)",
    )
    p.add_argument(
        "--top", type=positive_int, default=15, help="layers listed by --profile (slowest first)"
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="random init of the untrained weights of --compare and --profile (the merge's "
        "cost depends on how contested the untrained masks are)",
    )
    p.add_argument(
        "--spin",
        action="store_true",
        help="--profile with onnxruntime's intra-op spinning on (the backend's default is off)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """CLI entry point."""
    import torch

    from maskconver.config import ConfigError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.runs < 0 or args.warmup < 0:
        print("benchmark: --runs and --warmup must be >= 0")
        return EXIT_BAD_INPUT
    if args.compare:
        return _compare(args)
    if args.profile:
        return _profile(args)
    try:
        report = benchmark(
            args.config,
            args.overrides,
            size=tuple(args.size) if args.size else None,
            runs=args.runs,
            warmup=args.warmup,
            num_classes=args.num_classes,
            device=args.device,
        )
    except ConfigError as e:
        print(f"benchmark: {e}")
        return EXIT_BAD_INPUT
    print(json.dumps(report) if args.json else format_table(report))
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    """``--compare``: see ``maskconver.benchmarking.compare``."""
    import torch

    from maskconver.benchmarking.compare import compare, format_report
    from maskconver.config import ConfigError

    if not args.no_peers:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print(
                "benchmark --compare: the peers need transformers: pip install "
                "'maskconver[peers]' (or pass --no-peers)"
            )
            return EXIT_BAD_INPUT
    try:
        report = compare(
            args.config,
            args.overrides,
            sizes=list(args.sizes),
            rounds=args.rounds,
            warmup=max(1, args.warmup),
            num_classes=args.num_classes,
            threads=args.threads or torch.get_num_threads(),
            peers=not args.no_peers,
            others=list(args.also),
            seed=args.seed,
        )
    except ConfigError as e:
        print(f"benchmark: {e}")
        return EXIT_BAD_INPUT
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return EXIT_OK


def _profile(args: argparse.Namespace) -> int:
    """``--profile``: see ``maskconver.benchmarking.profile_run``."""
    import torch

    from maskconver.benchmarking.profile_run import format_profile, profile_network
    from maskconver.config import ConfigError, load_config

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("benchmark --profile needs onnxruntime: pip install 'maskconver[onnx]'")
        return EXIT_BAD_INPUT
    try:
        cfg = load_config(args.config, args.overrides)
        size = tuple(args.size) if args.size else (cfg.eval.input_size, cfg.eval.input_size)
        report = profile_network(
            args.config,
            args.overrides,
            size=(int(size[0]), int(size[1])),
            threads=args.threads or torch.get_num_threads(),
            rounds=args.rounds,
            warmup=max(1, args.warmup),
            num_classes=args.num_classes,
            spinning=True if args.spin else None,
            seed=args.seed,
        )
    except ConfigError as e:
        print(f"benchmark: {e}")
        return EXIT_BAD_INPUT
    print(json.dumps(report, indent=1) if args.json else format_profile(report, top=args.top))
    return EXIT_OK
