"""The inference core below the user API: images in, panoptic predictions out, any backend.

``predict_samples(model, postprocessor, samples)`` runs samples that went through the eval
transform on one ``Backend``: ``backend.predict(samples, postprocessor)`` returns one
``PanopticPrediction`` per sample at its original size. Four backends implement it:
``TorchModel`` (an ``nn.Module``: a float image batch in, raw outputs out, then the
post-processor's eager call), ``export.runtime.OnnxPanopticModel`` (an onnxruntime session
whose graph already holds the merge core: the post-processor only numbers the segments),
``export.openvino.OpenVinoPanopticModel`` (the same graph as an OpenVINO IR) and
``export.tflite.TfLitePanopticModel`` (the network in LiteRT, the merge in the post-processor).
``Predictor`` (the user API) and ``engine.evaluate`` both run on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from maskconver.data.image_io import load_image, pil_to_rgb_array
from maskconver.data.types import PanopticSample
from maskconver.postprocess.segments import PanopticPrediction

# a file path, a PIL image, an array, or an encoded image file's bytes (PNG, JPEG...)
ImageInput = np.ndarray | Image.Image | str | Path | bytes
RGB_CHANNELS = 3
UINT8_MAX = 255


class PostProcessor(Protocol):
    """A meta-architecture's post-processor (``build.build_postprocessor``).

    ``post(outputs, valid_sizes, output_sizes, input_size)`` turns a batch of model outputs into
    one ``PanopticPrediction`` per image at its original size; ``finish(core, ...)`` numbers the
    segments of a merge core computed elsewhere (an exported graph).
    """

    def __call__(
        self,
        outputs: Any,
        valid_sizes: Sequence[tuple[int, int]],
        output_sizes: Sequence[tuple[int, int]],
        input_size: tuple[int, int],
    ) -> list[PanopticPrediction]:
        """Panoptic predictions of a batch."""
        ...

    def finish(
        self,
        core: Any,
        *,
        semantic_logits: Tensor | None = None,
        input_size: tuple[int, int] | None = None,
        valid_size: tuple[int, int] | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> PanopticPrediction:
        """The Python step after a merge core computed by any backend."""
        ...


class Backend(Protocol):
    """What the inference core runs on.

    Implemented by ``TorchModel`` (a torch module), ``export.runtime.OnnxPanopticModel`` (an
    onnxruntime session), ``export.openvino.OpenVinoPanopticModel`` (an OpenVINO IR) and
    ``export.tflite.TfLitePanopticModel`` (a LiteRT interpreter).
    """

    def predict(
        self, samples: Sequence[PanopticSample], postprocessor: PostProcessor
    ) -> list[PanopticPrediction]:
        """One prediction per transformed sample, at its original size.

        Each sample has ``image`` and ``meta['valid_size']``, ``meta['orig_size']``.
        """
        ...


class _RawOutputs(nn.Module):
    """A module's NamedTuple output as a flat tuple of tensors (what tracing and freezing need).

    Fields that are None are left out and tuple fields are spread; ``layout`` (set on the first
    call, i.e. while tracing) records how to rebuild the output (``rebuild``).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.layout: tuple[type, list[tuple[str, int]]] | None = None

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.module(images)
        fields: list[tuple[str, int]] = []  # (name, -1 None | 0 tensor | n tuple of n)
        flat: list[Tensor] = []
        for name, value in out._asdict().items():
            if value is None:
                fields.append((name, -1))
            elif isinstance(value, tuple):
                fields.append((name, len(value)))
                flat.extend(value)
            else:
                fields.append((name, 0))
                flat.append(value)
        self.layout = (type(out), fields)
        return tuple(flat)

    def rebuild(self, flat: Sequence[Tensor]) -> Any:
        """The module's output type from a flat tuple produced by ``forward``."""
        assert self.layout is not None, "call the module once before rebuilding its output"
        output_type, fields = self.layout
        values: dict[str, Any] = {}
        position = 0
        for name, count in fields:
            if count < 0:
                values[name] = None
            elif count == 0:
                values[name] = flat[position]
                position += 1
            else:
                values[name] = tuple(flat[position : position + count])
                position += count
        return output_type(**values)


