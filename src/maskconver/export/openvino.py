"""OpenVINO: the exported ONNX graph as an IR (``.xml`` + ``.bin``), int8 through NNCF, a backend.

``convert_onnx`` reads a maskconver ``.onnx`` with OpenVINO's ONNX frontend (the whole graph,
merge included) and saves it as an IR whose ``rt_info`` section ``maskconver`` holds the same
metadata as the ONNX file (``OnnxMetadata``), weights kept in float32; the ``.bin`` is renamed
into place before the ``.xml`` that points to it, each atomically. ``quantize_openvino`` makes
an int8 IR with NNCF's post-training quantization calibrated on graph inputs: only the network
is quantized, the merge's tensor core (every op the core outputs need and the raw outputs do
not, ``merge_ops``) stays in float. ``OpenVinoPanopticModel`` runs an IR (or a ``.onnx``)
behind the inference core exactly as ``OnnxPanopticModel`` runs onnxruntime.

OpenVINO's CPU plugin runs float ops in bfloat16 by default on CPUs with AMX / AVX-512 BF16;
the backend asks for ``f32`` unless told otherwise, so its results match torch and
onnxruntime (``precision="bf16"`` is faster there and is measured in ``docs/openvino.md``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskconver.export.graph import CORE_OUTPUTS, SEMANTIC_OUTPUT, ExportError
from maskconver.export.onnx import METADATA_PREFIX, OnnxMetadata, read_metadata
from maskconver.export.runtime import OnnxPanopticModel, graph_canvas_cap, runs_fast_merge

IR_SUFFIX = ".xml"
RT_INFO_SECTION = "maskconver"
PRECISIONS = ("f32", "bf16")
INSTALL_HINT = "OpenVINO export and inference need the extra: pip install 'maskconver[openvino]'"
# NNCF post-training quantization, as measured in docs/openvino.md: per-channel symmetric
# weights, the PERFORMANCE preset (symmetric activations), fast bias correction; the depthwise
# (grouped) convolutions left in float: 4-10 % faster than int8 ones on the network of both
# mobilenet_mh presets and PQ +0.1 on the trained tiny model
CALIBRATION_SUBSET = 300  # NNCF's default; fewer images use them all


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise ExportError(INSTALL_HINT) from e
    return openvino


def _read_model(path: Path) -> Any:
    """``openvino.Core().read_model`` with one-line errors naming the file."""
    ov = _openvino()
    if not path.is_file():
        raise ExportError(f"OpenVINO model not found: {path}")
    if path.suffix.lower() == IR_SUFFIX and not path.with_suffix(".bin").is_file():
        raise ExportError(f"{path}: its weights {path.with_suffix('.bin')} are missing")
    try:
        return ov.Core().read_model(str(path))
    except Exception as e:  # the frontends raise RuntimeError or their own types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{path} is not a readable OpenVINO model: {first}") from e


def _set_metadata(model: Any, metadata: OnnxMetadata) -> None:
    for key, value in metadata.to_props().items():
        model.set_rt_info(value, [RT_INFO_SECTION, key.removeprefix(METADATA_PREFIX)])


def model_metadata(model: Any, where: str) -> OnnxMetadata:
    """The maskconver metadata of an ``openvino.Model`` (``ExportError`` naming ``where``)."""
    found: dict[str, str] = {}
    if model.has_rt_info([RT_INFO_SECTION]):
        for key in model.get_rt_info([RT_INFO_SECTION]).astype(dict):
            value = model.get_rt_info([RT_INFO_SECTION, key]).astype(str)
            found[f"{METADATA_PREFIX}{key}"] = value
    return OnnxMetadata.from_props(found, where)


def read_openvino_metadata(path: str | Path) -> OnnxMetadata:
    """The maskconver metadata of an IR ``.xml`` (``ExportError`` if absent or corrupt)."""
    path = Path(path)
    return model_metadata(_read_model(path), str(path))


def save_ir(model: Any, output: Path, metadata: OnnxMetadata) -> None:
    """Write ``model`` with ``metadata`` to ``output`` (``.xml``) and its ``.bin``, atomically.

    Saved to a temporary folder next to ``output`` (float weights stay float32), then the
    ``.bin`` and the ``.xml`` are each renamed into place, the ``.xml`` last.
    """
    from maskconver.files import DEFAULT_MODE

    ov = _openvino()
    if output.suffix.lower() != IR_SUFFIX:
        raise ExportError(f"an OpenVINO IR is a .xml file, got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    _set_metadata(model, metadata)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(model, str(staged), compress_to_fp16=False)
        mask = os.umask(0)
        os.umask(mask)
        for suffix in (".bin", IR_SUFFIX):
            os.chmod(staged.with_suffix(suffix), DEFAULT_MODE & ~mask)
            os.replace(staged.with_suffix(suffix), output.with_suffix(suffix))


def convert_onnx(source: str | Path, output: str | Path) -> OnnxMetadata:
    """A maskconver ``.onnx`` as an OpenVINO IR at ``output`` (``.xml``); returns its metadata."""
    source, output = Path(source), Path(output)
    metadata = read_metadata(source)
    save_ir(_read_model(source), output, metadata)
    return metadata


def export_openvino(
    checkpoint: str | Path,
    output: str | Path,
    *,
    size: Sequence[int] | None = None,
    dynamic: bool = False,
    use_ema: bool = True,
) -> OnnxMetadata:
    """A checkpoint as an OpenVINO IR: ``export_onnx`` to a temporary file, then ``convert_onnx``.

    Args: as ``export.onnx.export_onnx``, with ``output`` a ``.xml`` (its ``.bin`` beside it).
    """
    from maskconver.export.onnx import export_onnx

    output = Path(output)
    if output.suffix.lower() != IR_SUFFIX:
        raise ExportError(f"the output must be a .xml file, got {output}")
    _openvino()  # the extra is there before the export runs
    with tempfile.TemporaryDirectory(prefix="maskconver-openvino-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(checkpoint, onnx_path, size=size, dynamic=dynamic, use_ema=use_ema)
        return convert_onnx(onnx_path, output)


def merge_ops(model: Any) -> list[str]:
    """Friendly names of the ops only the merge core needs (those NNCF leaves in float).

    The merge's ops are the ancestors of the ``CORE_OUTPUTS`` (and ``SEMANTIC_OUTPUT``) that
    no raw output depends on: the network, its peaks and mask logits are everything else.
    """
    names = {name for port in model.outputs for name in port.get_names()}
    merge = [n for n in (*CORE_OUTPUTS, SEMANTIC_OUTPUT) if n in names]
    raw = [n for n in names if n not in merge]
    if not raw:
        raise ExportError("the graph has no raw outputs to tell the network from the merge")

    def ancestors(ports: Iterable[Any]) -> set[str]:
        seen: set[str] = set()
        stack = [port.get_node() for port in ports]
        while stack:
            node = stack.pop()
            name = node.get_friendly_name()
            if name not in seen:
                seen.add(name)
                stack.extend(i.get_source_output().get_node() for i in node.inputs())
        return seen

    network = ancestors(model.output(n) for n in raw)
    return sorted(ancestors(model.output(n) for n in merge) - network)


def quantize_openvino(
    source: str | Path,
    output: str | Path,
    calibration: Sequence[dict[str, np.ndarray]],
    *,
    ignore_depthwise: bool = True,
    quantize_merge: bool = False,
) -> OnnxMetadata:
    """An int8 IR of a maskconver IR or ``.onnx`` (NNCF post-training quantization).

    Args:
        source: the float model (``.xml`` or ``.onnx``).
        output: the int8 ``.xml`` to write (with its ``.bin``).
        calibration: graph inputs (``image``, ``valid_size``, ``output_size``) of representative
            images; at least one.
        ignore_depthwise: leave the depthwise (grouped) convolutions in float (measured
            faster and as accurate; False quantizes them too).
        quantize_merge: quantize the merge core too (measured only; the default keeps it float).
    """
    import nncf

    source, output = Path(source), Path(output)
    if not calibration:
        raise ExportError("OpenVINO int8 needs calibration images")
    model = _read_model(source)
    metadata = model_metadata(model, str(source)) if source.suffix == IR_SUFFIX else None
    metadata = metadata or read_metadata(source)
    ignored = [] if quantize_merge else merge_ops(model)
    if ignore_depthwise:
        ignored += [
            op.get_friendly_name()
            for op in model.get_ordered_ops()
            if op.get_type_name() == "GroupConvolution"
        ]
    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)  # one INFO line per op otherwise
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(list(calibration)),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=min(CALIBRATION_SUBSET, len(calibration)),
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
        )
    finally:
        nncf_logger.setLevel(level)
    metadata.quantization = "static"
    save_ir(quantized, output, metadata)
    return metadata


class OpenVinoPanopticModel(OnnxPanopticModel):
    """A maskconver OpenVINO IR (or ``.onnx``) behind the inference core.

    The same graph and outputs as ``OnnxPanopticModel`` (``predict`` and ``raw`` are its own),
    compiled for OpenVINO's CPU plugin.

    Args:
        path: the ``.xml`` (or a maskconver ``.onnx``, read by OpenVINO's ONNX frontend).
        threads: CPU inference threads (None: OpenVINO's default).
        precision: float ops in ``"f32"`` (matches torch) or ``"bf16"`` (faster on CPUs with
            AMX / AVX-512 BF16, less exact).

    Attributes:
        metadata: config, categories and input layout stored in the file.
    """

    def __init__(
        self, path: str | Path, *, threads: int | None = None, precision: str = "f32"
    ) -> None:
        ov = _openvino()
        self.path = Path(path)
        if precision not in PRECISIONS:
            raise ExportError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if threads is not None and threads < 1:
            raise ExportError(f"threads must be >= 1, got {threads}")
        model = _read_model(self.path)
        self.metadata = (
            model_metadata(model, str(self.path))
            if self.path.suffix.lower() == IR_SUFFIX
            else read_metadata(self.path)
        )
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = ov.Core().compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise ExportError(f"{self.path}: OpenVINO cannot compile it: {e}") from e
        self.request = self.compiled.create_infer_request()
        # an output port may carry several tensor names: the graph's are in the metadata
        self.output_names = list(self.metadata.outputs)
        self._ports = {name: self.compiled.output(name) for name in self.output_names}
        keep = self.compiled.output(CORE_OUTPUTS[1]).get_partial_shape()[0]
        self.canvas_cap = graph_canvas_cap(
            self.metadata.config.postprocess.max_canvas_pixels,
            keep.get_length() if keep.is_static else 1,
            fast_merge=runs_fast_merge(self.metadata),
        )

    def run(
        self, image: np.ndarray, valid_size: Sequence[int], output_size: Sequence[int]
    ) -> dict[str, np.ndarray]:
        """All graph outputs for one prepared ``[H, W, 3]`` uint8 image, by name."""
        fixed = self.metadata.input_size
        if fixed is not None and tuple(image.shape[:2]) != fixed:
            raise ExportError(
                f"{self.path} takes {fixed[0]}x{fixed[1]} inputs, got {image.shape[0]}x"
                f"{image.shape[1]} (export with --dynamic for any size)"
            )
        result = self.request.infer(
            {
                "image": np.ascontiguousarray(image[None], dtype=np.uint8),
                "valid_size": np.asarray(valid_size, dtype=np.int64),
                "output_size": np.asarray(output_size, dtype=np.int64),
            }
        )
        out = {name: np.array(result[port]) for name, port in self._ports.items()}
        owner = out.get(CORE_OUTPUTS[0])
        if owner is not None and tuple(owner.shape) != tuple(int(v) for v in output_size):
            # seen when the CPU plugin cannot run an op (e.g. GatherElements whose indices are
            # smaller than its data): an empty owner map and uninitialised values, no error
            raise ExportError(
                f"{self.path}: OpenVINO returned an owner map of shape {list(owner.shape)} for an "
                f"output size {list(output_size)}: this graph does not run on OpenVINO"
            )
        return out


@dataclass
class AccuracyCheck:
    """PQ (0..100) of a float and an int8 model on the same validation images.

    Attributes:
        pq_float: PQ of the float model.
        pq_int8: PQ of the int8 model.
        images: images evaluated.
        data: where they came from (``synthetic`` or the dataset root and split).
    """

    pq_float: float
    pq_int8: float
    images: int
    data: str


def accuracy_check(
    float_path: str | Path,
    int8_path: str | Path,
    *,
    images: int,
    threads: int | None = None,
    dataset: Any = None,
) -> AccuracyCheck | str:
    """PQ of both models on the first ``images`` of the config's validation split.

    The split is the config's (``engine.data.build_dataset``): the synthetic validation
    scenes when ``data.root`` is unset, else the COCO split under it; ``dataset`` (any
    ``PanopticSample`` source with ``categories``) replaces it. Returns a message instead when
    that root is not on this machine.
    """
    from maskconver.engine.data import build_dataset
    from maskconver.engine.evaluate import evaluate_model
    from maskconver.evaluation.pq_files import PERCENT

    pq: list[float] = []
    data, count = "", 0
    for path in (float_path, int8_path):
        backend = OpenVinoPanopticModel(path, threads=threads)
        meta = backend.metadata
        root = meta.config.data.root
        if dataset is None:
            if root is not None and not Path(root).is_dir():
                return f"skipped: the config's data.root {root} is not on this machine"
            data = "synthetic" if root is None else f"{root} {meta.config.data.val_split}"
            dataset = build_dataset(meta.config, "val")
        data = data or type(dataset).__name__
        transform = None
        if meta.input_size is not None:
            from maskconver.data.transforms import ResizePadTo

            transform = ResizePadTo(*meta.input_size)
        result = evaluate_model(
            backend,
            dataset,
            cfg=meta.config,
            categories=meta.categories,
            num_classes=meta.num_classes,
            batch_size=1,
            max_images=images,
            progress=False,
            transform=transform,
            metrics=("pq",),
        )
        pq.append(PERCENT * float(result["all"]["pq"]))
        count = int(result["images"])
    return AccuracyCheck(pq_float=pq[0], pq_int8=pq[1], images=count, data=data)
