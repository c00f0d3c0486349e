"""OpenVINO vs onnxruntime on the exported graph: network alone and end to end, fp32 / bf16 / int8.

    python benchmarks/openvino_speed.py --threads 2
    python benchmarks/openvino_speed.py --preset mobilenet_mh_256 --rounds 40

Random weights, every proposal valid (``object_threshold`` 0, so the merge handles all K). Per
preset: the graph exported to ONNX at the eval size, converted to an IR, int8 through NNCF
(``export.openvino.quantize_openvino``, 16 synthetic calibration scenes; the default leaves the
depthwise convolutions in float, ``dw-int8`` quantizes them too) and onnxruntime's static int8
for reference.
"network" runs the graph cut at the raw outputs (``mask_logits``, peaks: no merge), "end to end"
the whole graph (merge core included; the Python numbering step is the same for every runtime
and left out). Interleaved rounds (every contender once per round), medians in ms.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from maskconver.build import build_model
from maskconver.config import load_config
from maskconver.data.types import Category, CategorySet
from maskconver.export.graph import CORE_OUTPUTS, SEMANTIC_OUTPUT
from maskconver.export.onnx import export_model, quantize_onnx
from maskconver.export.openvino import convert_onnx, quantize_openvino
from maskconver.export.runtime import OnnxPanopticModel, session_options

NUM_CLASSES = 201
CALIBRATION = 16
CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


def cpu_description() -> str:
    """The CPU model and its int8 / bf16 flags, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "")
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return f"{name} ({', '.join(f for f in CPU_FLAGS if f in flags) or 'no VNNI/AMX'})"


def contenders(preset: str, threads: int, folder: Path) -> tuple[int, dict[str, Callable[[], Any]]]:
    """Name -> one call, for the network and the whole graph of each runtime and precision."""
    import onnx
    import onnxruntime as ort
    import openvino as ov

    from maskconver.commands.export import calibration_inputs

    cfg = load_config(preset, ["model.maskconver.merge.object_threshold=0.0"])
    size = cfg.eval.input_size
    categories = CategorySet(
        [Category(i + 1, f"c{i + 1}", i % 2 == 0) for i in range(NUM_CLASSES)], "contiguous"
    )
    model = build_model(cfg.model, NUM_CLASSES).eval()
    paths = {name: folder / f"{preset}_{name}" for name in ("onnx", "xml", "int8", "int8dw")}
    export_model(model, cfg, categories, NUM_CLASSES, paths["onnx"].with_suffix(".onnx"))
    fp32 = paths["onnx"].with_suffix(".onnx")
    convert_onnx(fp32, paths["xml"].with_suffix(".xml"))
    feeds = calibration_inputs(paths["xml"].with_suffix(".xml"), None, count=CALIBRATION)
    quantize_openvino(paths["xml"].with_suffix(".xml"), paths["int8"].with_suffix(".xml"), feeds)
    quantize_openvino(
        paths["xml"].with_suffix(".xml"),
        paths["int8dw"].with_suffix(".xml"),
        feeds,
        ignore_depthwise=False,
    )
    ort_int8 = folder / f"{preset}_ort_int8.onnx"
    quantize_onnx(fp32, ort_int8, mode="static", calibration=feeds[:4])
    raw = [o for o in onnx.load(str(fp32), load_external_data=False).graph.output]
    raw_names = [o.name for o in raw if o.name not in (*CORE_OUTPUTS, SEMANTIC_OUTPUT)]
    image = (np.random.default_rng(1).random((1, size, size, 3)) * 255).astype(np.uint8)
    feed = {
        "image": image,
        "valid_size": np.array([size, size]),
        "output_size": np.array([size, size]),
    }
    out: dict[str, Callable[[], Any]] = {}
    for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", ort_int8)):
        whole = OnnxPanopticModel(path, threads=threads)
        net_path = folder / f"net_{path.name}"
        onnx.utils.extract_model(str(path), str(net_path), ["image"], raw_names)
        net = ort.InferenceSession(
            str(net_path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        out[f"{name} | network"] = lambda net=net: net.run(None, {"image": image})
        out[f"{name} | end to end"] = lambda m=whole: m.session.run(None, feed)
    core = ov.Core()
    variants = [
        ("openvino f32", "xml", "f32"),
        ("openvino int8", "int8", "f32"),
        ("openvino int8 dw-int8", "int8dw", "f32"),
        ("openvino bf16", "xml", "bf16"),
        ("openvino int8+bf16", "int8", "bf16"),
    ]
    for name, key, precision in variants:
        graph = core.read_model(str(paths[key].with_suffix(".xml")))
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        net_model = ov.Model(
            [graph.output(n) for n in raw_names], [graph.input("image").get_node()]
        )
        net = core.compile_model(net_model, "CPU", config).create_infer_request()
        whole = core.compile_model(graph, "CPU", config).create_infer_request()
        out[f"{name} | network"] = lambda r=net: r.infer({"image": image})
        out[f"{name} | end to end"] = lambda r=whole: r.infer(feed)
    return size, out


def main() -> None:
    """Print the table of every preset."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", nargs="+", default=["mobilenet_mh_256", "mobilenet_mh_640"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    print(f"CPU: {cpu_description()}; {args.threads} threads, {args.rounds} interleaved rounds")
    for preset in args.preset:
        with tempfile.TemporaryDirectory() as tmp:
            size, calls = contenders(preset, args.threads, Path(tmp))
            for fn in calls.values():
                for _ in range(args.warmup):
                    fn()
            times: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, fn in calls.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(1e3 * (time.perf_counter() - start))
        print(f"\n{preset} @ {size}x{size} (all proposals valid)")
        print(f"{'runtime':28s} {'network ms':>11s} {'end to end ms':>14s}")
        for runtime in dict.fromkeys(name.split(" | ")[0] for name in calls):
            net = statistics.median(times[f"{runtime} | network"])
            whole = statistics.median(times[f"{runtime} | end to end"])
            print(f"{runtime:28s} {net:11.1f} {whole:14.1f}")


if __name__ == "__main__":
    main()
