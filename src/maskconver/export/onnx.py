"""ONNX export of a checkpoint, with everything needed to predict stored in the file.

``export_onnx`` traces ``PanopticExportModule`` (image -> merge core) with the legacy exporter
(opset 17, no onnxscript needed), adds the metadata (``METADATA_*``: format, package version,
resolved config and the format of its layout, categories, class count, input layout,
quantization) and writes the file atomically. ``quantize_onnx`` makes an int8 copy with
onnxruntime's quantizer: ``dynamic`` (weights int8, activations quantized at run time) or
``static`` (QDQ, per-channel weights, activation ranges calibrated on images). Dynamic mode
quantizes convolutions and matrix products; static mode every operator type onnxruntime can
inside the network (with convolutions alone, the quantize / dequantize pairs around the float
activations, additions and resizes between them cost more than the int8 convolutions save:
``benchmarks/ort_int8.py``). The merge (``export.scope``) stays in float.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

import maskconver
from maskconver.config import (
    CONFIG_FORMAT,
    Config,
    config_from_dict,
    dump_config,
    migrate_config_tree,
)
from maskconver.data.types import CategorySet
from maskconver.export.graph import INPUT_NAMES, ExportError, ExportGraph
from maskconver.export.scope import merge_node_names, outside_network

# 2: the config in the checkpoint-format-3 layout, its layout named by the ``config_format`` key
# (format 1 files hold a format-1 or format-2 config, migrated on read)
EXPORT_FORMAT = 2
OPSET = 17
METADATA_PREFIX = "maskconver."
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]  # what dynamic int8 quantizes


@dataclass
class OnnxMetadata:
    """What a maskconver ``.onnx`` file carries besides the graph.

    Attributes:
        config: the resolved training config (eval transform, thresholds, label space).
        categories: the dataset categories (ids, names, thing/stuff, colours).
        num_classes: the model's class channels.
        input_size: ``(H, W)`` of a fixed-size export, None when dynamic.
        outputs: graph output names, in order.
        quantization: ``"none"``, ``"dynamic"`` or ``"static"``.
        version: the maskconver version that wrote the file.
    """

    config: Config
    categories: CategorySet
    num_classes: int
    input_size: tuple[int, int] | None
    outputs: list[str]
    quantization: str
    version: str

    def to_props(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props``."""
        return {
            f"{METADATA_PREFIX}format": str(EXPORT_FORMAT),
            f"{METADATA_PREFIX}version": self.version,
            f"{METADATA_PREFIX}config": dump_config(self.config),
            f"{METADATA_PREFIX}config_format": str(CONFIG_FORMAT),
            f"{METADATA_PREFIX}categories": json.dumps(self.categories.to_json()),
            f"{METADATA_PREFIX}label_space": self.categories.label_space,
            f"{METADATA_PREFIX}num_classes": str(self.num_classes),
            f"{METADATA_PREFIX}input": json.dumps(
                {
                    "size": list(self.input_size) if self.input_size else None,
                    "dtype": "uint8",
                    "layout": "NHWC",
                }
            ),
            f"{METADATA_PREFIX}outputs": json.dumps(self.outputs),
            f"{METADATA_PREFIX}quantization": self.quantization,
        }

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> OnnxMetadata:
        """Parse ``metadata_props``; ``ExportError`` naming ``where`` when something is missing."""
        import yaml

        def get(key: str) -> str:
            full = f"{METADATA_PREFIX}{key}"
            if full not in props:
                raise ExportError(f"{where} is not a maskconver export (no metadata '{full}')")
            return props[full]

        version = int(get("format"))
        if version > EXPORT_FORMAT:
            raise ExportError(
                f"{where} has export format {version}, newer than this maskconver reads "
                f"({EXPORT_FORMAT}): upgrade maskconver"
            )
        try:
            tree = yaml.safe_load(get("config")) or {}
            # the config layout's checkpoint format; export format 1 did not record it
            config_format = int(props.get(f"{METADATA_PREFIX}config_format", "1"))
            config = config_from_dict(migrate_config_tree(tree, config_format))
            categories = CategorySet.from_json(json.loads(get("categories")), get("label_space"))
            layout = json.loads(get("input"))
            outputs = json.loads(get("outputs"))
            num_classes = int(get("num_classes"))
        except (ValueError, TypeError, KeyError) as e:
            raise ExportError(f"{where}: corrupt maskconver metadata: {e}") from e
        size = layout.get("size")
        return cls(
            config=config,
            categories=categories,
            num_classes=num_classes,
            input_size=(int(size[0]), int(size[1])) if size else None,
            outputs=[str(o) for o in outputs],
            quantization=get("quantization"),
            version=get("version"),
        )


