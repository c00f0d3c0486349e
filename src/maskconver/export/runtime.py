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
        self.session = ort.InferenceSession(
            str(self.path),
            session_options(threads, spinning=spinning),
            providers=["CPUExecutionProvider"],
        )
        self.output_names = [o.name for o in self.session.get_outputs()]

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
        """Run every transformed sample; the post-processor numbers each graph's merge core."""
        results = []
        for sample in samples:
            valid = cast(Sequence[int], sample.meta["valid_size"])
            orig = cast(Sequence[int], sample.meta["orig_size"])
            out = self.run(sample.image, valid, orig)
            core = MergeCore(*(torch.from_numpy(out[name]) for name in CORE_OUTPUTS))
            semantic = out.get(SEMANTIC_OUTPUT)
            with torch.inference_mode():
                results.append(
                    postprocessor.finish(
                        core,
                        semantic_logits=None if semantic is None else torch.from_numpy(semantic[0]),
                        input_size=(int(sample.image.shape[0]), int(sample.image.shape[1])),
                        valid_size=(int(valid[0]), int(valid[1])),
                        output_size=(int(orig[0]), int(orig[1])),
                    )
                )
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
