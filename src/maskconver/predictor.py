"""``Predictor``: the user-facing inference API (image in, ``PanopticPrediction`` out).

Example::

    from maskconver.predictor import Predictor

    predictor = Predictor.from_checkpoint("runs/quickstart/checkpoints/best")
    result = predictor("photo.jpg")  # path, PIL image or [H, W, 3] uint8 array
    print(result.panoptic.shape, [(s.id, s.category_id, s.score) for s in result.segments])

Any size and mode is accepted: files are read with ``maskconver.data.image_io.load_image``
(grayscale, RGBA, palette and 16-bit images become ``[H, W, 3]`` uint8 RGB), then the evaluation
transform (``ResizePad``) fits the longest side to ``cfg.eval.input_size`` and pads the rest. The
prediction comes back at the image's original resolution.

The batch inference itself (``predict_samples``) lives in ``maskconver.inference``, shared with
``engine/evaluate.py``; any ``inference.Backend`` (a torch module, or an onnxruntime session)
can drive it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskconver.config import Config
from maskconver.data.types import CategorySet, PanopticSample
from maskconver.inference import (
    AnyModel,
    ImageInput,
    PostProcessor,
    as_backend,
    as_rgb_array,
    predict_samples,
)
from maskconver.postprocess.segments import PanopticPrediction

DEFAULT_BATCH_SIZE = 8

__all__ = ["ImageInput", "Predictor", "as_rgb_array"]


class Predictor:
    """Panoptic inference on arbitrary images with a trained model.

    Args:
        model: the network (a module, put in eval mode on ``device``) or any
            ``inference.Backend`` (e.g. an onnxruntime session).

    Attributes:
        model: the ``inference.Backend`` that runs it.
        cfg: the resolved config stored in the checkpoint.
        categories: the dataset's categories (ids, names, thing/stuff, colours).
        device: where inference runs.
    """

    def __init__(
        self,
        model: AnyModel,
        *,
        cfg: Config,
        categories: CategorySet,
        postprocessor: PostProcessor,
        transform: Callable[[PanopticSample], PanopticSample],
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = as_backend(model, device)
        self.cfg = cfg
        self.categories = categories
        self.postprocessor = postprocessor
        self.transform = transform
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        use_ema: bool = True,
        optimize: bool = False,
    ) -> Predictor:
        """Load a checkpoint folder written by training (``.../checkpoints/step_N`` or ``best``).

        Args:
            path: the checkpoint folder (or a run folder; see ``engine.checkpoint.load_model``).
            device: where inference runs (``"cpu"``, ``"cuda"``).
            use_ema: use the EMA weights when the checkpoint has them.
            optimize: run the network traced and frozen (batch norm folded), channels_last.
        """
        from maskconver.build import build_eval_transforms, build_postprocessor
        from maskconver.engine.checkpoint import load_model
        from maskconver.inference import TorchModel

        model, cfg, categories, num_classes = load_model(path, use_ema=use_ema, device=str(device))
        return cls(
            TorchModel(model, device, optimize=optimize),
            cfg=cfg,
            categories=categories,
            postprocessor=build_postprocessor(cfg, categories, num_classes),
            transform=build_eval_transforms(cfg),
            device=device,
        )

    @classmethod
    def _from_exported(cls, model: Any) -> Predictor:
        """A ``Predictor`` on an exported model's backend, configured from its metadata.

        ``model.metadata`` holds the config and categories; a fixed-size export gets its own
        resize-and-pad (``ResizePadTo``), a dynamic one the config's eval transform.
        """
        from maskconver.build import build_eval_transforms, build_postprocessor
        from maskconver.data.transforms import ResizePadTo

        meta = model.metadata
        transform: Callable[[PanopticSample], PanopticSample] = (
            build_eval_transforms(meta.config)
            if meta.input_size is None
            else ResizePadTo(*meta.input_size)
        )
        return cls(
            model,
            cfg=meta.config,
            categories=meta.categories,
            postprocessor=build_postprocessor(meta.config, meta.categories, meta.num_classes),
            transform=transform,
        )

    @classmethod
    def from_onnx(cls, path: str | Path, *, threads: int | None = None) -> Predictor:
        """Load an exported ``.onnx`` (``maskconver export``): it alone is enough to predict.

        Args:
            path: the ``.onnx`` file (its metadata holds the config and categories).
            threads: onnxruntime intra-op threads (None: onnxruntime's default).
        """
        from maskconver.export.runtime import OnnxPanopticModel

        model = OnnxPanopticModel(path, threads=threads)
        return cls._from_exported(model)

    @classmethod
    def from_openvino(
        cls, path: str | Path, *, threads: int | None = None, precision: str = "f32"
    ) -> Predictor:
        """Load an OpenVINO IR (``maskconver export --format openvino``): it alone is enough.

        Args:
            path: the ``.xml`` file (its ``rt_info`` holds the config and categories; the
                ``.bin`` beside it), or a maskconver ``.onnx`` read by OpenVINO.
            threads: OpenVINO CPU threads (None: OpenVINO's default).
            precision: float ops in ``"f32"`` (matches torch) or ``"bf16"``.
        """
        from maskconver.export.openvino import OpenVinoPanopticModel

        model = OpenVinoPanopticModel(path, threads=threads, precision=precision)
        return cls._from_exported(model)

    @classmethod
    def from_tflite(cls, path: str | Path, *, threads: int | None = None) -> Predictor:
        """Load a ``.tflite`` (``maskconver export --format tflite``): it alone is enough.

        Args:
            path: the ``.tflite`` file (its metadata holds the config and categories).
            threads: LiteRT interpreter threads (None: LiteRT's default).
        """
        from maskconver.export.tflite import TfLitePanopticModel

        model = TfLitePanopticModel(path, threads=threads)
        return cls._from_exported(model)

    def prepare(self, image: ImageInput) -> PanopticSample:
        """Read/convert one image and apply the eval transform (resize longest side + pad)."""
        rgb = as_rgb_array(image)
        height, width = rgb.shape[:2]
        blank = np.zeros((height, width), dtype=np.int32)
        name = Path(image).name if isinstance(image, (str, Path)) else ""
        sample = PanopticSample(image=rgb, panoptic=blank, segments=[], file_name=name)
        return self.transform(sample)

    def __call__(self, image: ImageInput) -> PanopticPrediction:
        """Predict one image; returns ids ``[H, W]`` int32 at the original size + segments."""
        return self.predict_batch([image], batch_size=1)[0]

    def predict_batch(
        self, images: Sequence[ImageInput], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[PanopticPrediction]:
        """Predict several images (any sizes), ``batch_size`` at a time, in input order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[PanopticPrediction] = []
        for start in range(0, len(images), batch_size):
            chunk = [self.prepare(im) for im in images[start : start + batch_size]]
            results.extend(predict_samples(self.model, self.postprocessor, chunk))
        return results
