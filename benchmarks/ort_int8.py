"""Does any int8 pay on onnxruntime? Every quantization onnxruntime offers, timed against fp32.

    python benchmarks/ort_int8.py --threads 2
    python benchmarks/ort_int8.py --preset mobilenet_mh_640 --rounds 10

Random weights; the network alone (the exported graph cut at its raw outputs: the merge is
float in every variant and the same for all). Variants, all from ``onnxruntime.quantization``
with 8 synthetic calibration scenes (the export's ``calibration_inputs``):

* ``static QDQ``: what ``maskconver export --int8 static`` writes (per-channel int8 weights,
  uint8 activations, QDQ format: onnxruntime fuses the pairs into ``QLinearConv``);
* ``static QDQ, depthwise float``: the same with the depthwise convolutions left in float
  (NNCF's choice on OpenVINO, where it measured them best);
* ``static QOperator``: the operator format (``QLinearConv`` written directly);
* ``dynamic``: int8 weights, activations quantized at run time (``ConvInteger``).

Interleaved rounds (every variant once per round), medians in ms, the ratio to fp32, and where
each variant's time goes: the kernel time per operator type from onnxruntime's profiler (median
over the profiled runs), so the reason a variant does not pay can be read off the table.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openvino_speed import cpu_description  # noqa: E402

from maskconver.build import build_model  # noqa: E402
from maskconver.config import load_config  # noqa: E402
from maskconver.data.types import Category, CategorySet  # noqa: E402
from maskconver.export.graph import CORE_OUTPUTS, SEMANTIC_OUTPUT  # noqa: E402
from maskconver.export.onnx import export_model  # noqa: E402
from maskconver.export.runtime import session_options  # noqa: E402

NUM_CLASSES = 201
CALIBRATION = 8
PROFILED_RUNS = 10


def network_graph(preset: str, folder: Path) -> tuple[Path, int, list[dict[str, Any]]]:
    """The preset's network (exported, cut at the raw outputs), its size, calibration feeds."""
    import onnx

    from maskconver.commands.export import calibration_inputs

    cfg = load_config(preset, ["model.maskconver.merge.object_threshold=0.0"])
    size = cfg.eval.input_size
    categories = CategorySet(
        [Category(i + 1, f"c{i + 1}", i % 2 == 0) for i in range(NUM_CLASSES)], "contiguous"
    )
    whole = folder / "whole.onnx"
    export_model(build_model(cfg.model, NUM_CLASSES).eval(), cfg, categories, NUM_CLASSES, whole)
    outputs = onnx.load(str(whole), load_external_data=False).graph.output
    raw = [o.name for o in outputs if o.name not in (*CORE_OUTPUTS, SEMANTIC_OUTPUT)]
    network = folder / "network.onnx"
    onnx.utils.extract_model(str(whole), str(network), ["image"], raw)
    feeds = [{"image": f["image"]} for f in calibration_inputs(whole, None, count=CALIBRATION)]
    return network, size, feeds


def depthwise_nodes(path: Path) -> list[str]:
    """Names of the grouped convolutions with one input channel per group."""
    import onnx

    model = onnx.load(str(path))
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shape = weights.get(node.input[1]) if node.op_type == "Conv" else None
        if shape is not None and group > 1 and shape[1] == 1:
            names.append(node.name)
    return names


def quantized(network: Path, feeds: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    """Every int8 variant of ``network`` (module docstring)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    prepared = folder / "prepared.onnx"
    quant_pre_process(str(network), str(prepared), skip_symbolic_shape=True)
    ops = ["Conv", "MatMul", "Gemm"]
    out = {"fp32": network}
    static = {
        "static QDQ": (QuantFormat.QDQ, [], ops),
        "static QDQ, depthwise float": (QuantFormat.QDQ, depthwise_nodes(prepared), ops),
        "static QOperator": (QuantFormat.QOperator, [], ops),
        "static QDQ, every op": (QuantFormat.QDQ, [], None),
    }
    for name, (fmt, exclude, types) in static.items():
        path = folder / f"{len(out)}.onnx"
        quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=fmt,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=types,
            nodes_to_exclude=exclude,
        )
        out[name] = path
    path = folder / "dynamic.onnx"
    quantize_dynamic(str(network), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=ops)
    out["dynamic"] = path
    return out


def kernel_ms(path: Path, feed: dict[str, Any], threads: int, folder: Path) -> dict[str, float]:
    """Median kernel ms per operator type over ``PROFILED_RUNS`` profiled runs."""
    import onnxruntime as ort

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(PROFILED_RUNS + 1):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    per_node: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[(event["name"], event["args"]["op_name"])].append(event["dur"] / 1e3)
    kinds: dict[str, float] = collections.defaultdict(float)
    for (_, op), durations in per_node.items():
        kinds[op] += statistics.median(durations[1:] or durations)
    return dict(kinds)


def main() -> None:
    """Print, per preset, the variants' medians and their kernel time per operator type."""
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["mobilenet_mh_256"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    print(f"CPU: {cpu_description()}; onnxruntime {ort.__version__}, {args.threads} threads")
    for preset in args.preset:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            network, size, feeds = network_graph(preset, folder)
            variants = quantized(network, feeds, folder)
            feed = feeds[0]
            calls: dict[str, Callable[[], Any]] = {}
            for name, path in variants.items():
                session = ort.InferenceSession(
                    str(path), session_options(args.threads), providers=["CPUExecutionProvider"]
                )
                calls[name] = lambda s=session, f=feed: s.run(None, f)
            times: dict[str, list[float]] = {name: [] for name in calls}
            for round_ in range(args.rounds + 2):
                for name, call in calls.items():
                    start = time.perf_counter()
                    call()
                    if round_ >= 2:
                        times[name].append(1e3 * (time.perf_counter() - start))
            kinds = {n: kernel_ms(path, feed, args.threads, folder) for n, path in variants.items()}
        medians = {name: statistics.median(t) for name, t in times.items()}
        print(f"\n{preset} @ {size}x{size}, network only, {args.rounds} interleaved rounds")
        print(f"{'variant':30s} {'ms':>8s} {'fp32 / it':>10s}")
        for name, ms in medians.items():
            print(f"{name:30s} {ms:8.2f} {medians['fp32'] / ms:9.2f}x")
        ops = sorted(
            {op for k in kinds.values() for op in k},
            key=lambda o: -kinds["dynamic"].get(o, 0) - max(k.get(o, 0) for k in kinds.values()),
        )
        print("\nkernel ms per operator type (median of the profiled runs)")
        print(f"{'op':24s}" + "".join(f"{n[:16]:>18s}" for n in kinds))
        for op in ops:
            row = [kinds[n].get(op, 0.0) for n in kinds]
            if max(row) >= 0.05:
                print(f"{op:24s}" + "".join(f"{v:18.2f}" for v in row))
        print(f"{'all kernels':24s}" + "".join(f"{sum(k.values()):18.2f}" for k in kinds.values()))


if __name__ == "__main__":
    main()