class TorchModel:
    """``Backend`` over a PyTorch module (eval mode, ``torch.inference_mode``).

    Args:
        module: e.g. a ``MaskConver``; put in eval mode here.
        device: where the forward runs; images are moved there, outputs stay there.
        optimize: trace and freeze the network per input shape (``torch.jit.freeze`` folds
            batch norm into the convs) and run it channels_last; the same outputs up to float
            rounding.
        compile: ``torch.compile`` the module (needs a C++ compiler; the first call per input
            size takes tens of seconds).
    """

    def __init__(
        self,
        module: nn.Module,
        device: str | torch.device = "cpu",
        *,
        optimize: bool = False,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.optimize = optimize
        self._frozen: dict[tuple[int, ...], tuple[Any, _RawOutputs]] = {}
        self._compiled: Any = torch.compile(self.module) if compile else None

    def _optimized(self, images: Tensor) -> Any:
        key = tuple(images.shape)
        if key not in self._frozen:
            import warnings

            raw = _RawOutputs(self.module).eval()
            channels_last = cast(Any, raw).to(memory_format=torch.channels_last)  # (not in stubs)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(channels_last, (images,), check_trace=False)
                self._frozen[key] = (torch.jit.freeze(traced), raw)
        frozen, layout = self._frozen[key]
        return layout.rebuild(frozen(images))

    def __call__(self, images: Tensor) -> Any:
        """Forward a ``[B, 3, H, W]`` float batch (0..255); returns the module's raw output."""
        images = images.to(self.device)
        with torch.inference_mode():
            if self.optimize:
                return self._optimized(images.contiguous(memory_format=torch.channels_last))
            module = self._compiled if self._compiled is not None else self.module
            return module(images)

    def predict(
        self, samples: Sequence[PanopticSample], postprocessor: PostProcessor
    ) -> list[PanopticPrediction]:
        """Batch the samples (padded with the mean colour), forward, post-process each image."""
        images = images_to_tensor([s.image for s in samples])
        outputs = self(images)
        valid_sizes = [_size_of(s.meta.get("valid_size"), "valid_size") for s in samples]
        output_sizes = [_size_of(s.meta.get("orig_size"), "orig_size") for s in samples]
        with torch.inference_mode():
            return postprocessor(
                outputs,
                input_size=(int(images.shape[-2]), int(images.shape[-1])),
                valid_sizes=valid_sizes,
                output_sizes=output_sizes,
            )


AnyModel = nn.Module | Backend


def as_backend(model: AnyModel, device: str | torch.device = "cpu") -> Backend:
    """A ``Backend``: a module is wrapped in ``TorchModel`` on ``device``, a backend is kept."""
    if isinstance(model, nn.Module):
        return TorchModel(model, device)
    if not callable(getattr(model, "predict", None)):
        raise TypeError(
            f"expected an nn.Module or a backend with predict(samples, postprocessor), got "
            f"{type(model).__name__}"
        )
    return model


def as_rgb_array(image: ImageInput) -> np.ndarray:
    """Any supported input -> ``[H, W, 3]`` uint8 RGB.

    Args:
        image: a file path, the bytes of an encoded image file (EXIF orientation applied, as
            for a path), a PIL image (any mode), or an array ``[H, W]`` (grayscale),
            ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA, alpha composited on black).
            Arrays must be uint8, integers in 0..255, or floats: floats in 0..1 (skimage's and
            ``ToTensor``'s convention) are scaled by 255, larger floats must lie in 0..255.

    Raises:
        ValueError: the array has an unsupported shape or value range (message gives both).
    """
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(image))
    if isinstance(image, Image.Image):
        return pil_to_rgb_array(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"expected a path, image bytes, PIL image or numpy array, got {type(image).__name__}"
        )
    array = image
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, RGB_CHANNELS, RGB_CHANNELS + 1):
        raise ValueError(f"expected an image array [H, W], [H, W, 1|3|4]; got shape {image.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image array of shape {image.shape}")
    if array.dtype != np.uint8:
        if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"image array must be numeric, got dtype {array.dtype}")
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > UINT8_MAX:
            raise ValueError(
                f"non-uint8 image arrays must hold values in 0..1 (float) or 0..255; got "
                f"{array.dtype} in [{array.min()}, {array.max()}]"
            )
        if np.issubdtype(array.dtype, np.floating) and array.max() <= 1.0:
            array = array * UINT8_MAX  # a float image in 0..1
        array = np.rint(array).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, RGB_CHANNELS, axis=2)
    elif array.shape[2] == RGB_CHANNELS + 1:
        return pil_to_rgb_array(Image.fromarray(np.ascontiguousarray(array), mode="RGBA"))
    return np.ascontiguousarray(array)


