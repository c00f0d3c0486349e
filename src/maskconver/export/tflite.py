"""TFLite (LiteRT) export of a checkpoint's network, and a backend that runs the ``.tflite``.

What goes into the file: the network only (``NetworkGraph``: ``image [1, H, W, 3]`` uint8 ->
the model's raw outputs by field name, e.g. ``center_logits.0``, ``mask_logits``, ``scores``,
``classes``, ``center_indices``), converted by ``litert-torch`` at a fixed input size, plus the
maskconver metadata (``OnnxMetadata``: config, categories, input layout, quantization; and the
output ``fields`` to rebuild the model's output) as JSON in the flatbuffer's metadata entry
``"maskconver"``. The merge core is not in the graph: it goes through ``torch.export``, which its
eager/traced branches (``postprocess.merge.tracing``) do not support, so ``TfLitePanopticModel``
runs the post-processor's own eager call (``core`` then ``finish``, exactly as for a torch model)
on the interpreter's outputs.

Quantization (``QUANTIZATIONS``): ``weight_only`` (the paper's phone deployment: int8 weights,
dequantized to float for float compute) or ``dynamic`` (int8 weights, activations quantized at
run time for integer kernels), both by ``ai-edge-quantizer`` on the converted float model.

Needs the ``tflite`` extra (``litert-torch``, ``ai-edge-litert``); imported inside functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor, nn

import maskconver
from maskconver.export.graph import ExportError
from maskconver.export.onnx import METADATA_PREFIX, OnnxMetadata

if TYPE_CHECKING:
    from maskconver.config import Config
    from maskconver.data.types import CategorySet, PanopticSample
    from maskconver.inference import PostProcessor
    from maskconver.postprocess.segments import PanopticPrediction

METADATA_NAME = "maskconver"  # the flatbuffer metadata entry holding the JSON
FIELDS_KEY = f"{METADATA_PREFIX}fields"
INPUT_NAME = "image"
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier (bytes 4..8)
QUANTIZATIONS = ("none", "weight_only", "dynamic")
# output fields the post-processors never read (the mask-feature map of training-only parts)
TRAINING_ONLY_FIELDS = ("pixel_embeddings",)
EXTRA_HINT = "pip install 'maskconver[tflite]'"

# (field name, -1 None | 0 one tensor | n a tuple of n tensors), in the output type's order
Fields = list[tuple[str, int]]


class NetworkGraph(nn.Module):
    """``image [1, H, W, 3]`` uint8 -> the network's raw outputs as ``{name: tensor}``.

    Tuple fields are spread as ``name.i``; None and training-only fields are left out.
    ``fields`` (set by the first call) records how to rebuild the output (``rebuild_outputs``).

    Args:
        model: the trained network in eval mode (``model(images)`` takes ``[B, 3, H, W]`` float).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.fields: Fields = []

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """Raw outputs of one NHWC image (float 0..255 or uint8)."""
        out = self.model(image.permute(0, 3, 1, 2).float())
        flat: dict[str, Tensor] = {}
        fields: Fields = []
        for name, value in out._asdict().items():
            if value is None or name in TRAINING_ONLY_FIELDS:
                fields.append((name, -1))
            elif isinstance(value, tuple):
                fields.append((name, len(value)))
                flat.update({f"{name}.{i}": v for i, v in enumerate(value)})
            else:
                fields.append((name, 0))
                flat[name] = value
        self.fields = fields
        return flat


def rebuild_outputs(flat: dict[str, Tensor], fields: Fields) -> SimpleNamespace:
    """The model's output fields (attributes; tuples rebuilt, left-out fields None)."""
    values: dict[str, Any] = {}
    for name, count in fields:
        if count < 0:
            values[name] = None
        elif count == 0:
            values[name] = flat[name]
        else:
            values[name] = tuple(flat[f"{name}.{i}"] for i in range(count))
    return SimpleNamespace(**values)


