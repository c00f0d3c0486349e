"""onnxruntime backend: an exported ``.onnx`` drives the inference core like a torch model.

``OnnxPanopticModel(path)`` reads the maskconver metadata (config, categories), opens an
onnxruntime session (``threads`` intra-op threads) and runs one image per call: the graph
already contains the network, the peaks and the merge's tensor core, so ``predict``
(the inference core's ``Backend`` call) hands each ``MergeCore`` to the post-processor's shared
Python step (``finish``), which numbers it exactly as for the torch backend. ``raw`` exposes
the network's raw outputs (parity checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from maskconver.data.types import PanopticSample
from maskconver.export.graph import CORE_OUTPUTS, SEMANTIC_OUTPUT, ExportError
from maskconver.export.onnx import OnnxMetadata, read_metadata
from maskconver.postprocess.merge import MergeCore

if TYPE_CHECKING:
    from maskconver.inference import PostProcessor
    from maskconver.postprocess.segments import PanopticPrediction

# ``session.intra_op.allow_spinning``: onnxruntime's idle intra-op threads busy-wait for the next
# op by default. On a machine where anything else runs, a spinning thread competes with that
# work, which made 2-thread timings bimodal; without spinning they were steady and no slower on
# a quiet machine (docs/profile.md, "Spinning"), so the backend turns it off.
DEFAULT_SPINNING = False
SPINNING_KEY = "session.intra_op.allow_spinning"
# a graph runs its merge on the whole canvas at once (static shapes: no chunks): the exact merge
# upsamples all K proposals (K canvas-size float maps), MaskConver's fast merge holds a fixed set
# of canvas-size maps (merge_fast.TILE_MAPS) whatever K; the canvas is capped so those maps hold
# at most this many values (256 MB): an 8000 x 6000 image at K = 20 merges exactly on a
# 3.3-megapixel canvas and is enlarged (nearest) outside the graph, as the torch backend does
# beyond ``postprocess.max_canvas_pixels``
MAX_GRAPH_CANVAS_VALUES = 1 << 26


def session_options(threads: int | None = None, *, spinning: bool = DEFAULT_SPINNING) -> Any:
    """The ``SessionOptions`` of onnxruntime: ``threads`` intra-op threads, spinning or not.

    Args:
        threads: intra-op threads (None: onnxruntime's default, one per core).
        spinning: whether idle intra-op threads busy-wait for work.

    Raises:
        ExportError: onnxruntime is missing, or ``threads < 1``.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a dev extra
        raise ExportError(
            "the onnxruntime backend needs onnxruntime: pip install 'maskconver[onnx]'"
        ) from e
    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ExportError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_session_config_entry(SPINNING_KEY, "1" if spinning else "0")
    return options


def graph_canvas_cap(max_canvas_pixels: int, proposals: int, *, fast_merge: bool = False) -> int:
    """The merge-canvas cap of a graph: the config's, and ``MAX_GRAPH_CANVAS_VALUES / maps``.

    Args:
        max_canvas_pixels: ``postprocess.max_canvas_pixels`` of the exported config (0: none).
        proposals: K, the static length of the graph's ``keep`` output (1 when not static).
        fast_merge: the graph runs MaskConver's fast merge (``merge_fast.TILE_MAPS`` canvas
            maps) instead of upsampling all ``K`` proposals.
    """
    from maskconver.postprocess.merge_fast import TILE_MAPS

    maps = TILE_MAPS if fast_merge else max(1, proposals)
    graph_cap = max(1, MAX_GRAPH_CANVAS_VALUES // maps)
    return graph_cap if max_canvas_pixels <= 0 else min(max_canvas_pixels, graph_cap)


def runs_fast_merge(metadata: OnnxMetadata) -> bool:
    """Whether the exported graph merges with MaskConver's fast merge."""
    model = metadata.config.model
    return model.meta_architecture == "maskconver" and model.maskconver.merge.algorithm == "fast"


def check_categories(metadata: OnnxMetadata, path: Path) -> None:
    """``ExportError`` when the file's categories do not cover the classes its outputs use.

    Every class channel of a model whose ``model.num_classes`` was derived from its categories
    has a category; one with ``model.num_classes`` set needs at least as many classes as the
    categories' label space.
    """
    categories, num_classes = metadata.categories, metadata.num_classes
    needed = categories.num_classes
    derived = metadata.config.model.num_classes is None
    if needed > num_classes or (derived and needed < num_classes):
        raise ExportError(
            f"{path}: its metadata lists {len(categories)} categories (label space "
            f"'{categories.label_space}': {needed} classes) but the model outputs {num_classes} "
            "classes; the file was edited or mixed from two exports: export the checkpoint again"
        )


class OnnxPanopticModel:
    """A maskconver ``.onnx`` behind the inference core.

    Args:
        path: the exported model.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        spinning: let idle intra-op threads busy-wait for work (onnxruntime's own default;
            off here: ``DEFAULT_SPINNING``).

    Attributes:
        metadata: config, categories and input layout stored in the file.
    """

    def __init__(
        self, path: str | Path, *, threads: int | None = None, spinning: bool = DEFAULT_SPINNING
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - a dev extra
            raise ExportError(
                "the onnxruntime backend needs onnxruntime: pip install 'maskconver[onnx]'"
            ) from e
        self.path = Path(path)
        self.metadata: OnnxMetadata = read_metadata(self.path)
        check_categories(self.metadata, self.path)
        self.session = ort.InferenceSession(
            str(self.path),
            session_options(threads, spinning=spinning),
            providers=["CPUExecutionProvider"],
        )
        self.output_names = [o.name for o in self.session.get_outputs()]
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        keep = (shapes.get(CORE_OUTPUTS[1]) or [1])[0]
        self.canvas_cap = graph_canvas_cap(
            self.metadata.config.postprocess.max_canvas_pixels,
            keep if isinstance(keep, int) and keep > 0 else 1,
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
        feed = {
            "image": np.ascontiguousarray(image[None], dtype=np.uint8),
            "valid_size": np.asarray(valid_size, dtype=np.int64),
            "output_size": np.asarray(output_size, dtype=np.int64),
        }
        return dict(zip(self.output_names, self.session.run(None, feed), strict=True))

    def predict(
        self, samples: Sequence[PanopticSample], postprocessor: PostProcessor
    ) -> list[PanopticPrediction]:
        """Run every transformed sample; the post-processor numbers each graph's merge core.

        The graph merges on a capped canvas (``canvas_cap``: ``postprocess.max_canvas_pixels``
        as for torch, and ``graph_canvas_cap``'s bound on the graph's canvas maps) and the map
        is enlarged (nearest, outside the graph) to the original size, so a huge image costs
        a bounded amount of memory.
        """
        from maskconver.postprocess.canvas import enlarge, working_size

        results = []
        for sample in samples:
            valid = cast(Sequence[int], sample.meta["valid_size"])
            orig_size = cast(Sequence[int], sample.meta["orig_size"])
            orig = (int(orig_size[0]), int(orig_size[1]))
            canvas = working_size(orig, self.canvas_cap, what="the ONNX merge-canvas cap")
            out = self.run(sample.image, valid, canvas)
            core = MergeCore(*(torch.from_numpy(out[name]) for name in CORE_OUTPUTS))
            semantic = out.get(SEMANTIC_OUTPUT)
            del out
            with torch.inference_mode():
                prediction = postprocessor.finish(
                    core,
                    semantic_logits=None if semantic is None else torch.from_numpy(semantic[0]),
                    input_size=(int(sample.image.shape[0]), int(sample.image.shape[1])),
                    valid_size=(int(valid[0]), int(valid[1])),
                    output_size=canvas,
                )
            results.append(enlarge(prediction, orig) if canvas != orig else prediction)
        return results

    def raw(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The network's raw outputs (every output but the merge core) for an image."""
        h, w = image.shape[:2]
        out = self.run(image, (h, w), (h, w))
        return {
            name: out[name]
            for name in self.output_names
            if name not in CORE_OUTPUTS and name != SEMANTIC_OUTPUT
        }
