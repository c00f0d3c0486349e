r"""``maskconver export``: a checkpoint to one ONNX graph from image to the merge's tensor core.

The graph holds the normalisation, the network, the peak finding, the mask embeddings and
logits and the panoptic merge (owner per pixel of the output canvas, keep / class / score / area
per proposal); the categories, thresholds, resolved config and version go into its metadata, so
the ``.onnx`` file alone is enough to predict (``maskconver predict --model``,
``Predictor.from_onnx``). Segment numbering stays in the shared Python step.

Examples::

    maskconver export --checkpoint runs/quickstart/checkpoints/best --output tiny.onnx
    maskconver export --checkpoint CKPT --output model.onnx --dynamic
    maskconver export --checkpoint CKPT --output model_int8.onnx --int8 static \\
        --calibration-images photos/

With ``--int8`` the float graph is written next to the output (``<name>.fp32.onnx``) and the
quantized one to ``--output``; ``static`` calibrates activation ranges on the images of
``--calibration-images`` (default: 32 synthetic validation scenes).

``--format tflite`` (the ``tflite`` extra) writes a LiteRT model for phones instead: the network
at a fixed size, the metadata inside, the merge run by the post-processor in Python
(``maskconver predict --model model.tflite``, ``Predictor.from_tflite``; docs/tflite.md)::

    maskconver export --checkpoint CKPT --output model.tflite --format tflite --int8 weight-only

``--format openvino`` (the ``openvino`` extra) writes the same graph as an OpenVINO IR
(``model.xml`` + ``model.bin``, metadata in its ``rt_info``; ``maskconver predict --model
model.xml``, ``Predictor.from_openvino``; docs/openvino.md). ``--int8`` quantizes the network
with NNCF on ``--calibration-images`` (the merge stays float) and prints PQ float vs int8 on
``--check-images`` validation images::

    maskconver export --checkpoint CKPT --output model.xml --format openvino --int8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from maskconver.commands.common import load_exported, non_negative_int, positive_int
from maskconver.errors import EXIT_OK, fail

DEFAULT_CALIBRATION_IMAGES = 32
FORMATS = ("onnx", "tflite", "openvino")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "openvino": ".xml"}
DEFAULT_CHECK_IMAGES = 50  # --format openvino --int8: validation images of the PQ check
TFLITE_INT8 = {"weight-only": "weight_only", "dynamic": "dynamic"}  # --int8 -> quantization


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (merge in the graph, metadata inside; optional int8)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument(
        "--output", required=True, type=Path, help="the file to write (.onnx, .tflite or .xml)"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (merge in the graph) or tflite (LiteRT, for phones: the network in the graph, "
        "the merge in Python; fixed size; needs maskconver[tflite]) or openvino (the onnx graph "
        "as an OpenVINO IR .xml + .bin; needs maskconver[openvino])",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="fixed network input (default: eval.input_size square)",
    )
    size.add_argument("--dynamic", action="store_true", help="dynamic input height and width")
    p.add_argument(
        "--int8",
        choices=("static", "dynamic", "weight-only"),
        nargs="?",
        const="static",
        default=None,
        help="also quantize to int8 (static: calibrated QDQ, onnx; dynamic: int8 weights, "
        "activations quantized at run time; weight-only: int8 weights, float compute, tflite; "
        "a bare --int8 is static, the one mode of --format openvino: NNCF)",
    )
    p.add_argument(
        "--calibration-images",
        type=Path,
        default=None,
        help="folder of images for --int8 static (default: synthetic scenes)",
    )
    p.add_argument(
        "--check-images",
        type=non_negative_int,
        default=DEFAULT_CHECK_IMAGES,
        help="--format openvino --int8: validation images of the printed PQ check, float vs int8 "
        "(the config's split: synthetic scenes by default; 0: no check)",
    )
    p.add_argument("--no-ema", action="store_true", help="export the raw weights, not the EMA")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=run)


def calibration_inputs(
    model_path: Path, folder: Path | None, count: int = DEFAULT_CALIBRATION_IMAGES
) -> list[dict[str, Any]]:
    """Graph inputs of calibration images, prepared by the model's own eval transform."""
    import numpy as np

    from maskconver.data.image_io import ImageReadError, load_image
    from maskconver.data.synthetic import SyntheticPanoptic
    from maskconver.data.types import PanopticSample

    predictor = load_exported(model_path)
    images: list[np.ndarray] = []
    if folder is not None:
        from maskconver.commands.predict_inputs import collect_images

        paths, _ = collect_images([folder])
        for path in paths[:count]:
            try:
                images.append(load_image(path))
            except ImageReadError as e:
                print(f"warning: skipped calibration image: {e}", file=sys.stderr)
    else:
        d = predictor.cfg.data
        scenes = SyntheticPanoptic(
            count,
            seed=d.synthetic_seed + 1,
            min_size=d.synthetic_min_size,
            max_size=d.synthetic_max_size,
        )
        images = [scenes[i].image for i in range(len(scenes))]
    feeds = []
    for image in images:
        blank = np.zeros(image.shape[:2], np.int32)
        sample = predictor.transform(PanopticSample(image=image, panoptic=blank, segments=[]))
        feeds.append(
            {
                "image": sample.image[None].astype(np.uint8),
                "valid_size": np.asarray(sample.meta["valid_size"], np.int64),
                "output_size": np.asarray(sample.meta["orig_size"], np.int64),
            }
        )
    return feeds


