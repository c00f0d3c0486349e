"""This model's deployments for ``maskconver benchmark --compare``, each a zero-argument call.

* torch eager and torch optimised (traced + frozen, batch norm folded, channels_last), with the
  post-processor's eager merge;
* onnxruntime fp32 without and with intra-op spinning (``export.runtime.session_options``), and
  int8 (static QDQ), the graph's merge included; and fp32 on the graph without its merge
  (``NETWORK_ONLY``), so the merge's share of end to end is measured in the same rounds;
* OpenVINO fp32 and int8 (``export.openvino``, NNCF; each also without its merge) and TFLite
  (``export.tflite``, LiteRT):
  their modules are imported only here and only when asked (``openvino_contenders``,
  ``tflite_contenders``); a missing module or runtime skips the rows with the reason.

Every deployment runs the same untrained network on the same random image at one square size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskconver.benchmarking.measure import PIXEL_MAX, count_macs

Contenders = dict[str, Callable[[], Any]]
CALIBRATION_IMAGES = 4
NETWORK_ONLY = " network only"  # suffix of a row that runs a graph without its merge
NETWORK_FILE = "network.onnx"  # that graph, next to the exported model


@dataclass
class Deployments:
    """The calls to time, this model's MACs, and the rows that could not be built.

    Attributes:
        contenders: name -> zero-argument call (one image through that deployment).
        macs: the network's multiply-accumulates at this size.
        skipped: name -> why the row is missing (a module or runtime not installed...).
    """

    contenders: Contenders
    macs: int
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Built:
    """What every deployment of one size shares (the untrained model and its files)."""

    cfg: Any
    categories: Any
    classes: int
    model: torch.nn.Module
    post: Any
    size: int
    folder: Path
    onnx_fp32: Path
    image: np.ndarray  # [S, S, 3] uint8
    calibration: list[dict[str, np.ndarray]]


def build(
    preset: str, overrides: list[str], size: int, num_classes: int, *, seed: int = 0
) -> Built:
    """The untrained model, its post-processor and its fp32 ``.onnx`` at ``size`` x ``size``.

    ``seed`` fixes the random init: how contested the untrained masks are (how much of the
    canvas the merge evaluates pixel by pixel) depends on it.
    """
    from maskconver.build import build_model, build_postprocessor
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
    folder = Path(tempfile.mkdtemp(prefix="maskconver-compare-"))
    fp32 = folder / "model.onnx"
    export_model(model, cfg, categories, classes, fp32, size=(size, size))
    calibration = [
        {
            "image": (np.random.default_rng(s).random((1, size, size, 3)) * 255).astype(np.uint8),
            "valid_size": np.array([size, size]),
            "output_size": np.array([size, size]),
        }
        for s in range(CALIBRATION_IMAGES)
    ]
    return Built(
        cfg=cfg,
        categories=categories,
        classes=classes,
        model=model,
        post=build_postprocessor(cfg, categories, classes),
        size=size,
        folder=folder,
        onnx_fp32=fp32,
        image=(np.random.default_rng(1).random((size, size, 3)) * 255).astype(np.uint8),
        calibration=calibration,
    )


def torch_contenders(built: Built) -> Contenders:
    """The torch eager and optimised calls, each with the post-processor's merge."""
    from maskconver.inference import TorchModel

    size = built.size
    images = torch.rand(1, 3, size, size) * PIXEL_MAX
    sizes = [(size, size)]
    fast = TorchModel(built.model, optimize=True)

    def eager() -> Any:
        with torch.inference_mode():
            return built.post(built.model(images), sizes, sizes, (size, size))

    def optimised() -> Any:
        with torch.inference_mode():
            return built.post(fast(images), sizes, sizes, (size, size))

    return {"torch eager": eager, "torch optimised": optimised}


def runtime_call(runtime: Any, image: np.ndarray, size: int) -> Callable[[], Any]:
    """One ``runtime.run(image, size, size)`` (an exported graph: network and merge)."""

    def call() -> Any:
        return runtime.run(image, (size, size), (size, size))

    return call


def onnxruntime_contenders(built: Built, threads: int) -> Contenders:
    """The onnxruntime calls: fp32 without and with spinning, int8 (static QDQ, no spinning)."""
    from maskconver.export.onnx import quantize_onnx
    from maskconver.export.runtime import OnnxPanopticModel

    int8 = built.folder / "model_int8.onnx"
    quantize_onnx(built.onnx_fp32, int8, mode="static", calibration=built.calibration)
    runtimes = {
        "onnxruntime fp32": OnnxPanopticModel(built.onnx_fp32, threads=threads, spinning=False),
        "onnxruntime fp32 spin": OnnxPanopticModel(built.onnx_fp32, threads=threads, spinning=True),
        "onnxruntime int8": OnnxPanopticModel(int8, threads=threads, spinning=False),
    }
    calls = {name: runtime_call(rt, built.image, built.size) for name, rt in runtimes.items()}
    calls[f"onnxruntime fp32{NETWORK_ONLY}"] = network_call(built, threads)
    return calls


def network_call(built: Built, threads: int) -> Callable[[], Any]:
    """A call of onnxruntime fp32 on the graph without its merge (``export.scope.network_only``).

    Beside the whole graph on the same image, it times the merge's share of end to end.
    """
    import onnx
    import onnxruntime as ort

    from maskconver.export.runtime import session_options
    from maskconver.export.scope import network_only

    path = built.folder / NETWORK_FILE
    onnx.save(network_only(onnx.load(str(built.onnx_fp32))), str(path))
    session = ort.InferenceSession(
        str(path), session_options(threads, spinning=False), providers=["CPUExecutionProvider"]
    )
    inputs = {i.name for i in session.get_inputs()}
    feed = {
        "image": built.image[None],
        "valid_size": np.array([built.size, built.size], dtype=np.int64),
        "output_size": np.array([built.size, built.size], dtype=np.int64),
    }
    feed = {name: value for name, value in feed.items() if name in inputs}

    def call() -> Any:
        return session.run(None, feed)

    return call


