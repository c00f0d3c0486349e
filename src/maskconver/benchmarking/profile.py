"""Per-layer roofline of an ONNX network (``maskconver benchmark --profile``): pure analysis.

Each layer (one node of the graph onnxruntime runs, after its fusions and layout changes) gets:

* ``macs``: multiply-accumulates from its shapes (``node_macs``): Conv and ConvTranspose
  ``elements x (Cin / groups) x kh x kw`` (weight ``[Cout, Cin/groups, kh, kw]``), MatMul and
  Gemm ``out elements x K``, Einsum the product of the sizes of every index letter; every other
  op 0;
* ``bytes``: what it reads and writes, every input (weights included) and output once (0 for
  the ops onnxruntime runs as views of their input: Reshape, Flatten, Squeeze...);
* ``ms``: median kernel time over the profiled runs (onnxruntime's profile JSON);
* its floor ``max(2 x macs / conv rate, bytes / bandwidth)`` with both rates measured in the
  same run, and ``bound``: ``compute`` when the first term is the larger, else ``memory``.

The network's floor is the sum of its layers' floors. The bandwidth is a DRAM stream's; a layer
whose tensors stay in cache can beat its memory floor, so the floor is a model, not a bound.

The measurements (sessions, probes) live in ``benchmarking.profile_run``, the text tables in
``benchmarking.profile_table``; nothing here imports onnxruntime or torch.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]

# bytes per element of the dtype names in onnxruntime's profile ("input_type_shape")
DTYPE_BYTES = {
    "float": 4,
    "float16": 2,
    "bfloat16": 2,
    "double": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
CONV_OPS = ("Conv", "FusedConv", "ConvTranspose", "QLinearConv", "ConvInteger")
MATMUL_OPS = ("MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul")
KERNEL_SUFFIX = "_kernel_time"
VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")  # onnxruntime aliases
CONV_WEIGHT_DIMS = 4  # [Cout, Cin / groups, kh, kw]
# the export module calls the network as ``self.model``: its nodes are named ``/model/...``;
# onnxruntime's layout reorders (unnamed) sit between the network's convs
NETWORK_PREFIX = "/model/"
LAYOUT_OPS = ("ReorderInput", "ReorderOutput")
NETWORK = "network"
MERGE = "merge"
COMPUTE = "compute"
MEMORY = "memory"
MS_PER_S = 1000.0
GIGA = 1e9
MEGA = 1e6


@dataclass(frozen=True)
class Tensor:
    """A tensor's shape and bytes per element."""

    shape: Shape
    itemsize: int

    @property
    def nbytes(self) -> int:
        """Bytes of the whole tensor."""
        return math.prod(self.shape) * self.itemsize


@dataclass(frozen=True)
class Layer:
    """One executed node: what it computes and how long it took.

    Attributes:
        name: the node name in the graph onnxruntime ran.
        op: the op type, e.g. ``Conv``.
        kind: the op with its kernel, e.g. ``Conv1x1``, ``Conv3x3 dw`` (depthwise), ``Resize``.
        shape: its first output's shape.
        macs: multiply-accumulates (``node_macs``).
        nbytes: bytes read and written (inputs, weights, outputs).
        ms: median kernel time in milliseconds.
    """

    name: str
    op: str
    kind: str
    shape: Shape
    macs: int
    nbytes: int
    ms: float


@dataclass(frozen=True)
class Rates:
    """The machine's rates, measured in the same run as the profile.

    Attributes:
        conv_gflops: a dense 3x3 conv's GFLOP/s (2 FLOPs per MAC).
        bandwidth_gbs: a large copy's GB/s (bytes read + written per second, 1e9).
    """

    conv_gflops: float
    bandwidth_gbs: float


def node_macs(
    op: str, inputs: Sequence[Shape], outputs: Sequence[Shape], attrs: Mapping[str, Any]
) -> int:
    """Multiply-accumulates of one node from its input and output shapes.

    Args:
        op: the op type (``Conv``, ``ConvTranspose``, ``MatMul``, ``Gemm``, ``Einsum``...).
        inputs: input shapes in node order (a Conv's weight is ``inputs[1]``).
        outputs: output shapes.
        attrs: node attributes (``transA`` of Gemm, ``equation`` of Einsum).

    Returns:
        The MACs; 0 for ops that are not products (activations, resizes, copies...).
    """
    if op in CONV_OPS:
        weight = inputs[3] if op == "QLinearConv" else inputs[1]
        if op == "ConvTranspose":  # weight [Cin, Cout/groups, kh, kw]: every input x its taps
            return math.prod(inputs[0]) * math.prod(weight[1:])
        return math.prod(outputs[0]) * math.prod(weight[1:])
    if op in MATMUL_OPS:
        return math.prod(outputs[0]) * inputs[0][-1]
    if op == "Gemm":
        a = inputs[0]
        k = a[0] if int(attrs.get("transA", 0)) else a[-1]
        return math.prod(outputs[0]) * k
    if op == "Einsum" and "equation" in attrs:
        return _einsum_macs(str(attrs["equation"]), inputs)
    return 0