def run(args: argparse.Namespace) -> int:
    """Export (and optionally quantize) under the artefact's lock; prints what was written."""
    from maskconver.locking import LockError, file_lock

    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        return fail("export", f"checkpoint not found: {checkpoint}")
    output: Path = args.output
    suffix = SUFFIXES[args.format]
    if output.suffix.lower() != suffix:
        return fail(
            "export", f"--output must end in {suffix} with --format {args.format}, got {output}"
        )
    if output.resolve().is_relative_to(checkpoint.resolve()) and checkpoint.is_dir():
        return fail(
            "export", f"--output {output} is inside the checkpoint folder; choose another path"
        )
    if output.exists() and not args.overwrite:
        return fail("export", f"{output} exists; pass --overwrite to replace it")
    if args.calibration_images is not None and args.int8 != "static":
        return fail("export", "--calibration-images goes with --int8 static")
    if args.calibration_images is not None and not args.calibration_images.is_dir():
        return fail("export", f"calibration folder not found: {args.calibration_images}")
    try:  # one export per artefact at a time; the existence check again, under the lock
        with file_lock(output, "export"):
            if output.exists() and not args.overwrite:
                return fail("export", f"{output} exists; pass --overwrite to replace it")
            return export_locked(args, checkpoint, output)
    except LockError as e:
        return fail("export", str(e))


def export_locked(args: argparse.Namespace, checkpoint: Path, output: Path) -> int:
    """``run`` once its checks passed and it holds the lock of ``output``."""
    from maskconver.engine.checkpoint import CheckpointError
    from maskconver.export.onnx import ExportError, export_onnx, quantize_onnx

    if args.format == "tflite":
        return run_tflite(args, checkpoint, output)
    if args.format == "openvino":
        return run_openvino(args, checkpoint, output)
    if args.int8 == "weight-only":
        return fail("export", "--int8 weight-only goes with --format tflite (onnx: dynamic)")
    float_path = output.with_suffix(".fp32.onnx") if args.int8 else output
    try:
        meta = export_onnx(
            checkpoint, float_path, size=args.size, dynamic=args.dynamic, use_ema=not args.no_ema
        )
        size = (
            "dynamic" if meta.input_size is None else f"{meta.input_size[0]}x{meta.input_size[1]}"
        )
        print(f"exported {float_path} (input {size}, outputs {', '.join(meta.outputs)})")
        if args.int8:
            feeds = (
                calibration_inputs(float_path, args.calibration_images)
                if args.int8 == "static"
                else []
            )
            quantize_onnx(float_path, output, mode=args.int8, calibration=feeds)
            print(
                f"int8 ({args.int8}{f', {len(feeds)} calibration images' if feeds else ''}): "
                f"{output}"
            )
    except (ExportError, CheckpointError, OSError, ValueError) as e:
        return fail("export", str(e))
    return EXIT_OK


def run_tflite(args: argparse.Namespace, checkpoint: Path, output: Path) -> int:
    """``--format tflite``: the network at a fixed size, optionally weight-only/dynamic int8."""
    from maskconver.engine.checkpoint import CheckpointError
    from maskconver.export.graph import ExportError

    if args.dynamic:
        return fail("export", "--format tflite has a fixed input size: use --size H W")
    if args.int8 == "static":
        return fail("export", "--format tflite quantizes with --int8 weight-only or dynamic")
    try:
        from maskconver.export.tflite import export_tflite

        meta = export_tflite(
            checkpoint,
            output,
            size=args.size,
            quantization=TFLITE_INT8.get(args.int8, "none"),
            use_ema=not args.no_ema,
        )
    except (ExportError, CheckpointError, OSError, ValueError) as e:
        return fail("export", str(e))
    size = f"{meta.input_size[0]}x{meta.input_size[1]}" if meta.input_size else "dynamic"
    print(
        f"exported {output} (TFLite, input {size}, int8 {meta.quantization}, outputs "
        f"{', '.join(meta.outputs)})"
    )
    return EXIT_OK


def run_openvino(args: argparse.Namespace, checkpoint: Path, output: Path) -> int:
    """``--format openvino``: the ONNX graph as an IR; ``--int8``: NNCF, then the PQ check."""
    from maskconver.engine.checkpoint import CheckpointError
    from maskconver.export.graph import ExportError

    if args.int8 not in (None, "static"):
        return fail("export", "--format openvino quantizes with calibration: use --int8 (static)")
    float_path = output.with_suffix(".fp32.xml") if args.int8 else output
    try:
        from maskconver.export.openvino import (
            AccuracyCheck,
            accuracy_check,
            export_openvino,
            quantize_openvino,
        )

        meta = export_openvino(
            checkpoint, float_path, size=args.size, dynamic=args.dynamic, use_ema=not args.no_ema
        )
        size = f"{meta.input_size[0]}x{meta.input_size[1]}" if meta.input_size else "dynamic"
        print(f"exported {float_path} (OpenVINO IR, input {size}, outputs {len(meta.outputs)})")
        if not args.int8:
            return EXIT_OK
        feeds = calibration_inputs(float_path, args.calibration_images)
        quantize_openvino(float_path, output, feeds)
        print(f"int8 (NNCF, {len(feeds)} calibration images, merge in float): {output}")
        if args.check_images:
            check = accuracy_check(float_path, output, images=args.check_images)
            if isinstance(check, AccuracyCheck):
                print(
                    f"int8 check on {check.images} {check.data} validation images: PQ float "
                    f"{check.pq_float:.2f}, int8 {check.pq_int8:.2f} "
                    f"({check.pq_int8 - check.pq_float:+.2f})"
                )
            else:
                print(f"int8 check {check}", file=sys.stderr)
    except (ExportError, CheckpointError, OSError, ValueError) as e:
        return fail("export", str(e))
    return EXIT_OK