def decode_image_bytes(data: bytes) -> np.ndarray:
    """An encoded image file's bytes -> ``[H, W, 3]`` uint8 RGB (EXIF orientation applied).

    Raises:
        ImageReadError: the bytes are not an image PIL reads (the message gives their length).
    """
    import io

    from PIL import ImageOps, UnidentifiedImageError

    from maskconver.data.image_io import ImageReadError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            return pil_to_rgb_array(oriented if oriented is not None else opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{len(data)} bytes are not a readable image file ({e})") from e


def images_to_tensor(images: Sequence[np.ndarray]) -> Tensor:
    """Stack ``[H, W, 3]`` uint8 images into a float ``[B, 3, H_max, W_max]`` tensor (0..255).

    Images of different sizes (eval padding to a divisibility instead of a square) are padded
    at the bottom/right with the mean colour, as the eval transform pads, so each image keeps
    its top-left ``valid_size`` and the merge needs nothing else.
    """
    from maskconver.data.transforms import IMAGE_PAD_COLOR

    height = max(im.shape[0] for im in images)
    width = max(im.shape[1] for im in images)
    batch = np.empty((len(images), height, width, RGB_CHANNELS), np.float32)
    batch[:] = np.asarray(IMAGE_PAD_COLOR, np.float32)
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[2] != RGB_CHANNELS:
            raise ValueError(f"expected [H, W, 3] images after the transform, got {im.shape}")
        batch[i, : im.shape[0], : im.shape[1]] = im
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def _size_of(value: Any, where: str) -> tuple[int, int]:
    if value is None:
        raise KeyError(f"sample.meta['{where}'] is missing: was the eval transform applied?")
    height, width = value
    return int(height), int(width)


def predict_samples(
    model: AnyModel,
    postprocessor: PostProcessor,
    samples: Sequence[PanopticSample],
    *,
    device: str | torch.device = "cpu",
) -> list[PanopticPrediction]:
    """Forward + panoptic merge of samples that went through the eval transform.

    Args:
        model: a ``Backend``, or a module (wrapped in ``TorchModel`` on ``device``).
        postprocessor: the panoptic post-processor (``build.build_postprocessor``).
        samples: transformed samples; each has ``image [S, S, 3]`` uint8 and
            ``meta['valid_size']`` (the resized image's (h, w) inside the padded input) and
            ``meta['orig_size']`` (the original (H, W)).
        device: where a module's forward runs (ignored for other backends).

    Returns:
        One ``PanopticPrediction`` per sample at its original size ``[H, W]``.

    Raises:
        PredictionError: the backend failed (out of memory, a runtime error); the message names
            the batch's images (``sample.file_name`` and size).
    """
    if not samples:
        return []
    backend = as_backend(model, device)
    try:
        return backend.predict(samples, postprocessor)
    except (ValueError, KeyError, TypeError):  # bad arguments: their messages say what
        raise
    except Exception as e:  # onnxruntime's errors (out of memory...) derive from Exception
        raise PredictionError(
            f"predicting {describe_samples(samples)} failed ({type(e).__name__}): {e}"
        ) from e


class PredictionError(RuntimeError):
    """A backend failed on a batch; the message names its images (file name and size)."""


def describe_samples(samples: Sequence[PanopticSample]) -> str:
    """The images of a batch in words: ``a.jpg (6000x8000)``, unnamed ones by their size."""
    names = []
    for sample in samples:
        size = cast(Sequence[int], sample.meta.get("orig_size") or sample.image.shape[:2])
        label = f"{int(size[0])}x{int(size[1])}"
        names.append(f"{sample.file_name} ({label})" if sample.file_name else f"a {label} image")
    return ", ".join(names)
