"""Joint image/panoptic transforms: ``transform(sample, rng) -> new sample`` (input untouched).

Images are resized bilinearly, panoptic maps by nearest neighbour on pixel centres (ids stay
exact). Padding goes to the bottom/right: the image gets the ImageNet mean colour (0 after the
model's normalisation), the panoptic map gets ``PADDING`` (-1). Segments that no longer occur are
dropped and areas are recounted after every geometric change.

``LargeScaleJitter`` follows the reference parser (reference section 2.2, steps 3-4), except that
image and panoptic map share one rounded size so they stay aligned pixel for pixel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from maskconver.data.types import PADDING, PanopticSample

# ImageNet mean (123.675, 116.28, 103.53) rounded to uint8
IMAGE_PAD_COLOR = (124, 116, 104)

Transform = Callable[[PanopticSample, np.random.Generator], PanopticSample]


def _with_maps(sample: PanopticSample, image: np.ndarray, panoptic: np.ndarray) -> PanopticSample:
    """A copy of ``sample`` with new arrays; segments filtered to the map and areas recounted."""
    ids, counts = np.unique(panoptic, return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    segments = [dataclasses.replace(s, area=area[s.id]) for s in sample.segments if s.id in area]
    return PanopticSample(
        image=image,
        panoptic=panoptic,
        segments=segments,
        image_id=sample.image_id,
        file_name=sample.file_name,
        meta=dict(sample.meta),
    )


def _check(sample: PanopticSample) -> tuple[int, int]:
    """``(H, W)`` of a sample whose image and map agree (ValueError naming the image id)."""
    if sample.image.ndim != 3 or sample.image.shape[2] != 3 or sample.image.dtype != np.uint8:
        raise ValueError(
            f"image id {sample.image_id}: image must be [H, W, 3] uint8, got "
            f"{sample.image.shape} {sample.image.dtype}"
        )
    if sample.panoptic.shape != sample.image.shape[:2]:
        raise ValueError(
            f"image id {sample.image_id}: panoptic {sample.panoptic.shape} does not match image "
            f"{sample.image.shape[:2]}"
        )
    return int(sample.panoptic.shape[0]), int(sample.panoptic.shape[1])


def resize_to(sample: PanopticSample, size: tuple[int, int]) -> PanopticSample:
    """Resize to ``size = (H', W')``: image bilinear, panoptic nearest (pixel-centre sampling)."""
    height, width = _check(sample)
    new_h, new_w = size
    if new_h < 1 or new_w < 1:
        raise ValueError(f"image id {sample.image_id}: cannot resize to {size}")
    if (new_h, new_w) == (height, width):
        return _with_maps(sample, sample.image.copy(), sample.panoptic.copy())
    image = np.asarray(
        Image.fromarray(sample.image).resize((new_w, new_h), Image.Resampling.BILINEAR)
    )
    # output pixel centre (i + 0.5) maps to input coordinate (i + 0.5) * H / H'
    rows = np.minimum(((np.arange(new_h) + 0.5) * height / new_h).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(new_w) + 0.5) * width / new_w).astype(np.int64), width - 1)
    panoptic = sample.panoptic[rows[:, None], cols[None, :]]
    return _with_maps(sample, image.copy(), panoptic)


def resize(sample: PanopticSample, scale: float) -> PanopticSample:
    """Isotropic resize by ``scale`` to ``(round(H * scale), round(W * scale))`` (at least 1)."""
    height, width = _check(sample)
    if scale <= 0:
        raise ValueError(f"image id {sample.image_id}: scale must be positive, got {scale}")
    return resize_to(sample, (max(1, round(height * scale)), max(1, round(width * scale))))


def crop(sample: PanopticSample, top: int, left: int, height: int, width: int) -> PanopticSample:
    """The window ``[top:top+height, left:left+width]`` (must lie inside the sample)."""
    h, w = _check(sample)
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(
            f"image id {sample.image_id}: crop {(top, left, height, width)} outside {(h, w)}"
        )
    window = (slice(top, top + height), slice(left, left + width))
    return _with_maps(sample, sample.image[window].copy(), sample.panoptic[window].copy())


def pad_to(sample: PanopticSample, size: tuple[int, int]) -> PanopticSample:
    """Pad bottom/right to ``size = (H', W')``: image with ``IMAGE_PAD_COLOR``, map with -1."""
    height, width = _check(sample)
    out_h, out_w = size
    if out_h < height or out_w < width:
        raise ValueError(
            f"image id {sample.image_id}: cannot pad {(height, width)} to smaller size {size}"
        )
    image = np.empty((out_h, out_w, 3), dtype=np.uint8)
    image[:] = np.array(IMAGE_PAD_COLOR, dtype=np.uint8)
    image[:height, :width] = sample.image
    panoptic = np.full((out_h, out_w), PADDING, dtype=np.int32)
    panoptic[:height, :width] = sample.panoptic
    return _with_maps(sample, image, panoptic)


class Compose:
    """Apply transforms in order, threading the same ``rng``."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Apply every transform in order with the same ``rng``."""
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