def openvino_contenders(built: Built, threads: int) -> Contenders:
    """OpenVINO fp32 and int8 (NNCF, calibrated on the same inputs as onnxruntime int8).

    Raises:
        ImportError: ``maskconver.export.openvino`` or OpenVINO / NNCF is missing.
    """
    import logging

    from maskconver.export.openvino import OpenVinoPanopticModel, quantize_openvino

    logging.getLogger("nncf").setLevel(logging.ERROR)  # one INFO line per op otherwise
    out: Contenders = {}
    fp32 = OpenVinoPanopticModel(built.onnx_fp32, threads=threads)
    out["OpenVINO fp32"] = runtime_call(fp32, built.image, built.size)
    int8 = built.folder / "model_int8.xml"
    quantize_openvino(built.onnx_fp32, int8, built.calibration)
    out["OpenVINO int8"] = runtime_call(
        OpenVinoPanopticModel(int8, threads=threads), built.image, built.size
    )
    out.update(openvino_network_calls(built, threads))
    return out


def openvino_network_calls(built: Built, threads: int) -> Contenders:
    """OpenVINO fp32 and int8 on the graph without its merge (``network_call``'s file).

    The int8 copy is NNCF's on the same calibration images; beside the whole graphs they time
    the merge's share of end to end on OpenVINO. None when onnxruntime's rows did not run.
    """
    import openvino as ov

    from maskconver.export.openvino import quantize_openvino

    path = built.folder / NETWORK_FILE
    if not path.exists():
        return {}
    int8 = built.folder / "network_int8.xml"
    quantize_openvino(path, int8, [{"image": feed["image"]} for feed in built.calibration])
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    config["INFERENCE_NUM_THREADS"] = threads  # as OpenVinoPanopticModel compiles
    feed = {"image": built.image[None]}
    calls: Contenders = {}
    for name, source in (("OpenVINO fp32", path), ("OpenVINO int8", int8)):
        request = ov.Core().compile_model(str(source), "CPU", config).create_infer_request()
        calls[f"{name}{NETWORK_ONLY}"] = infer_call(request, feed)
    return calls


def infer_call(request: Any, feed: dict[str, np.ndarray]) -> Callable[[], Any]:
    """One ``request.infer(feed)`` (an OpenVINO infer request)."""

    def call() -> Any:
        return request.infer(feed)

    return call


def tflite_contenders(built: Built, threads: int) -> Contenders:
    """TFLite fp32 on LiteRT (the network), with the post-processor's merge.

    Raises:
        ImportError: ``maskconver.export.tflite`` or litert-torch / ai-edge-litert is missing.
    """
    from maskconver.data.types import PanopticSample
    from maskconver.export.tflite import TfLitePanopticModel, export_model_tflite

    path = built.folder / "model.tflite"
    export_model_tflite(
        built.model, built.cfg, built.categories, built.classes, path, size=(built.size,) * 2
    )
    runtime = TfLitePanopticModel(path, threads=threads)
    size = built.size
    sample = PanopticSample(
        image=built.image,
        panoptic=np.zeros((size, size), np.int32),
        segments=[],
        meta={"valid_size": (size, size), "orig_size": (size, size)},
    )

    def call() -> Any:
        return runtime.predict([sample], built.post)

    return {"TFLite fp32": call}


# optional rows: name of the group -> builder; a builder that raises skips its rows
OPTIONAL: dict[str, Callable[[Built, int], Contenders]] = {
    "OpenVINO": openvino_contenders,
    "TFLite": tflite_contenders,
}


def other_model_contenders(
    preset: str, size: int, num_classes: int, threads: int, *, seed: int = 0
) -> Contenders:
    """Another preset beside this one (e.g. kMaX-DeepLab beside MaskConver).

    Torch eager with the post-processor's merge, and onnxruntime fp32 with the merge in the
    graph, named ``"<preset> torch eager"`` and ``"<preset> onnxruntime fp32"``.
    """
    from maskconver.export.runtime import OnnxPanopticModel

    built = build(preset, [], size, num_classes, seed=seed)
    runtime = OnnxPanopticModel(built.onnx_fp32, threads=threads, spinning=False)
    return {
        f"{preset} torch eager": torch_contenders(built)["torch eager"],
        f"{preset} onnxruntime fp32": runtime_call(runtime, built.image, size),
    }


def own_contenders(
    preset: str, overrides: list[str], size: int, num_classes: int, threads: int, *, seed: int = 0
) -> Deployments:
    """Every deployment of this model at ``size``; optional ones skipped with their reason."""
    built = build(preset, overrides, size, num_classes, seed=seed)
    contenders = torch_contenders(built)
    contenders.update(onnxruntime_contenders(built, threads))
    skipped: dict[str, str] = {}
    for group, builder in OPTIONAL.items():
        try:
            contenders.update(builder(built, threads))
        except ImportError as e:
            skipped[group] = f"not installed ({e})"
        except Exception as e:  # noqa: BLE001 - a concurrent backend's failure skips its rows
            skipped[group] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return Deployments(contenders, count_macs(built.model, (size, size)), skipped)
