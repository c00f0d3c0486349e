"""Measurements behind ``maskconver benchmark --profile`` (the analysis is ``profile``).

In one process, in interleaved rounds (every measurement once per round, medians), with
onnxruntime at the same thread count and session options:

* the exported network (untrained weights, random image), timed as a whole;
* the same network in a profiling session (``SessionOptions.enable_profiling``): each node's
  kernel time, its input and output shapes (MACs and bytes come from them);
* the dense conv rate: the faster of a 3x3 conv, 256 -> 256 channels at 128 x 128, and a 1x1
  conv, 256 -> 256 at 32 x 32, chains of two and four (each conv's kernel time in the profile,
  so the layout reorders around the chain are not counted);
* the memory bandwidth: a copy of a 128 MiB float tensor (``x + 0``, read and written once;
  the kernel's time in its profile).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskconver.benchmarking.measure import cpu_model
from maskconver.benchmarking.profile import (
    MERGE,
    MS_PER_S,
    NETWORK,
    Layer,
    Rates,
    gflops,
    graph_info,
    graph_macs,
    layer_row,
    layers_from_profile,
    network_floor_ms,
    part_of,
    summarize,
)
from maskconver.benchmarking.profile_table import format_kinds, format_layers

PROBE_CHANNELS = 256
# the dense conv probes; the compute roof is the faster of the two (on the CPU
# measured in docs/profile.md onnxruntime's 1x1 kernel on cache-resident data ran twice as fast
# as its 3x3 one)
CONV_PROBES = {"conv3x3": (3, 128, 2), "conv1x1": (1, 32, 4)}  # kernel, size, convs in a chain
COPY_ELEMENTS = 32 * 2**20  # float32: 128 MiB, far beyond any cache
DEFAULT_ROUNDS = 20
DEFAULT_TOP = 15
MERGE_TOP = 5
OPSET = 17
LOG_ERRORS_ONLY = 3  # onnxruntime's log severity


def conv_probe(kernel: int, size: int, depth: int) -> tuple[Any, dict[str, np.ndarray]]:
    """A chain of ``depth`` dense convs (256 -> 256, ``kernel`` x ``kernel`` at ``size``).

    Each conv reads the previous one's output, as a network's layers do (in cache where it fits).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c, pad = PROBE_CHANNELS, kernel // 2
    weight = rng.standard_normal((c, c, kernel, kernel)).astype(np.float32) * 0.01
    names = ["x", *(f"y{i}" for i in range(depth))]
    nodes = [
        helper.make_node(
            "Conv", [names[i], "w"], [names[i + 1]], name=f"probe_conv{i}", pads=[pad] * 4
        )
        for i in range(depth)
    ]
    shape = [1, c, size, size]
    graph = helper.make_graph(
        nodes,
        "conv_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return model, {"x": rng.standard_normal(shape).astype(np.float32)}


def probe_gflops(layers: list[Layer]) -> float:
    """GFLOP/s of a conv probe: the median over its chain's convs after the first."""
    convs = [layer for layer in layers if layer.op == "Conv"]
    return statistics.median(gflops(layer) for layer in convs[1:] or convs)


def copy_probe(elements: int = COPY_ELEMENTS) -> tuple[Any, dict[str, np.ndarray]]:
    """An ONNX graph that copies ``elements`` floats (``y = x + 0``) and its feed."""
    from onnx import TensorProto, helper, numpy_helper

    zero = numpy_helper.from_array(np.zeros((1,), np.float32), "zero")
    node = helper.make_node("Add", ["x", "zero"], ["y"], name="probe_copy")
    graph = helper.make_graph(
        [node],
        "copy_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [elements])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])],
        [zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return model, {"x": np.ones((elements,), np.float32)}


class ProfiledSession:
    """An onnxruntime session that records every node's kernel time.

    Args:
        model: an ``onnx.ModelProto`` or a path.
        folder: where the profile JSON and the optimized graph (node attributes) go.
        name: a file-name prefix inside ``folder``.
        threads: intra-op threads.
        spinning: see ``export.runtime.session_options``.
    """

    def __init__(
        self, model: Any, folder: Path, name: str, *, threads: int, spinning: bool
    ) -> None:
        import onnxruntime as ort

        from maskconver.export.runtime import session_options

        options = session_options(threads, spinning=spinning)
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / name)
        options.log_severity_level = LOG_ERRORS_ONLY
        self.optimized = folder / f"{name}_optimized.onnx"
        options.optimized_model_filepath = str(self.optimized)
        source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def run(self, feed: dict[str, np.ndarray]) -> None:
        """One profiled run."""
        self.session.run(None, feed)

    def layers(self) -> list[Layer]:
        """End profiling; each node's layer (median over the runs after the first)."""
        import onnx

        events = json.loads(Path(self.session.end_profiling()).read_text(encoding="utf-8"))
        attrs, weights = graph_info(onnx.load(str(self.optimized)))
        return layers_from_profile(events, attrs, weights=weights)


def plain_session(path: Path, *, threads: int, spinning: bool) -> Any:
    """An onnxruntime session without profiling (the network's own time)."""
    import onnxruntime as ort

    from maskconver.export.runtime import session_options

    options = session_options(threads, spinning=spinning)
    options.log_severity_level = LOG_ERRORS_ONLY
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_untrained(
    preset: str,
    overrides: list[str],
    size: tuple[int, int],
    num_classes: int,
    path: Path,
    *,
    seed: int = 0,
) -> None:
    """Export the config's model with untrained weights (random init ``seed``) at ``size``."""
    from maskconver.build import build_model
    from maskconver.config import load_config
    from maskconver.data.types import Category, CategorySet
    from maskconver.export.onnx import export_model

    cfg = load_config(preset, overrides)
    classes = cfg.model.num_classes or num_classes
    categories = CategorySet(
        [Category(i + 1, f"class{i + 1}", i % 2 == 0) for i in range(classes)], "contiguous"
    )
    torch.manual_seed(seed)
    model = build_model(cfg.model, classes).eval()
    export_model(model, cfg, categories, classes, path, size=size)


def static_shapes(model: Any) -> Any:
    """The model with onnxruntime's symbolic shape inference in its ``value_info``.

    It resolves shapes that ``onnx.shape_inference`` leaves symbolic (a batch dimension behind an
    ``Expand``); on failure the model comes back as it was.
    """
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - a best effort; onnx's own inference still runs
        return model


def network_feed(size: tuple[int, int]) -> dict[str, np.ndarray]:
    """A random uint8 image and its sizes (the exported graph's inputs)."""
    image = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    sizes = np.array(size, dtype=np.int64)
    return {"image": image, "valid_size": sizes, "output_size": sizes}


def profile_network(
    preset: str,
    overrides: list[str],
    *,
    size: tuple[int, int],
    threads: int,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = 2,
    num_classes: int,
    spinning: bool | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Profile the exported network against the rates measured in the same run.

    Returns:
        The report: rates, network time, floor, ratio, per-layer and per-kind rows.
    """
    import onnx

    from maskconver.export.runtime import DEFAULT_SPINNING
    from maskconver.export.scope import merge_node_names, outside_network

    spin = DEFAULT_SPINNING if spinning is None else spinning
    with tempfile.TemporaryDirectory(prefix="maskconver-profile-") as tmp:
        folder = Path(tmp)
        path = folder / "model.onnx"
        export_untrained(preset, overrides, size, num_classes, path, seed=seed)
        exported = onnx.load(str(path))
        inputs = frozenset(outside_network(exported)) - frozenset(merge_node_names(exported))
        analytic_macs = sum(graph_macs(static_shapes(onnx.load(str(path)))).values())
        feed = network_feed(size)
        copy_model, copy_feed = copy_probe()
        kw: dict[str, Any] = {"threads": threads, "spinning": spin}
        profiled = {
            "network": (ProfiledSession(path, folder, "network", **kw), feed),
            "copy": (ProfiledSession(copy_model, folder, "copy", **kw), copy_feed),
        }
        for name, (kernel, probe_size, depth) in CONV_PROBES.items():
            model, probe_feed = conv_probe(kernel, probe_size, depth)
            profiled[name] = (ProfiledSession(model, folder, name, **kw), probe_feed)
        plain = plain_session(path, threads=threads, spinning=spin)
        for _ in range(warmup):
            plain.run(None, feed)
        times = []
        for _ in range(rounds + 1):  # the first profiled run of each node is left out
            for session, probe_feed in profiled.values():
                session.run(probe_feed)
            start = time.perf_counter()
            plain.run(None, feed)
            times.append((time.perf_counter() - start) * MS_PER_S)
        layers = {name: session.layers() for name, (session, _) in profiled.items()}
    conv_rates = {name: probe_gflops(layers[name]) for name in CONV_PROBES}
    copy = next(layer for layer in layers["copy"] if layer.op == "Add")
    rates = Rates(
        conv_gflops=max(conv_rates.values()),
        bandwidth_gbs=copy.nbytes / (copy.ms / MS_PER_S) / 1e9,
    )
    network_ms = statistics.median(times[1:])
    report: dict[str, Any] = {
        "preset": preset,
        "size": list(size),
        "threads": threads,
        "spinning": spin,
        "rounds": rounds,
        "cpu": cpu_model(),
        "conv_gflops": rates.conv_gflops,
        "conv_probes_gflops": conv_rates,
        "bandwidth_gbs": rates.bandwidth_gbs,
        "graph_ms": network_ms,
        "graph_macs": analytic_macs,
        "profiled_macs": sum(layer.macs for layer in layers["network"]),
        "parts": {},
        "layers": [layer_row(layer, rates, inputs) for layer in layers["network"]],
    }
    for part in (NETWORK, MERGE):
        group = [layer for layer in layers["network"] if part_of(layer, inputs) == part]
        kernels = sum(layer.ms for layer in group)
        floor = network_floor_ms(group, rates)
        report["parts"][part] = {
            "kernels_ms": kernels,
            "floor_ms": floor,
            "ratio": kernels / floor if floor > 0 else 0.0,
            "kinds": summarize(group, rates),
        }
    report["beat_floor"] = sum(1 for r in report["layers"] if r["ms"] < r["floor_ms"])
    whole = network_floor_ms(layers["network"], rates)
    report["floor_ms"] = whole
    report["ratio"] = network_ms / whole
    return report


def format_profile(report: dict[str, Any], *, top: int = DEFAULT_TOP) -> str:
    """The report as text: rates, the graph and its parts against their floors, the top layers."""
    h, w = report["size"]
    network, merge = report["parts"][NETWORK], report["parts"][MERGE]
    rows = report["layers"]
    lines = [
        f"preset {report['preset']} at {h}x{w}, onnxruntime {report['threads']} thread(s), "
        f"spinning {'on' if report['spinning'] else 'off'}, {report['rounds']} interleaved "
        f"rounds, medians; CPU: {report['cpu']}",
        f"dense conv rate {report['conv_gflops']:.1f} GFLOP/s, the faster of "
        + ", ".join(
            f"{k}x{k} {PROBE_CHANNELS} -> {PROBE_CHANNELS} at {n}x{n}: "
            f"{report['conv_probes_gflops'][name]:.1f}"
            for name, (k, n, _) in CONV_PROBES.items()
        )
        + f"; memory bandwidth {report['bandwidth_gbs']:.1f} GB/s (copy of "
        f"{COPY_ELEMENTS * 4 // 2**20} MiB)",
        f"layers faster than their floor: {report['beat_floor']} of {len(rows)}",
        f"MACs {report['graph_macs'] / 1e9:.3f} G from the exported graph's shapes, "
        f"{report['profiled_macs'] / 1e9:.3f} G in the nodes onnxruntime ran",
        f"network (/model/ nodes and the image's layout): kernels {network['kernels_ms']:.2f} "
        f"ms, roofline floor {network['floor_ms']:.2f} ms, network / floor {network['ratio']:.2f}",
        f"merge (the panoptic merge core): kernels {merge['kernels_ms']:.2f} ms, floor "
        f"{merge['floor_ms']:.2f} ms, merge / floor {merge['ratio']:.2f}",
        f"whole graph: {report['graph_ms']:.2f} ms per run (kernels "
        f"{network['kernels_ms'] + merge['kernels_ms']:.2f} ms, the rest is scheduling between "
        f"them), floor {report['floor_ms']:.2f} ms, graph / floor {report['ratio']:.2f}",
        "",
        "network per kind:",
        format_kinds(network["kinds"]),
        "",
        f"network: top {top} layers by time:",
        format_layers([r for r in rows if r["part"] == NETWORK], top=top),
        "",
        f"merge: top {MERGE_TOP} layers by time:",
        format_layers([r for r in rows if r["part"] == MERGE], top=MERGE_TOP),
    ]
    return "\n".join(lines)