def _with_metadata(content: bytes, metadata: OnnxMetadata, fields: Fields) -> bytes:
    """The flatbuffer with the maskconver JSON as metadata entry ``METADATA_NAME``."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    props = {**metadata.to_props(), FIELDS_KEY: json.dumps(fields)}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(props).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    # a re-quantized file replaces its entry (the old JSON buffer stays, unreferenced)
    kept = [m for m in model.metadata or [] if _name(m.name) != METADATA_NAME]
    model.metadata = [*kept, entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(value: str | bytes | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_tflite_metadata(path: str | Path) -> tuple[OnnxMetadata, Fields]:
    """The maskconver metadata and output fields of a ``.tflite`` (``ExportError`` if absent).

    Reads the flatbuffer lazily (only the metadata table and its buffer).
    """
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"TFLite model not found: {path}")
    content = path.read_bytes()
    if content[4:8] != TFLITE_IDENTIFIER:
        raise ExportError(f"{path} is not a TFLite file (no '{TFLITE_IDENTIFIER.decode()}' tag)")
    try:
        model = schema.Model.GetRootAs(content, 0)
        raw = None
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry is not None and entry.Name() == METADATA_NAME.encode():
                raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        if raw is None:
            raise ExportError(f"{path} is not a maskconver export (no '{METADATA_NAME}' metadata)")
        props = json.loads(raw.decode("utf-8"))
        fields = [(str(name), int(count)) for name, count in json.loads(props[FIELDS_KEY])]
    except ExportError:
        raise
    except Exception as e:  # flatbuffer reads of a damaged file raise many kinds
        raise ExportError(f"{path} is not a readable maskconver TFLite file: {e}") from e
    return OnnxMetadata.from_props(props, str(path)), fields


@contextmanager
def _quiet_converter() -> Iterator[None]:
    """litert-torch's progress lines off during one conversion (its env switch, restored)."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    before = os.environ.get(key)
    os.environ[key] = "n"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def quantize_tflite(content: bytes, mode: str) -> bytes:
    """An int8 copy of a float ``.tflite`` flatbuffer (``mode``: ``weight_only`` or ``dynamic``).

    Every op ``ai-edge-quantizer`` supports (convolutions, fully connected, ...) gets per-channel
    symmetric int8 weights; ``weight_only`` computes in float, ``dynamic`` in int8.
    """
    from ai_edge_quantizer import quantizer, recipe

    recipes = {"weight_only": recipe.weight_only_wi8_afp32, "dynamic": recipe.dynamic_wi8_afp32}
    if mode not in recipes:
        raise ExportError(f"TFLite int8 mode must be one of {sorted(recipes)}, got {mode!r}")
    result = quantizer.Quantizer(content, recipes[mode]()).quantize(
        enable_progress_bar=False, enable_progress_report=False
    )
    if result.quantized_model is None:  # pragma: no cover - the quantizer always returns one
        raise ExportError("ai-edge-quantizer returned no model")
    return bytes(result.quantized_model)


def export_model_tflite(
    model: nn.Module,
    cfg: Config,
    categories: CategorySet,
    num_classes: int,
    output: str | Path,
    *,
    size: Sequence[int] | None = None,
    quantization: str = "none",
) -> OnnxMetadata:
    """Convert a built model's network to ``output`` (``.tflite``, written atomically).

    Args:
        model: the network (e.g. ``MaskConver``).
        cfg: its resolved config (stored in the file).
        categories: the dataset categories (stored in the file).
        num_classes: the model's class channels.
        output: the ``.tflite`` to write.
        size: ``(H, W)`` fixed network input (default: ``eval.input_size`` square).
        quantization: ``none``, ``weight_only`` or ``dynamic`` (``QUANTIZATIONS``).

    Returns:
        The metadata written into the file.
    """
    from maskconver.files import atomic_path

    try:
        import litert_torch
    except ImportError as e:
        raise ExportError(f"TFLite export needs litert-torch: {EXTRA_HINT}") from e
    output = Path(output)
    if output.suffix.lower() != ".tflite":
        raise ExportError(f"the output must be a .tflite file, got {output}")
    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"quantization must be one of {list(QUANTIZATIONS)}, got {quantization!r}"
        )
    hw = (cfg.eval.input_size, cfg.eval.input_size) if size is None else tuple(size)
    if len(hw) != 2 or min(hw) < 1:
        raise ExportError(f"--size needs two positive numbers, got {list(hw)}")
    graph = NetworkGraph(model).eval()
    image = torch.zeros(1, int(hw[0]), int(hw[1]), 3, dtype=torch.uint8)
    with torch.no_grad():
        names = list(graph(image))  # records the fields
    with _quiet_converter(), torch.no_grad():
        converted = litert_torch.convert(graph, sample_kwargs={INPUT_NAME: image})
        content = bytes(converted.model_content())
    if quantization != "none":
        content = quantize_tflite(content, quantization)
    metadata = OnnxMetadata(
        config=cfg,
        categories=categories,
        num_classes=num_classes,
        input_size=(int(hw[0]), int(hw[1])),
        outputs=names,
        quantization=quantization,
        version=maskconver.__version__,
    )
    with atomic_path(output) as tmp:
        tmp.write_bytes(_with_metadata(content, metadata, graph.fields))
    return metadata