def _einsum_macs(equation: str, inputs: Sequence[Shape]) -> int:
    """Product of the size of every index letter (each output element x each contracted one)."""
    operands = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, shape in zip(operands, inputs, strict=True):
        if "..." in letters:
            return 0  # broadcast ellipsis: not used by the exported graphs
        for letter, size in zip(letters, shape, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values())


def layer_kind(op: str, inputs: Sequence[Shape]) -> str:
    """The op with its kernel size for convolutions: ``Conv1x1``, ``Conv3x3 dw``, ``Conv7x7``."""
    if op not in CONV_OPS or len(inputs) < 2 or len(inputs[1]) != CONV_WEIGHT_DIMS:
        return op
    weight = inputs[1]
    channels_in = inputs[0][1] if len(inputs[0]) > 1 else 0
    depthwise = weight[1] == 1 and channels_in > 1
    return f"Conv{weight[2]}x{weight[3]}" + (" dw" if depthwise else "")


def compute_ms(layer: Layer, rates: Rates) -> float:
    """Milliseconds of the layer's FLOPs at the dense conv rate."""
    return 2 * layer.macs / (rates.conv_gflops * GIGA) * MS_PER_S


def memory_ms(layer: Layer, rates: Rates) -> float:
    """Milliseconds of the layer's bytes at the copy bandwidth."""
    return layer.nbytes / (rates.bandwidth_gbs * GIGA) * MS_PER_S


def floor_ms(layer: Layer, rates: Rates) -> float:
    """The layer's roofline floor: the slower of its compute and its memory time."""
    return max(compute_ms(layer, rates), memory_ms(layer, rates))


def bound(layer: Layer, rates: Rates) -> str:
    """``compute`` when the FLOPs take longer than the bytes at the rates, else ``memory``."""
    return COMPUTE if compute_ms(layer, rates) >= memory_ms(layer, rates) else MEMORY


def gflops(layer: Layer) -> float:
    """Achieved GFLOP/s (2 FLOPs per MAC); 0 for a layer of no MACs or no time."""
    return 2 * layer.macs / (layer.ms / MS_PER_S) / GIGA if layer.ms > 0 and layer.macs else 0.0


def network_floor_ms(layers: Iterable[Layer], rates: Rates) -> float:
    """The network's roofline floor: the sum of its layers' floors."""
    return sum(floor_ms(layer, rates) for layer in layers)


def _with_weights(listed: list[Tensor], slots: Sequence[Tensor | None] | None) -> list[Tensor]:
    """The profile's inputs with the pre-packed weights it left out put back in place.

    ``slots`` has one entry per node input: the initializer, or None for a computed input. The
    inputs missing from ``listed`` are taken to be the node's first initializers.
    """
    if slots is None or len(listed) >= len(slots):
        return listed
    missing = len(slots) - len(listed)
    rest = iter(listed)
    out = []
    for slot in slots:
        if slot is not None and missing > 0:
            out.append(slot)
            missing -= 1
        else:
            tensor = next(rest, None)
            if tensor is None:
                break
            out.append(tensor)
    return out


def graph_info(model: Any) -> tuple[dict[str, dict[str, Any]], dict[str, list[Tensor | None]]]:
    """Attributes and initializer inputs of every node of an ONNX model.

    Args:
        model: an ``onnx.ModelProto`` (e.g. the optimized graph onnxruntime saved).

    Returns:
        ``(attrs, weights)``: node name -> attributes (bytes decoded), and node name -> per
        input its initializer as a ``Tensor`` (None for a computed input).
    """
    from onnx import helper

    initializers = {
        init.name: Tensor(
            tuple(int(d) for d in init.dims),
            helper.tensor_dtype_to_np_dtype(init.data_type).itemsize,
        )
        for init in model.graph.initializer
    }
    attrs: dict[str, dict[str, Any]] = {}
    weights: dict[str, list[Tensor | None]] = {}
    for node in model.graph.node:
        values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs[node.name] = {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}
        weights[node.name] = [initializers.get(name) for name in node.input]
    return attrs, weights


def part_of(layer: Layer, inputs: Collection[str] = ()) -> str:
    """``network`` for the network's nodes, ``merge`` for the rest.

    The network is the nodes under ``NETWORK_PREFIX``, onnxruntime's layout reorders, and
    ``inputs``: the nodes outside it that the raw outputs need (the image's layout and type,
    ``export.scope``), which run whether or not the graph merges.
    """
    network = layer.name.startswith(NETWORK_PREFIX) or layer.op in LAYOUT_OPS
    return NETWORK if network or layer.name in inputs else MERGE


