"""``Predictor``: the user-facing inference API (image in, ``PanopticPrediction`` out).

Example::

    from maskconver.predictor import Predictor

    predictor = Predictor.from_checkpoint("runs/quickstart/checkpoints/best")
    result = predictor("photo.jpg")  # path, PIL image or [H, W, 3] uint8 array
    print(result.panoptic.shape, [(s.id, s.category_id, round(s.score, 2)) for s in result.segments])

Any size and mode is accepted: files are read with ``maskconver.data.image_io.load_image``
(grayscale, RGBA, palette and 16-bit images become ``[H, W, 3]`` uint8 RGB), then the evaluation
transform (``ResizePad``) fits the longest side to ``cfg.eval.input_size`` and pads the rest. The
prediction comes back at the image's original resolution.

``predict_samples`` is the tensor core shared with ``engine/evaluate.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from maskconver.config import Config
from maskconver.data.image_io import load_image, pil_to_rgb_array
from maskconver.data.types import CategorySet, PanopticSample
from maskconver.outputs import PanopticPrediction

ImageInput = Union[np.ndarray, Image.Image, str, Path]
DEFAULT_BATCH_SIZE = 8
RGB_CHANNELS = 3


def as_rgb_array(image: ImageInput) -> np.ndarray:
    """Any supported input -> ``[H, W, 3]`` uint8 RGB.

    Args:
        image: a file path, a PIL image (any mode), or an array ``[H, W]`` (grayscale),
            ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA, alpha composited on black).
            Arrays must be uint8, or float/int with values in 0..255.

    Raises:
        ValueError: the array has an unsupported shape or value range (message gives both).
    """
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb_array(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"expected a path, PIL image or numpy array, got {type(image).__name__}"
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
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
            raise ValueError(
                f"non-uint8 image arrays must hold values in 0..255; got {array.dtype} "
                f"in [{array.min()}, {array.max()}]"
            )
        array = np.rint(array).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, RGB_CHANNELS, axis=2)
    elif array.shape[2] == RGB_CHANNELS + 1:
        return pil_to_rgb_array(Image.fromarray(np.ascontiguousarray(array), mode="RGBA"))
    return np.ascontiguousarray(array)


def images_to_tensor(images: Sequence[np.ndarray]) -> Tensor:
    """Stack same-size ``[H, W, 3]`` uint8 images into a float ``[B, 3, H, W]`` tensor (0..255)."""
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"a batch needs images of one size after the transform, got {sorted(shapes)}")
    batch = np.stack(images).astype(np.float32)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def _size_of(value: Any, where: str) -> tuple[int, int]:
    if value is None:
        raise KeyError(f"sample.meta['{where}'] is missing: was the eval transform applied?")
    height, width = value  # type: ignore[misc]
    return int(height), int(width)


@torch.inference_mode()
def predict_samples(
    model: nn.Module,
    postprocessor: Callable[..., list[PanopticPrediction]],
    samples: Sequence[PanopticSample],
    *,
    device: str | torch.device = "cpu",
) -> list[PanopticPrediction]:
    """Batched forward + panoptic merge of samples that went through the eval transform.

    Args:
        model: a ``MaskConver`` in eval mode (returns ``MaskConverOutput``).
        postprocessor: the panoptic post-processor (``build.build_postprocessor``).
        samples: transformed samples; each has ``image [S, S, 3]`` uint8 and
            ``meta['valid_size']`` (the resized image's (h, w) inside the padded input) and
            ``meta['orig_size']`` (the original (H, W)).
        device: where the forward runs.

    Returns:
        One ``PanopticPrediction`` per sample at its original size ``[H, W]``.
    """
    if not samples:
        return []
    images = images_to_tensor([s.image for s in samples]).to(device)
    outputs = model(images)
    valid_sizes = [_size_of(s.meta.get("valid_size"), "valid_size") for s in samples]
    output_sizes = [_size_of(s.meta.get("orig_size"), "orig_size") for s in samples]
    return postprocessor(
        outputs,
        input_size=(int(images.shape[-2]), int(images.shape[-1])),
        valid_sizes=valid_sizes,
        output_sizes=output_sizes,
    )


class Predictor:
    """Panoptic inference on arbitrary images with a trained model.

    Attributes:
        model: the network (eval mode, on ``device``).
        cfg: the resolved config stored in the checkpoint.
        categories: the dataset's categories (ids, names, thing/stuff, colours).
        device: where inference runs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        cfg: Config,
        categories: CategorySet,
        postprocessor: Callable[..., list[PanopticPrediction]],
        transform: Callable[[PanopticSample], PanopticSample],
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.eval().to(device)
        self.cfg = cfg
        self.categories = categories
        self.postprocessor = postprocessor
        self.transform = transform
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str | torch.device = "cpu", use_ema: bool = True
    ) -> Predictor:
        """Load a checkpoint folder written by training (``.../checkpoints/step_N`` or ``best``).

        Args:
            path: the checkpoint folder (or a run folder; see ``engine.checkpoint.load_model``).
            device: where inference runs (``"cpu"``, ``"cuda"``).
            use_ema: use the EMA weights when the checkpoint has them.
        """
        from maskconver.build import build_eval_transforms, build_postprocessor
        from maskconver.engine.checkpoint import load_model

        model, cfg, categories, num_classes = load_model(path, use_ema=use_ema, device=str(device))
        return cls(
            model,
            cfg=cfg,
            categories=categories,
            postprocessor=build_postprocessor(cfg, categories, num_classes),
            transform=build_eval_transforms(cfg),
            device=device,
        )

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
            results.extend(predict_samples(self.model, self.postprocessor, chunk, device=self.device))
        return results
