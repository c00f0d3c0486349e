"""The per-image loop every post-processor's batch call shares.

``merge_each`` checks the size lists against the batch, caps each image's merge canvas
(``canvas.working_size``: a very large image merges on a smaller canvas, then its map is
enlarged), validates the sizes and calls the architecture's one-image merge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from maskconver.postprocess.canvas import canvas_size, enlarge, working_size
from maskconver.postprocess.segments import PanopticPrediction

Size = tuple[int, int]
# (image index in the batch, input size, valid size, merge canvas) -> that image's prediction
MergeOne = Callable[[int, Size, Size, Size], PanopticPrediction]


def merge_each(
    batch: int,
    valid_sizes: Sequence[Sequence[int]],
    output_sizes: Sequence[Sequence[int]],
    input_size: Sequence[int],
    max_canvas_pixels: int,
    merge_one: MergeOne,
) -> list[PanopticPrediction]:
    """One ``PanopticPrediction`` per image of the batch, at its original size.

    Args:
        batch: number of images.
        valid_sizes: per image ``(h, w)`` of the resized image inside the padded input.
        output_sizes: per image original ``(H0, W0)``.
        input_size: ``(H, W)`` of the padded network input.
        max_canvas_pixels: merge-canvas cap (0: none).
        merge_one: the architecture's merge of image ``b`` on a canvas.

    Raises:
        ValueError: the size lists do not match the batch, or a size is invalid.
    """
    if len(valid_sizes) != batch or len(output_sizes) != batch:
        raise ValueError(
            f"got {len(valid_sizes)} valid sizes and {len(output_sizes)} output sizes for "
            f"a batch of {batch}"
        )
    hw_in = (int(input_size[0]), int(input_size[1]))
    results = []
    for b in range(batch):
        valid_size = (int(valid_sizes[b][0]), int(valid_sizes[b][1]))
        original = (int(output_sizes[b][0]), int(output_sizes[b][1]))
        canvas = working_size(original, max_canvas_pixels)
        canvas_size(hw_in, valid_size, canvas)  # validates the sizes
        prediction = merge_one(b, hw_in, valid_size, canvas)
        results.append(enlarge(prediction, original) if canvas != original else prediction)
    return results
