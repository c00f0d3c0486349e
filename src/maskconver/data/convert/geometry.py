"""Checking an annotation's coordinates against its image before anything rasterises them.

The rasterisers (pycocotools' ``frPyObjects``, PIL's ``ImageDraw``) do work that grows with the
coordinates, not with the image: pycocotools walks every polygon edge at 5x resolution, so a
vertex at ``1e12`` (or NaN, cast to an integer) asks for terabytes and crashes; PIL silently
draws nothing for a rectangle or circle that large. So every coordinate is checked first
(``docs/data-formats.md``):

* it must be a number (not a string, ``bool`` or ``null``) and finite (no NaN / Inf);
* it must lie within ``MARGIN_IMAGES`` image sizes outside the image: ``-W <= x <= 2 W`` and
  ``-H <= y <= 2 H``. Annotations often stick out of the image by a few pixels (that is drawn
  and cut at the border); one that lies further out is not clipped but rejected, because such
  a vertex is a corrupt value, not a shape.

A rejected annotation raises ``InvalidAnnotation``; converters drop it with the reason
(``ConvertReport.invalid``: an error under ``strict``). What reaches a rasteriser therefore lies
in a box of ``3 W x 3 H``: its work is bounded by the image and the number of vertices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

from maskconver.data.coco_panoptic import DatasetError

MARGIN_IMAGES = 1  # coordinates may lie up to one image size (W or H) outside the image
MAX_VALUE_REPR = 40  # characters of a bad value quoted in a message


class InvalidAnnotation(DatasetError):
    """One annotation / shape that cannot be drawn; ``reason`` says why (no file / id in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_number(value: object) -> bool:
    """A real number that is not a ``bool`` (JSON ``true`` is no coordinate)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def short_repr(value: object) -> str:
    """``repr(value)`` cut to ``MAX_VALUE_REPR`` characters (for messages)."""
    text = repr(value)
    return text if len(text) <= MAX_VALUE_REPR else text[: MAX_VALUE_REPR - 3] + "..."


def coordinate_range(size: int) -> tuple[float, float]:
    """The allowed ``(low, high)`` of a coordinate along an image side of ``size`` pixels."""
    return (-MARGIN_IMAGES * float(size), (1 + MARGIN_IMAGES) * float(size))


def checked_coordinate(value: object, size: int, what: str) -> float:
    """``value`` as a float, checked to be a finite number within the margin of ``size``.

    Args:
        value: the coordinate as read from JSON.
        size: the image side it runs along (``W`` for x, ``H`` for y).
        what: how the message names it (``"x of point 2"``).

    Raises:
        InvalidAnnotation: not a number, not finite, or too far outside the image.
    """
    if not is_number(value):
        raise InvalidAnnotation(f"{what} is {short_repr(value)}, not a number")
    low, high = coordinate_range(size)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (OverflowError, ValueError):
        number = math.inf
    if math.isnan(number):
        raise InvalidAnnotation(f"{what} is NaN")
    if not low <= number <= high:
        raise InvalidAnnotation(
            f"{what} = {number:g} lies more than {MARGIN_IMAGES} image size outside the image "
            f"(allowed {low:g} .. {high:g} along a side of {size} px)"
        )
    return number


def checked_points(
    points: Sequence[tuple[object, object]], height: int, width: int, what: str
) -> list[tuple[float, float]]:
    """``[(x, y), ...]`` as floats, each checked with ``checked_coordinate``.

    Raises:
        InvalidAnnotation: the first bad coordinate, named ``"{what} point k"``.
    """
    return [
        (
            checked_coordinate(x, width, f"{what}x of point {k}"),
            checked_coordinate(y, height, f"{what}y of point {k}"),
        )
        for k, (x, y) in enumerate(points)
    ]
