"""Procedural panoptic dataset: the default data for tests, smoke training and the quickstart.

Every image is a pure function of ``(seed, index)``. Scene, bottom to top:

* stuff: ``sky`` (smooth vertical gradient) above a wavy horizon, ``grass`` (noisy, dotted) below
  it, and often a ``wall`` (horizontal brick courses with mortar lines) anchored to the left or
  right edge with a sloped top, covering parts of both;
* void: one or two grey clutter blobs and, in half of the images, a thin dark band at one border;
* things: disks, squares, triangles and crosses (classes differ by SHAPE; colours come from one
  shared palette), drawn back to front so later ones occlude earlier ones; some are placed to
  touch the previous instance of the same class.

Thing sizes: mostly medium (12-50 px), some tiny (4-12 px), a few large (up to 60% of the shorter
side). Pixel noise is added last. Fully occluded instances are not listed in ``segments``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from maskconver.data.types import VOID, Category, CategorySet, PanopticSample, SegmentInfo

# category ids are deliberately non-contiguous
DISK, SQUARE, TRIANGLE, CROSS = 1, 3, 7, 12
SKY, GRASS, WALL = 20, 31, 44
SYNTHETIC_CATEGORIES = (
    Category(DISK, "disk", True, (220, 20, 60)),
    Category(SQUARE, "square", True, (255, 165, 0)),
    Category(TRIANGLE, "triangle", True, (138, 43, 226)),
    Category(CROSS, "cross", True, (255, 255, 0)),
    Category(SKY, "sky", False, (135, 206, 235)),
    Category(GRASS, "grass", False, (34, 139, 34)),
    Category(WALL, "wall", False, (160, 160, 150)),
)
THING_IDS = (DISK, SQUARE, TRIANGLE, CROSS)

# object colours: shared by all thing classes; no greens/blues so things stand out from stuff
PALETTE = np.array(
    [
        [230, 30, 40],  # red
        [250, 220, 30],  # yellow
        [250, 130, 20],  # orange
        [150, 40, 200],  # purple
        [240, 60, 200],  # magenta
        [250, 250, 250],  # white
        [25, 25, 25],  # black
        [120, 70, 30],  # brown
    ],
    dtype=np.float32,
)

# scene layout (fractions of the image height / width)
HORIZON_RANGE = (0.3, 0.6)
HORIZON_WAVE_MAX = 0.08
WALL_PROB = 0.75
WALL_WIDTH_RANGE = (0.25, 0.5)
WALL_TOP_RANGE = (0.05, 0.4)
WALL_BOTTOM_RANGE = (0.65, 1.0)
WALL_MAX_SLOPE = 0.4
BRICK_HEIGHT = 8
BRICK_WIDTH = 16
MORTAR = 2
# things
NUM_THINGS_RANGE = (2, 8)  # inclusive
TINY_PROB, LARGE_PROB = 0.15, 0.1
TINY_SIZE = (4, 12)
MEDIUM_SIZE = (12, 50)
LARGE_MAX_FRACTION = 0.6
TOUCH_PROB = 0.3
SQUARE_HALF_SIDE = 0.8  # of the radius: similar area to the disk
CROSS_HALF_WIDTH = 0.35  # of the radius: arms 0.7 r wide, never thin
# void
VOID_BAND_PROB = 0.5
VOID_BAND_WIDTH = (2, 5)
VOID_BLOBS = (1, 2)
VOID_BLOB_RADIUS = (3, 9)
# stuff colours (RGB) and their per-image jitter
SKY_TOP = np.array([60, 110, 220], np.float32)  # deeper blue
SKY_BOTTOM = np.array([170, 210, 245], np.float32)  # pale blue at the horizon
SKY_JITTER = 20.0
GRASS_GREEN = np.array([50, 150, 40], np.float32)
GRASS_JITTER = 15.0
BRICK = np.array([190, 175, 150], np.float32)  # beige
BRICK_JITTER = 25.0
VOID_BLOB_GREY = (90.0, 140.0)
VOID_BLOB_NOISE = 15.0
VOID_BAND_GREY = 10.0
TOUCH_DISTANCE = (0.8, 1.0)  # centre distance of touching instances, in sums of radii
# noise
PIXEL_NOISE_STD = 6.0
GRASS_LUM_STD = 0.2
DOT_DARKEN = 0.5
MORTAR_DARKEN = 0.45
GRASS_DOT_PROB = 0.08
OBJECT_COLOR_JITTER = 20.0
SHADE_GAIN = 0.15
# segment ids: category_id * ID_STRIDE + instance number (unique, readable in a debugger)
ID_STRIDE = 1000


def synthetic_categories(label_space: str = "contiguous") -> CategorySet:
    """The synthetic dataset's categories (things 1, 3, 7, 12; stuff 20, 31, 44)."""
    return CategorySet(list(SYNTHETIC_CATEGORIES), label_space)