def export_tflite(
    checkpoint: str | Path,
    output: str | Path,
    *,
    size: Sequence[int] | None = None,
    quantization: str = "none",
    use_ema: bool = True,
) -> OnnxMetadata:
    """Export a checkpoint folder to ``output`` (``.tflite``); see ``export_model_tflite``."""
    from maskconver.engine.checkpoint import load_model

    if Path(output).suffix.lower() != ".tflite":
        raise ExportError(f"the output must be a .tflite file, got {output}")
    model, cfg, categories, num_classes = load_model(checkpoint, use_ema=use_ema)
    return export_model_tflite(
        model, cfg, categories, num_classes, output, size=size, quantization=quantization
    )


class TfLitePanopticModel:
    """A maskconver ``.tflite`` behind the inference core (``inference.Backend``).

    The interpreter runs the network on one image per call; the post-processor's eager call
    (``core`` + ``finish``, as for a torch model) merges its outputs.

    Args:
        path: the exported model.
        threads: interpreter threads (None: LiteRT's default).

    Attributes:
        metadata: config, categories and input layout stored in the file.
        fields: the output fields (``NetworkGraph.fields``) the outputs rebuild.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ExportError(f"the TFLite backend needs ai-edge-litert: {EXTRA_HINT}") from e
        if threads is not None and threads < 1:
            raise ExportError(f"threads must be >= 1, got {threads}")
        self.path = Path(path)
        self.metadata, self.fields = read_tflite_metadata(self.path)
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            self.runner = self.interpreter.get_signature_runner()
        except (RuntimeError, ValueError) as e:
            raise ExportError(f"LiteRT cannot load {self.path}: {e}") from e
        self.output_names = list(self.metadata.outputs)

    def raw(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The network's outputs by name for one prepared ``[H, W, 3]`` uint8 image."""
        fixed = self.metadata.input_size
        if fixed is not None and tuple(image.shape[:2]) != fixed:
            raise ExportError(
                f"{self.path} takes {fixed[0]}x{fixed[1]} inputs, got {image.shape[0]}x"
                f"{image.shape[1]} (TFLite exports have a fixed size: export with --size)"
            )
        batch = np.ascontiguousarray(image[None], dtype=np.uint8)
        return cast(dict[str, np.ndarray], self.runner(**{INPUT_NAME: batch}))

    def predict(
        self, samples: Sequence[PanopticSample], postprocessor: PostProcessor
    ) -> list[PanopticPrediction]:
        """Run every transformed sample; the post-processor merges and numbers its outputs."""
        results = []
        for sample in samples:
            valid = cast(Sequence[int], sample.meta["valid_size"])
            orig = cast(Sequence[int], sample.meta["orig_size"])
            flat = {
                name: torch.from_numpy(value.astype(np.int64) if value.dtype == np.int32 else value)
                for name, value in self.raw(sample.image).items()
            }
            with torch.inference_mode():
                results.extend(
                    postprocessor(
                        rebuild_outputs(flat, self.fields),
                        input_size=(int(sample.image.shape[0]), int(sample.image.shape[1])),
                        valid_sizes=[(int(valid[0]), int(valid[1]))],
                        output_sizes=[(int(orig[0]), int(orig[1]))],
                    )
                )
        return results


def quantize_tflite_file(source: str | Path, output: str | Path, *, mode: str) -> OnnxMetadata:
    """An int8 copy of a float maskconver ``.tflite`` (metadata kept, ``quantization`` updated).

    Args:
        source: the float export.
        output: where the quantized model goes (``.tflite``, written atomically).
        mode: ``weight_only`` or ``dynamic`` (see ``quantize_tflite``).
    """
    from maskconver.files import atomic_path

    metadata, fields = read_tflite_metadata(source)
    if metadata.quantization != "none":
        raise ExportError(f"{source} is already quantized ({metadata.quantization})")
    content = quantize_tflite(Path(source).read_bytes(), mode)
    metadata.quantization = mode
    with atomic_path(Path(output)) as tmp:
        tmp.write_bytes(_with_metadata(content, metadata, fields))
    return metadata