def _tensors(entries: Sequence[Mapping[str, Sequence[int]]]) -> list[Tensor]:
    """``[{"float": [1, 3, 8, 8]}, ...]`` (onnxruntime's profile) -> tensors."""
    out = []
    for entry in entries:
        ((dtype, shape),) = entry.items()
        out.append(Tensor(tuple(int(d) for d in shape), DTYPE_BYTES.get(dtype, 4)))
    return out


def layers_from_profile(
    events: Sequence[Mapping[str, Any]],
    attrs: Mapping[str, Mapping[str, Any]],
    *,
    weights: Mapping[str, Sequence[Tensor | None]] | None = None,
    skip_first: bool = True,
) -> list[Layer]:
    """Per-node layers from onnxruntime's profile events (median time over the runs).

    Args:
        events: the profile JSON's list (``SessionOptions.enable_profiling``).
        attrs: node name -> attributes of the graph onnxruntime ran (Gemm's ``transA``,
            Einsum's ``equation``); missing names get none.
        weights: node name -> per input, the initializer it reads (None for a computed
            input), from the graph onnxruntime ran (``graph_info``): the profile leaves out the
            weights a kernel pre-packed (ConvTranspose, MatMul, Gemm), these fill them in.
        skip_first: leave out each node's first run (allocation, first-touch warm-up).

    Returns:
        One ``Layer`` per node, in the order of the first run.
    """
    times: dict[str, list[float]] = {}
    first: dict[str, Mapping[str, Any]] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        node = name[: -len(KERNEL_SUFFIX)]
        first.setdefault(node, event["args"])
        times.setdefault(node, []).append(float(event["dur"]) / MS_PER_S)  # us -> ms
    layers = []
    for node, args in first.items():
        runs = times[node][1:] if skip_first and len(times[node]) > 1 else times[node]
        inputs = _with_weights(
            _tensors(args.get("input_type_shape", [])), (weights or {}).get(node)
        )
        outputs = _tensors(args.get("output_type_shape", []))
        op = str(args.get("op_name", "?"))
        in_shapes = [t.shape for t in inputs]
        out_shapes = [t.shape for t in outputs]
        layers.append(
            Layer(
                name=node,
                op=op,
                kind=layer_kind(op, in_shapes),
                shape=out_shapes[0] if out_shapes else (),
                macs=node_macs(op, in_shapes, out_shapes, attrs.get(node, {})),
                nbytes=0
                if op in VIEW_OPS
                else sum(t.nbytes for t in inputs) + sum(t.nbytes for t in outputs),
                ms=statistics.median(runs),
            )
        )
    return layers


def graph_macs(model: Any) -> dict[str, int]:
    """MACs of every node of an ONNX model from its shapes (``onnx.shape_inference``).

    Shapes already in the model's ``value_info`` (e.g. from onnxruntime's symbolic shape
    inference, which resolves more of them) are kept; a node with an unknown dimension counts 0.

    Args:
        model: an ``onnx.ModelProto``; node names must be unique.

    Returns:
        Node name -> MACs (``node_macs``; 0 for non-product ops).
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, Shape] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    attrs, _ = graph_info(inferred)
    out = {}
    for node in inferred.graph.node:
        inputs = [shapes.get(name, ()) for name in node.input]
        outputs = [shapes.get(name, ()) for name in node.output]
        out[node.name] = node_macs(node.op_type, inputs, outputs, attrs[node.name])
    return out


def summarize(layers: Sequence[Layer], rates: Rates) -> list[dict[str, Any]]:
    """Per kind (``Conv1x1``, ``Conv3x3 dw``, ``Resize``...): count, ms, share, GFLOP/s, floor."""
    total = sum(layer.ms for layer in layers) or 1.0
    kinds: dict[str, list[Layer]] = {}
    for layer in layers:
        kinds.setdefault(layer.kind, []).append(layer)
    rows = []
    for kind, group in kinds.items():
        ms = sum(layer.ms for layer in group)
        macs = sum(layer.macs for layer in group)
        rows.append(
            {
                "kind": kind,
                "count": len(group),
                "ms": ms,
                "share": ms / total,
                "gmacs": macs / GIGA,
                "gflops": 2 * macs / (ms / MS_PER_S) / GIGA if ms > 0 else 0.0,
                "floor_ms": network_floor_ms(group, rates),
            }
        )
    return sorted(rows, key=lambda row: -float(row["ms"]))


def layer_row(layer: Layer, rates: Rates, inputs: Collection[str] = ()) -> dict[str, Any]:
    """One layer as a JSON-ready row (with its GFLOP/s, floor and bound)."""
    return {
        "name": layer.name,
        "op": layer.op,
        "kind": layer.kind,
        "shape": list(layer.shape),
        "macs": layer.macs,
        "bytes": layer.nbytes,
        "ms": layer.ms,
        "gflops": gflops(layer),
        "floor_ms": floor_ms(layer, rates),
        "bound": bound(layer, rates),
        "part": part_of(layer, inputs),
    }