def _shape_mask(
    kind: int, dy: np.ndarray, dx: np.ndarray, radius: float, angle: float
) -> np.ndarray:
    """Bool mask of a thing shape from offsets to its centre (``dy [h, 1]``, ``dx [1, w]``)."""
    cos, sin = np.cos(angle), np.sin(angle)
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    if kind == DISK:
        return u * u + v * v <= radius * radius
    if kind == SQUARE:
        return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE * radius
    if kind == TRIANGLE:  # equilateral, inscribed in the circle of this radius
        inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
        for k in range(3):
            a = 2 * np.pi * k / 3
            inside &= np.cos(a) * u + np.sin(a) * v <= radius / 2
        return inside
    if kind == CROSS:
        au, av = np.abs(u), np.abs(v)
        arm = CROSS_HALF_WIDTH * radius
        return ((au <= radius) & (av <= arm)) | ((av <= radius) & (au <= arm))
    raise ValueError(f"unknown thing category {kind}")


def _thing_radius(rng: np.random.Generator, height: int, width: int) -> float:
    """Half the object size: mostly medium, some tiny, a few large."""
    r = rng.random()
    if r < TINY_PROB:
        size = rng.uniform(*TINY_SIZE)
    elif r < TINY_PROB + LARGE_PROB:
        size = rng.uniform(
            MEDIUM_SIZE[1], max(MEDIUM_SIZE[1], LARGE_MAX_FRACTION * min(height, width))
        )
    else:
        size = rng.uniform(*MEDIUM_SIZE)
    return size / 2


