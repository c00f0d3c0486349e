"""``Predictor``: the user-facing inference API (image in, ``PanopticPrediction`` out).

Example::

    from maskconver.predictor import Predictor

    predictor = Predictor.from_checkpoint("runs/quickstart/checkpoints/best")
    result = predictor("photo.jpg")  # path, encoded bytes, PIL image or [H, W, 3] uint8 array
    print(result.panoptic.shape, [(s.id, s.category_id, s.score) for s in result.segments])
    result.boxes, result.masks[0], result.rle(), result.to_coco(), result.plot()
    result.save("out/")  # out/photo.png (COCO ids), out/photo.json, out/photo_overlay.png
    for result in predictor.stream("photos/", batch_size=8):  # a folder, list or generator
        ...

Results are ``result.PanopticResult`` (docs/python-api.md).

Any size and mode is accepted: files are read with ``maskconver.data.image_io.load_image``
(grayscale, RGBA, palette and 16-bit images become ``[H, W, 3]`` uint8 RGB), then the evaluation
transform (``ResizePad``) fits the longest side to ``cfg.eval.input_size`` and pads the rest. The
prediction comes back at the image's original resolution.

The batch inference itself (``predict_samples``) lives in ``maskconver.inference``, shared with
``engine/evaluate.py``; any ``inference.Backend`` (a torch module, or an onnxruntime session)
can drive it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from maskconver.result import PanopticResult, as_result

DEFAULT_BATCH_SIZE = 8
# what a folder given to ``stream`` contributes (the suffixes ``maskconver predict`` reads)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SYNTHETIC_ONLY_NOTE = (
    "this model was trained on the synthetic shapes dataset only (data.root was not set): it "
    "knows those few shape classes and will not recognise real objects in photos"
)

__all__ = ["ImageInput", "PanopticResult", "Predictor", "SyntheticOnlyWarning", "as_rgb_array"]


class SyntheticOnlyWarning(UserWarning):
    """The checkpoint was trained on the synthetic dataset only (``SYNTHETIC_ONLY_NOTE``)."""


def trained_on_synthetic_only(cfg: Config) -> bool:
    """Whether a run's config trained on the embedded synthetic dataset only (``data.root``)."""
    return cfg.data.root is None


def expand_inputs(inputs: ImageInput | Iterable[ImageInput]) -> Iterator[ImageInput]:
    """One image at a time: a folder gives its image files (sorted, non-recursive).

    ``inputs`` is one image (a path, bytes, a PIL image or an array), a folder, or any
    iterable of those (a list, a generator: read lazily).
    """
    if isinstance(inputs, (str, Path)) and Path(inputs).is_dir():
        folder = Path(inputs)
        yield from sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif isinstance(inputs, (str, Path, bytes, bytearray, np.ndarray)) or not isinstance(
        inputs, Iterable
    ):
        yield inputs
    else:
        for item in inputs:
            if isinstance(item, (str, Path)) and Path(item).is_dir():
                yield from expand_inputs(item)
            else:
                yield item


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
        warn_synthetic: bool = True,
    ) -> Predictor:
        """Load a checkpoint folder written by training (``.../checkpoints/step_N`` or ``best``).

        A checkpoint trained on the synthetic dataset only warns (``SyntheticOnlyWarning``,
        one line): it will not recognise real objects.

        Args:
            path: the checkpoint folder (or a run folder; see ``engine.checkpoint.load_model``).
            device: where inference runs (``"cpu"``, ``"cuda"``).
            use_ema: use the EMA weights when the checkpoint has them.
            optimize: run the network traced and frozen (batch norm folded), channels_last.
            warn_synthetic: warn when the model was trained on synthetic shapes only (the
                command line prints its own line instead).
        """
        from maskconver.build import build_eval_transforms, build_postprocessor
        from maskconver.engine.checkpoint import load_model
        from maskconver.inference import TorchModel

        model, cfg, categories, num_classes = load_model(path, use_ema=use_ema, device=str(device))
        if warn_synthetic and trained_on_synthetic_only(cfg):
            warnings.warn(f"{path}: {SYNTHETIC_ONLY_NOTE}", SyntheticOnlyWarning, stacklevel=2)
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

    @property
    def synthetic_only(self) -> bool:
        """Whether the model was trained on the synthetic shapes dataset only."""
        return trained_on_synthetic_only(self.cfg)

    def prepare(self, image: ImageInput) -> PanopticSample:
        """Read/convert one image and apply the eval transform (resize longest side + pad)."""
        return self._sample(as_rgb_array(image), _name_of(image))

    def _sample(self, rgb: np.ndarray, name: str) -> PanopticSample:
        blank = np.zeros(rgb.shape[:2], dtype=np.int32)
        sample = PanopticSample(image=rgb, panoptic=blank, segments=[], file_name=name)
        return self.transform(sample)

    def __call__(self, image: ImageInput) -> PanopticResult:
        """Predict one image; returns ids ``[H, W]`` int32 at the original size + segments."""
        return self.predict_batch([image], batch_size=1)[0]

    def predict_batch(
        self, images: Sequence[ImageInput], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[PanopticResult]:
        """Predict several images (any sizes), ``batch_size`` at a time, in input order."""
        return list(self.stream(images, batch_size=batch_size))

    def stream(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        keep_image: bool = True,
    ) -> Iterator[PanopticResult]:
        """Predict images lazily, ``batch_size`` at a time, yielding one result per image.

        Args:
            inputs: a folder (its image files, sorted), one image, or a list or generator of
                images (paths, folders, encoded bytes, PIL images, arrays); a generator is
                read at most ``batch_size`` images ahead of what was yielded.
            batch_size: images per forward.
            keep_image: keep each input image on its result (``plot`` and ``save`` need it).

        Yields:
            A ``PanopticResult`` per image, in input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch: list[tuple[PanopticSample, np.ndarray | None]] = []
        for image in expand_inputs(inputs):
            rgb = as_rgb_array(image)
            batch.append((self._sample(rgb, _name_of(image)), rgb if keep_image else None))
            del rgb  # without keep_image, only the transformed copy stays until the forward
            if len(batch) == batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _run(self, batch: list[tuple[PanopticSample, np.ndarray | None]]) -> list[PanopticResult]:
        predictions = predict_samples(self.model, self.postprocessor, [s for s, _ in batch])
        return [
            as_result(prediction, image=image, categories=self.categories, name=sample.file_name)
            for (sample, image), prediction in zip(batch, predictions, strict=True)
        ]


def _name_of(image: ImageInput) -> str:
    """The file name of a path input, else ''."""
    return Path(image).name if isinstance(image, (str, Path)) else ""
