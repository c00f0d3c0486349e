"""``benchmark --profile``: MAC counting, profile parsing, the roofline bound, the tables; the
``--compare`` additions (spinning option, EoMT peers, optional backends, CPU model)."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from maskconver.benchmarking.profile import (
    COMPUTE,
    MEMORY,
    MERGE,
    NETWORK,
    Layer,
    Rates,
    bound,
    floor_ms,
    gflops,
    graph_info,
    graph_macs,
    layer_kind,
    layer_row,
    layers_from_profile,
    network_floor_ms,
    node_macs,
    part_of,
    summarize,
)
from maskconver.benchmarking.profile_table import format_kinds, format_layers
from maskconver.export.graph import CORE_OUTPUTS

onnx = pytest.importorskip("onnx", reason="the onnx extra builds the hand-made graphs")


def hand_built_graph() -> tuple[object, dict[str, int]]:
    """A graph of every op ``node_macs`` counts, and each node's MACs derived by hand."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> object:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    c_in, c_mid, h, w = 4, 8, 10, 12
    nodes = [
        # dense 3x3, stride 1, pad 1: [1, 8, 10, 12] outputs, each 4 x 3 x 3 MACs
        helper.make_node("Conv", ["x", "w1"], ["a"], name="dense", pads=[1, 1, 1, 1]),
        # depthwise 3x3 stride 2: [1, 8, 5, 6] outputs, each 1 x 3 x 3
        helper.make_node(
            "Conv", ["a", "w2"], ["b"], name="dw", group=c_mid, strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        # pointwise 8 -> 16 with 2 groups: [1, 16, 5, 6] outputs, each 4 x 1 x 1
        helper.make_node("Conv", ["b", "w3"], ["c"], name="grouped", group=2),
        # transposed 2x2 stride 2, 16 -> 4: each of the 16 x 5 x 6 inputs x 4 x 2 x 2
        helper.make_node("ConvTranspose", ["c", "w4"], ["d"], name="up", strides=[2, 2]),
        helper.make_node("Reshape", ["d", "shape"], ["e"], name="flat"),  # [1, 4, 120]
        # [1, 4, 120] @ [120, 7]: 4 x 7 outputs, each 120 MACs
        helper.make_node("MatMul", ["e", "m"], ["f"], name="matmul"),
        helper.make_node("Reshape", ["f", "shape2"], ["g"], name="flat2"),  # [4, 7]
        # Gemm with transA: A [4, 7] -> A^T [7, 4] @ B [4, 3]: 7 x 3 outputs, each 4 MACs
        helper.make_node("Gemm", ["g", "gb"], ["y"], name="gemm", transA=1),
        # einsum bke,behw->bkhw: b 1, k 3, e 4, h 5, w 6
        helper.make_node("Einsum", ["k", "c4"], ["z"], name="einsum", equation="bke,behw->bkhw"),
        helper.make_node("Relu", ["z"], ["r"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "hand_built",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, h, w]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 3, 4]),
            helper.make_tensor_value_info("c4", TensorProto.FLOAT, [1, 4, 5, 6]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
        ],
        [
            weight("w1", c_mid, c_in, 3, 3),
            weight("w2", c_mid, 1, 3, 3),
            weight("w3", 16, 4, 1, 1),
            weight("w4", 16, 4, 2, 2),
            numpy_helper.from_array(np.array([1, 4, 120], np.int64), "shape"),
            weight("m", 120, 7),
            numpy_helper.from_array(np.array([4, 7], np.int64), "shape2"),
            weight("gb", 4, 3),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    expected = {
        "dense": (8 * 10 * 12) * (4 * 3 * 3),
        "dw": (8 * 5 * 6) * (1 * 3 * 3),
        "grouped": (16 * 5 * 6) * 4,
        "up": (16 * 5 * 6) * (4 * 2 * 2),
        "flat": 0,
        "matmul": (4 * 7) * 120,
        "flat2": 0,
        "gemm": (7 * 3) * 4,
        "einsum": 1 * 3 * 4 * 5 * 6,
        "relu": 0,
    }
    return model, expected


def test_graph_macs_match_hand_derived_counts() -> None:
    model, expected = hand_built_graph()
    assert graph_macs(model) == expected


def test_graph_macs_agree_with_onnxruntime_shapes() -> None:
    """The shapes onnxruntime reports while running give the same MACs (profile path)."""
    ort = pytest.importorskip("onnxruntime", reason="profiling needs onnxruntime")
    model, expected = hand_built_graph()
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(1)
    feed = {
        "x": rng.standard_normal((1, 4, 10, 12)).astype(np.float32),
        "k": rng.standard_normal((1, 3, 4)).astype(np.float32),
        "c4": rng.standard_normal((1, 4, 5, 6)).astype(np.float32),
    }
    for _ in range(3):
        session.run(None, feed)
    with open(session.end_profiling(), encoding="utf-8") as f:
        events = json.load(f)
    # the profile leaves out the weights ConvTranspose / MatMul / Gemm pre-packed: the graph's
    # initializers fill them in
    attrs, weights = graph_info(model)
    layers = {layer.name: layer for layer in layers_from_profile(events, attrs, weights=weights)}
    assert {name: layers[name].macs for name in expected} == expected
    assert layers["dense"].kind == "Conv3x3" and layers["dw"].kind == "Conv3x3 dw"
    assert layers["grouped"].kind == "Conv1x1"
    # bytes: input + weight + output of the dense conv, float32
    assert layers["dense"].nbytes == 4 * (4 * 10 * 12 + 8 * 4 * 9 + 8 * 10 * 12)
    assert layers["matmul"].nbytes == 4 * (4 * 120 + 120 * 7 + 4 * 7)  # the packed weight too


def test_node_macs_of_other_ops_is_zero() -> None:
    assert node_macs("Resize", [(1, 3, 4, 4)], [(1, 3, 8, 8)], {}) == 0
    assert node_macs("Einsum", [(2, 3)], [(2,)], {}) == 0  # no equation known


def event(node: str, dur_us: float, op: str = "Conv") -> dict[str, object]:
    return {
        "cat": "Node",
        "name": f"{node}_kernel_time",
        "dur": dur_us,
        "args": {
            "op_name": op,
            "input_type_shape": [{"float": [1, 2, 4, 4]}, {"float": [3, 2, 1, 1]}],
            "output_type_shape": [{"float": [1, 3, 4, 4]}],
        },
    }


def test_profile_median_leaves_out_first_run() -> None:
    runs = [1000.0, 10.0, 30.0, 20.0]  # microseconds; the first run is the warm-up
    events = [event("/model/conv", d) for d in runs]
    events += [{"cat": "Session", "name": "model_run", "dur": 5}]
    events += [event("/model/conv_fence", 1.0)]
    events[-1]["name"] = "/model/conv_fence_before"  # not a kernel: ignored
    (layer,) = layers_from_profile(events, {})
    assert layer.ms == pytest.approx(0.020)  # median of 10, 30, 20 us
    assert layer.macs == 3 * 4 * 4 * 2 and layer.shape == (1, 3, 4, 4)
    assert layer.nbytes == 4 * (2 * 16 + 6 + 3 * 16)


def make_layer(
    macs: int, nbytes: int, ms: float, name: str = "/model/x", op: str = "Conv"
) -> Layer:
    return Layer(name=name, op=op, kind=op, shape=(1, 8, 4, 4), macs=macs, nbytes=nbytes, ms=ms)


def test_bound_and_floor_on_made_up_numbers() -> None:
    rates = Rates(conv_gflops=100.0, bandwidth_gbs=10.0)
    # 1 GMAC = 2 GFLOP: 20 ms at 100 GFLOP/s; 0.1 GB: 10 ms at 10 GB/s -> compute-bound
    compute = make_layer(macs=10**9, nbytes=10**8, ms=25.0)
    assert bound(compute, rates) == COMPUTE and floor_ms(compute, rates) == pytest.approx(20.0)
    # 1 MMAC: 0.02 ms; 10 MB: 1 ms -> memory-bound
    memory = make_layer(macs=10**6, nbytes=10**7, ms=2.0)
    assert bound(memory, rates) == MEMORY and floor_ms(memory, rates) == pytest.approx(1.0)
    no_macs = make_layer(macs=0, nbytes=10**6, ms=0.5, op="Relu")
    assert bound(no_macs, rates) == MEMORY and gflops(no_macs) == 0.0
    assert network_floor_ms([compute, memory, no_macs], rates) == pytest.approx(21.1)
    assert gflops(compute) == pytest.approx(2 * 10**9 / 0.025 / 1e9)


def test_parts_and_kinds() -> None:
    rates = Rates(conv_gflops=100.0, bandwidth_gbs=10.0)
    layers = [
        make_layer(10**6, 10**6, 1.0),
        make_layer(10**6, 10**6, 3.0, name="/model/y"),
        make_layer(0, 10**6, 1.0, name="ReorderOutput_3", op="ReorderOutput"),
        make_layer(0, 10**6, 5.0, name="/Resize", op="Resize"),
    ]
    assert [part_of(layer) for layer in layers] == [NETWORK, NETWORK, NETWORK, MERGE]
    kinds = summarize(layers, rates)
    assert [k["kind"] for k in kinds] == ["Resize", "Conv", "ReorderOutput"]
    conv = kinds[1]
    assert conv["count"] == 2 and conv["ms"] == 4.0 and conv["share"] == pytest.approx(0.4)
    assert conv["gflops"] == pytest.approx(2 * 2 * 10**6 / 0.004 / 1e9)
    assert "Resize" in format_kinds(kinds)
    assert layer_kind("Conv", [(1, 8, 4, 4), (8, 1, 5, 5)]) == "Conv5x5 dw"
    assert layer_kind("Conv", [(1, 1, 4, 4), (8, 1, 5, 5)]) == "Conv5x5"  # one input channel


def test_table_printer_lists_top_layers_then_the_rest() -> None:
    rates = Rates(conv_gflops=100.0, bandwidth_gbs=10.0)
    long_name = "/model/" + "very/" * 20 + "deep_conv"
    rows = [
        layer_row(make_layer(10**9, 10**8, 25.0, name=long_name), rates),
        layer_row(make_layer(10**6, 10**7, 2.0, name="/model/b"), rates),
        layer_row(make_layer(0, 10**6, 0.5, name="/model/c", op="Relu"), rates),
    ]
    text = format_layers(rows, top=2).splitlines()
    assert text[0].split()[:4] == ["op", "output", "shape", "MMACs"]
    assert len(text) == 4 and text[3].strip().startswith("(1 more)")
    first = text[1].split()
    assert first[0] == "Conv" and first[1] == "1x8x4x4" and first[2] == "1000.0"
    assert first[3] == "25.000" and first[5] == "80.0" and COMPUTE in first
    assert text[1].rstrip().endswith("deep_conv") and "..." in text[1]  # a long name's tail
    assert MEMORY in text[2] and f"{100 * 2.0 / 27.5:.1f}%" in text[2]


def test_session_options_spinning() -> None:
    pytest.importorskip("onnxruntime", reason="session options need onnxruntime")
    from maskconver.export.runtime import DEFAULT_SPINNING, SPINNING_KEY, session_options

    assert session_options(2).get_session_config_entry(SPINNING_KEY) == (
        "1" if DEFAULT_SPINNING else "0"
    )
    assert session_options(2, spinning=True).get_session_config_entry(SPINNING_KEY) == "1"
    options = session_options(3, spinning=False)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1


def run_cli(argv: list[str]) -> int:
    from maskconver.commands import benchmark

    parser = argparse.ArgumentParser()
    benchmark.register(parser.add_subparsers())
    args = parser.parse_args(["benchmark", *argv])
    return int(args.func(args))


def test_profile_cli_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime", reason="--profile runs onnxruntime")
    argv = ["--config", "tiny", "--profile", "--size", "64", "64", "--rounds", "2"]
    assert run_cli([*argv, "--threads", "1", "--json", "--set", "model.num_proposals=5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["conv_gflops"] > 0 and report["bandwidth_gbs"] > 0
    assert report["graph_macs"] > 0 and report["profiled_macs"] >= report["graph_macs"] * 0.9
    network = report["parts"][NETWORK]
    assert network["floor_ms"] > 0 and network["kernels_ms"] > 0
    assert report["ratio"] == pytest.approx(report["graph_ms"] / report["floor_ms"])
    assert math.isclose(
        report["floor_ms"], sum(r["floor_ms"] for r in report["layers"]), rel_tol=1e-9
    )
    assert {r["bound"] for r in report["layers"]} <= {COMPUTE, MEMORY}
    assert report["cpu"]


def test_compare_skips_missing_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """An optional deployment whose module is missing is skipped with the reason."""
    from maskconver.benchmarking import deployments

    def missing(built: object, threads: int) -> dict[str, object]:
        raise ImportError("No module named 'maskconver.export.nothing'")

    def broken(built: object, threads: int) -> dict[str, object]:
        raise RuntimeError("cannot compile\nsecond line")

    monkeypatch.setattr(deployments, "OPTIONAL", {"Missing": missing, "Broken": broken})
    pytest.importorskip("onnxruntime", reason="the deployments run onnxruntime")
    own = deployments.own_contenders("tiny", ["model.num_proposals=5"], 64, 5, 1)
    assert "onnxruntime fp32" in own.contenders and "onnxruntime fp32 spin" in own.contenders
    assert own.skipped["Missing"].startswith("not installed")
    assert own.skipped["Broken"] == "RuntimeError: cannot compile"
    own.contenders["onnxruntime fp32 spin"]()
    network = own.contenders[f"onnxruntime fp32{deployments.NETWORK_ONLY}"]()
    whole = own.contenders["onnxruntime fp32"]()  # name -> output
    raw = [name for name in whole if name not in CORE_OUTPUTS]
    assert raw and len(network) == len(raw)  # the raw outputs, no merge
    assert all(np.array_equal(a, whole[name]) for name, a in zip(raw, network, strict=True))


def test_format_report_prints_the_merge_share() -> None:
    from maskconver.benchmarking.compare import format_report

    rows = {
        "onnxruntime fp32": {"ms": 10.0, "gmac_per_s": 1.0, "fraction_of_conv_peak": 0.1},
        "onnxruntime fp32 network only": {"ms": 8.0, "network_only": True},
        "EoMT-ViT-S": {"ms": 30.0},
    }
    rows["onnxruntime fp32"]["x faster than EoMT-ViT-S"] = 3.0
    size = {"macs": 10**9, "conv_peak_gflops": 1.0, "floor_ms": 1.0, "contenders": rows}
    size["merge_share"] = {"onnxruntime fp32": 0.2}
    report = {"preset": "tiny", "threads": 1, "rounds": 1, "sizes": {"64": size}}
    text = format_report(report)
    assert "merge share of onnxruntime fp32: 20.0 % of end to end (2.0 of 10.0 ms" in text
    assert "x vs onnxruntime fp32 network only" not in text  # not a peer column
    assert "x vs EoMT-ViT-S" in text


def test_the_image_layout_is_network_in_the_profile() -> None:
    layer = make_layer(0, 10**6, 1.0, name="/Transpose", op="Transpose")
    assert part_of(layer) == MERGE and part_of(layer, {"/Transpose"}) == NETWORK


def test_format_report_names_cpu_and_skips() -> None:
    from maskconver.benchmarking.compare import format_report

    report = {
        "preset": "tiny",
        "threads": 2,
        "rounds": 3,
        "cpu": "Some CPU",
        "sizes": {
            "64": {
                "macs": 10**9,
                "conv_peak_gflops": 100.0,
                "floor_ms": 20.0,
                "contenders": {
                    "onnxruntime fp32": {
                        "ms": 10.0,
                        "gmac_per_s": 100.0,
                        "fraction_of_conv_peak": 2.0,
                        "x faster than EoMT-ViT-S": 3.0,
                    },
                    "EoMT-ViT-S": {"ms": 30.0},
                },
                "skipped": {"TFLite": "not installed (x)"},
            }
        },
    }
    text = format_report(report)
    assert "CPU: Some CPU" in text and "TFLite: skipped, not installed (x)" in text
    assert "x vs EoMT-ViT-S" in text and " 3.0" in text


def test_eomt_peers_build_offline() -> None:
    pytest.importorskip("transformers", reason="the EoMT peers need the peers extra")
    import torch

    from maskconver.benchmarking.peers import EOMT_SIZES, eomt_contenders

    image = np.zeros((32, 32, 3), np.uint8)
    torch.manual_seed(0)
    calls = eomt_contenders(32, image)
    assert set(calls) == set(EOMT_SIZES)
    result = calls["EoMT-ViT-S"]()
    assert result[0]["segmentation"].shape == (32, 32)