def _stuff(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Stuff layout and texture: ``[H, W]`` int32 category map and ``[H, W, 3]`` float image."""
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    horizon = height * rng.uniform(*HORIZON_RANGE) + height * rng.uniform(
        0, HORIZON_WAVE_MAX
    ) * np.sin(2 * np.pi * xs / rng.uniform(0.5, 2.0) / width + rng.uniform(0, 2 * np.pi))
    cat = np.where(ys < horizon, SKY, GRASS).astype(np.int32)
    # base colours: sky gradient from a deeper blue at the top to a pale blue near the horizon
    top = SKY_TOP + rng.uniform(-1, 1, 3).astype(np.float32) * SKY_JITTER
    bottom = SKY_BOTTOM + rng.uniform(-1, 1, 3).astype(np.float32) * SKY_JITTER / 2
    t = (ys / height)[..., None]
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:] = top * (1 - t) + bottom * t
    grass = cat == GRASS
    image[grass] = GRASS_GREEN + rng.uniform(-1, 1, 3).astype(np.float32) * GRASS_JITTER
    # texture as a [H, W] brightness factor: grass noisy with dark dots, flat elsewhere
    noise = rng.standard_normal((height, width), dtype=np.float32)
    dots = rng.random((height, width)) < GRASS_DOT_PROB
    lum = np.where(grass, 1 + GRASS_LUM_STD * noise, np.float32(1))
    lum[grass & dots] *= DOT_DARKEN

    if rng.random() < WALL_PROB:
        wall_w = width * rng.uniform(*WALL_WIDTH_RANGE)
        on_left = rng.random() < 0.5
        in_x = xs < wall_w if on_left else xs >= width - wall_w
        from_edge = xs if on_left else width - 1 - xs
        slope = rng.uniform(-WALL_MAX_SLOPE, WALL_MAX_SLOPE)
        top_y = height * rng.uniform(*WALL_TOP_RANGE) + slope * from_edge
        bottom_y = height * rng.uniform(*WALL_BOTTOM_RANGE)
        wall = in_x & (ys >= top_y) & (ys < bottom_y)
        cat[wall] = WALL
        # bricks: beige/grey courses, alternate rows shifted by half a brick, dark mortar lines
        image[wall] = BRICK + rng.uniform(-1, 1, 3).astype(np.float32) * BRICK_JITTER
        shift = ((ys // BRICK_HEIGHT) % 2) * (BRICK_WIDTH // 2)
        mortar = (ys % BRICK_HEIGHT < MORTAR) | ((xs + shift) % BRICK_WIDTH < MORTAR)
        lum[wall] = np.where(mortar, np.float32(MORTAR_DARKEN), np.float32(1))[wall]
    image *= lum[..., None]
    return cat, image


def _void(rng: np.random.Generator, cat: np.ndarray, image: np.ndarray) -> None:
    """Paint unlabelled clutter blobs and maybe a dark border band (category 0) in place."""
    height, width = cat.shape
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    for _ in range(rng.integers(VOID_BLOBS[0], VOID_BLOBS[1] + 1)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(*VOID_BLOB_RADIUS, size=2)
        blob = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        cat[blob] = VOID
        grey = rng.uniform(*VOID_BLOB_GREY)
        image[blob] = grey + rng.normal(0, VOID_BLOB_NOISE, (int(blob.sum()), 1))
    if rng.random() < VOID_BAND_PROB:
        band = int(rng.integers(VOID_BAND_WIDTH[0], VOID_BAND_WIDTH[1] + 1))
        side = int(rng.integers(4))
        region = (
            slice(0, band),
            slice(height - band, height),
            slice(0, band),
            slice(width - band, width),
        )[side]
        index = (region, slice(None)) if side < 2 else (slice(None), region)
        cat[index] = VOID
        image[index] = VOID_BAND_GREY


def generate_sample(
    rng: np.random.Generator, height: int, width: int, crowd_prob: float = 0.0
) -> PanopticSample:
    """Draw one synthetic scene of size ``height x width`` from ``rng``.

    Returns:
        A ``PanopticSample`` (image ``[H, W, 3]`` uint8, panoptic ``[H, W]`` int32) whose segments
        are exactly the non-void ids of the map.
    """
    cat, image = _stuff(rng, height, width)
    _void(rng, cat, image)
    # stuff segments: one id per stuff class present
    panoptic = np.where(cat == VOID, VOID, cat * ID_STRIDE).astype(np.int32)

    things: list[tuple[int, int]] = []  # (segment id, category id)
    prev: tuple[int, float, float, float] | None = None  # (kind, cy, cx, radius)
    for n in range(int(rng.integers(NUM_THINGS_RANGE[0], NUM_THINGS_RANGE[1] + 1))):
        radius = _thing_radius(rng, height, width)
        if prev is not None and rng.random() < TOUCH_PROB:
            kind, py, px, pr = prev  # same class, centre at distance ~ sum of radii
            a = rng.uniform(0, 2 * np.pi)
            d = (pr + radius) * rng.uniform(*TOUCH_DISTANCE)
            cy, cx = py + d * np.sin(a), px + d * np.cos(a)
        else:
            kind = int(rng.choice(THING_IDS))
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        angle = rng.uniform(0, 2 * np.pi)
        color = PALETTE[rng.integers(len(PALETTE))] + rng.uniform(-1, 1, 3) * OBJECT_COLOR_JITTER
        prev = (kind, cy, cx, radius)
        # rasterise inside the clipped bounding window only
        y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, height)
        x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, width)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
        mask = _shape_mask(kind, dy, dx, radius, angle)
        seg_id = kind * ID_STRIDE + n + 1
        panoptic[y0:y1, x0:x1][mask] = seg_id
        # a little vertical shading so the object is not perfectly flat
        shade = np.clip(1.0 + SHADE_GAIN * dy / max(radius, 1.0), 1 - SHADE_GAIN, 1 + SHADE_GAIN)
        colored = np.broadcast_to(shade[..., None] * color, (*mask.shape, 3))
        image[y0:y1, x0:x1][mask] = colored[mask]
        things.append((seg_id, kind))

    # luminance noise (one draw per pixel, shared by the channels: cheap and enough)
    image += PIXEL_NOISE_STD * rng.standard_normal((height, width, 1), dtype=np.float32)
    image_u8 = np.clip(image, 0, 255).astype(np.uint8)

    ids, counts = np.unique(panoptic, return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    present = set(area) - {VOID}
    segments = [
        SegmentInfo(id=sid, category_id=c, isthing=False)
        for c in (SKY, GRASS, WALL)
        if (sid := c * ID_STRIDE) in present
    ]
    for seg_id, kind in things:
        if seg_id in present:
            crowd = crowd_prob > 0 and bool(rng.random() < crowd_prob)
            segments.append(SegmentInfo(id=seg_id, category_id=kind, iscrowd=crowd, isthing=True))
    for seg in segments:
        seg.area = area[seg.id]
    return PanopticSample(image=image_u8, panoptic=panoptic, segments=segments)


class SyntheticPanoptic(Dataset[PanopticSample]):
    """Procedural panoptic scenes; sample ``i`` depends only on ``(seed, stream, i)``.

    Attributes:
        categories: things disk 1, square 3, triangle 7, cross 12; stuff sky 20, grass 31, wall 44.
    """

    def __init__(
        self,
        num_images: int,
        *,
        seed: int = 0,
        min_size: int = 96,
        max_size: int = 160,
        crowd_prob: float = 0.0,
        stream: int = 0,
        label_space: str = "contiguous",
    ) -> None:
        """Describe the dataset (scenes are drawn on access).

        Args:
            num_images: dataset length.
            seed: non-negative base seed.
            min_size: smallest height / width (each is drawn independently from the inclusive
                range ``min_size..max_size``).
            max_size: largest height / width.
            crowd_prob: probability that a thing segment is flagged ``iscrowd``.
            stream: independent sample stream for the same seed (train 0, val 1).
            label_space: label space of ``categories``.
        """
        if num_images < 0 or seed < 0 or stream < 0:
            raise ValueError(
                f"num_images, seed and stream must be >= 0, got {num_images}, {seed}, {stream}"
            )
        if not 0 < min_size <= max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        if not 0.0 <= crowd_prob <= 1.0:
            raise ValueError(f"crowd_prob must lie in [0, 1], got {crowd_prob}")
        self.num_images = num_images
        self.seed = seed
        self.min_size = min_size
        self.max_size = max_size
        self.crowd_prob = crowd_prob
        self.stream = stream
        self.categories = synthetic_categories(label_space)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> PanopticSample:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic images")
        # stream 0 uses exactly default_rng([seed, i]); other streams get their own entropy
        entropy = [self.seed, index] if self.stream == 0 else [self.seed, index, self.stream]
        rng = np.random.default_rng(entropy)
        height, width = (int(v) for v in rng.integers(self.min_size, self.max_size + 1, size=2))
        sample = generate_sample(rng, height, width, self.crowd_prob)
        sample.image_id = index
        sample.file_name = f"{index:012d}.jpg"
        sample.meta = {"orig_size": (height, width)}
        return sample


TRAIN_STREAM, VAL_STREAM = 0, 1


def write_synthetic_dataset(
    out: str | Path,
    *,
    train: int,
    val: int,
    seed: int,
    min_size: int = 96,
    max_size: int = 160,
    image_format: str = "jpg",
    progress: bool = True,
) -> None:
    """Write ``train2017`` and ``val2017`` splits in the standard COCO panoptic layout.

    Val images come from a different sample stream than train, so the splits never overlap.
    """
    from maskconver.data.writer import write_coco_panoptic

    for split, count, stream in (("train2017", train, TRAIN_STREAM), ("val2017", val, VAL_STREAM)):
        dataset = SyntheticPanoptic(
            count, seed=seed, min_size=min_size, max_size=max_size, stream=stream
        )
        samples = (dataset[i] for i in range(count))
        bar = tqdm(
            samples,
            total=count,
            desc=f"synthetic {split}",
            disable=None if progress else True,
            leave=False,
        )
        write_coco_panoptic(bar, out, split, dataset.categories, image_format=image_format)