def read_metadata(path: str | Path) -> OnnxMetadata:
    """The maskconver metadata of an ``.onnx`` file (``ExportError`` if absent or corrupt)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf decode errors have no common base class
        raise ExportError(f"{path} is not a readable ONNX file: {e}") from e
    return OnnxMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path))


def _write_atomic(model: Any, path: Path) -> None:
    import onnx

    from maskconver.files import atomic_path

    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def _set_metadata(model: Any, metadata: OnnxMetadata) -> None:
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    *,
    size: Sequence[int] | None = None,
    dynamic: bool = False,
    use_ema: bool = True,
) -> OnnxMetadata:
    """Export a checkpoint to ``output`` (``.onnx``) and return its metadata.

    Args:
        checkpoint: a checkpoint folder written by training.
        output: the ``.onnx`` file to write (atomically; parents created).
        size: ``(H, W)`` network input of a fixed-size graph (default: the config's
            ``eval.input_size`` square); ignored with ``dynamic``.
        dynamic: dynamic input height and width.
        use_ema: export the EMA weights when the checkpoint has them.

    Raises:
        ExportError: the output would overwrite the checkpoint, or the size is invalid.
    """
    from maskconver.engine.checkpoint import load_model

    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ExportError(f"the output must be a .onnx file, got {output}")
    model, cfg, categories, num_classes = load_model(checkpoint, use_ema=use_ema)
    return export_model(model, cfg, categories, num_classes, output, size=size, dynamic=dynamic)


def export_model(
    model: torch.nn.Module,
    cfg: Config,
    categories: CategorySet,
    num_classes: int,
    output: str | Path,
    *,
    size: Sequence[int] | None = None,
    dynamic: bool = False,
) -> OnnxMetadata:
    """Export a built model (see ``export_onnx``; the benchmark exports untrained models).

    The graph module comes from the meta-architecture table (``build_export_module``).
    """
    from maskconver.build import build_postprocessor, meta_architecture

    output = Path(output)
    post = build_postprocessor(cfg, categories, num_classes)
    module = meta_architecture(cfg.model).build_export_module(model, post).eval()
    hw = (cfg.eval.input_size, cfg.eval.input_size) if size is None else tuple(size)
    if len(hw) != 2 or min(hw) < 1:
        raise ExportError(f"--size needs two positive numbers, got {list(hw)}")
    image = torch.zeros(1, int(hw[0]), int(hw[1]), 3, dtype=torch.uint8)
    sizes = torch.tensor([int(hw[0]), int(hw[1])])
    graph_module = cast(ExportGraph, module)
    output_names = [str(name) for name in graph_module.output_names]
    dynamic_axes = graph_module.dynamic_axes(dynamic)
    fd, tmp = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # tracing notes Python-level sizes and branches: they are static by design here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (image, sizes, sizes),
                tmp,
                opset_version=OPSET,
                dynamo=False,
                input_names=list(INPUT_NAMES),
                output_names=output_names,
                dynamic_axes=dynamic_axes,
            )
        import onnx

        graph = onnx.load(tmp)
    finally:
        os.remove(tmp)
    metadata = OnnxMetadata(
        config=cfg,
        categories=categories,
        num_classes=num_classes,
        input_size=None if dynamic else (int(hw[0]), int(hw[1])),
        outputs=output_names,
        quantization="none",
        version=maskconver.__version__,
    )
    _set_metadata(graph, metadata)
    _write_atomic(graph, output)
    return metadata


def quantize_onnx(
    source: str | Path,
    output: str | Path,
    *,
    mode: str,
    calibration: Sequence[dict[str, np.ndarray]] = (),
) -> OnnxMetadata:
    """An int8 copy of a maskconver ``.onnx`` (metadata kept, ``quantization`` updated).

    Args:
        source: the float model.
        output: where the quantized model goes.
        mode: ``"dynamic"`` or ``"static"`` (QDQ, per-channel weights).
        calibration: static mode: graph inputs (``image``, ``valid_size``, ``output_size``) of
            representative images; at least one.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode not in ("dynamic", "static"):
        raise ExportError(f"int8 mode must be 'dynamic' or 'static', got {mode!r}")
    metadata = read_metadata(source)
    if metadata.input_size is None and mode == "static":
        pass  # calibration images fix no size: any size works with a dynamic graph
    fd, tmp = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        if mode == "dynamic":
            quantize_dynamic(
                str(source),
                tmp,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=QUANTIZED_OPS,
                nodes_to_exclude=merge_node_names(onnx.load(str(source))),
            )
        else:
            if not calibration:
                raise ExportError("static int8 needs calibration images")
            from onnxruntime.quantization.shape_inference import quant_pre_process

            prepared = tmp + ".pre.onnx"
            quant_pre_process(str(source), prepared, skip_symbolic_shape=True)
            source = prepared

            class _Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self._items = iter(list(calibration))

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self._items, None)

            quantize_static(
                str(source),
                tmp,
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=None,  # every type it can: no float islands in between
                nodes_to_exclude=outside_network(onnx.load(str(source))),
            )
        quantized = onnx.load(tmp)
    finally:
        for leftover in (tmp, tmp + ".pre.onnx"):
            if os.path.exists(leftover):
                os.remove(leftover)
    metadata.quantization = mode
    _set_metadata(quantized, metadata)
    _write_atomic(quantized, Path(output))
    return metadata