class RandomHorizontalFlip:
    """Mirror image and map left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must lie in [0, 1], got {p}")
        self.p = p

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """A mirrored copy with probability ``p``, else an unchanged copy."""
        _check(sample)
        if rng.random() >= self.p:
            return _with_maps(sample, sample.image.copy(), sample.panoptic.copy())
        return _with_maps(sample, sample.image[:, ::-1].copy(), sample.panoptic[:, ::-1].copy())


class LargeScaleJitter:
    """Scale jitter, random crop and pad to a fixed ``output_size = (H, W)`` (reference 2.2).

    ``s ~ U(scale_min, scale_max)``; target ``round(s * output_size)``; the image is scaled
    isotropically to fit inside the target; if it is then larger than ``output_size`` a crop offset
    is drawn uniformly in ``[0, excess]`` per axis (truncated to int); finally bottom/right padding
    to ``output_size``. ``meta["valid_size"]`` is the non-padded extent.
    """

    def __init__(self, output_size: tuple[int, int], scale_min: float, scale_max: float) -> None:
        if len(output_size) != 2 or min(output_size) < 1:
            raise ValueError(f"output_size must be (H, W) >= 1, got {output_size}")
        if not 0 < scale_min <= scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {scale_min}, {scale_max}")
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.scale_min = scale_min
        self.scale_max = scale_max

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Rescale by a random factor, crop or pad to ``output_size`` (see the class docstring)."""
        height, width = _check(sample)
        out_h, out_w = self.output_size
        s = rng.uniform(self.scale_min, self.scale_max)
        target_h, target_w = round(s * out_h), round(s * out_w)
        scale = min(target_h / height, target_w / width)
        scaled = resize(sample, scale)
        new_h, new_w = scaled.panoptic.shape
        top = int(rng.uniform(0, new_h - out_h)) if new_h > out_h else 0
        left = int(rng.uniform(0, new_w - out_w)) if new_w > out_w else 0
        crop_h, crop_w = min(new_h, out_h), min(new_w, out_w)
        if (crop_h, crop_w) != (new_h, new_w):
            scaled = crop(scaled, top, left, crop_h, crop_w)
        out = pad_to(scaled, self.output_size)
        out.meta.setdefault("orig_size", (height, width))
        out.meta["valid_size"] = (crop_h, crop_w)
        return out


class ResizePad:
    """Evaluation/prediction resize: longest side to ``size``, then pad.

    ``divisibility`` 0 pads to the square ``size x size`` (the reference); ``d > 0`` pads each
    side only up to the next multiple of ``d`` (DR1Mask section 3.3: 4 instead of 32, so little
    padding is added; non-square outputs, batched by ``inference.images_to_tensor``).

    Sets ``meta["valid_size"] = (h, w)`` (the resized extent) and keeps ``meta["orig_size"]``
    (set to the input size if absent), so predictions can be cropped and resized back.
    """

    def __init__(self, size: int, divisibility: int = 0) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if divisibility < 0:
            raise ValueError(f"divisibility must be >= 0, got {divisibility}")
        self.size = size
        self.divisibility = divisibility

    def __call__(
        self, sample: PanopticSample, rng: np.random.Generator | None = None
    ) -> PanopticSample:
        """Resize the longest side to ``size`` and pad to a square (``rng`` is unused)."""
        height, width = _check(sample)
        scale = self.size / max(height, width)
        # the longest side is exactly `size`; the other is rounded (at least 1 px)
        if height >= width:
            new_size = (self.size, max(1, round(width * scale)))
        else:
            new_size = (max(1, round(height * scale)), self.size)
        padded = (self.size, self.size)
        if self.divisibility:
            d = self.divisibility
            padded = (-(-new_size[0] // d) * d, -(-new_size[1] // d) * d)
        out = pad_to(resize_to(sample, new_size), padded)
        out.meta.setdefault("orig_size", (height, width))
        out.meta["valid_size"] = new_size
        return out


class ResizePadTo:
    """Fit an image inside ``height x width`` (aspect kept), then pad to exactly that size.

    The eval transform of a fixed-size exported graph. Sets ``meta["valid_size"]`` and keeps
    ``meta["orig_size"]`` like ``ResizePad``.
    """

    def __init__(self, height: int, width: int) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"size must be positive, got {height}x{width}")
        self.size = (height, width)

    def __call__(
        self, sample: PanopticSample, rng: np.random.Generator | None = None
    ) -> PanopticSample:
        """Resize to fit, pad at the bottom/right (``rng`` is unused)."""
        height, width = _check(sample)
        scale = min(self.size[0] / height, self.size[1] / width)
        new_size = (
            min(self.size[0], max(1, round(height * scale))),
            min(self.size[1], max(1, round(width * scale))),
        )
        out = pad_to(resize_to(sample, new_size), self.size)
        out.meta.setdefault("orig_size", (height, width))
        out.meta["valid_size"] = new_size
        return out
