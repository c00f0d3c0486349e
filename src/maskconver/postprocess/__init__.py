"""Post-processing: center peaks, the tensor merge core and the panoptic post-processor."""

from maskconver.postprocess.merge import MergeCore, merge_proposals, sort_proposals
from maskconver.postprocess.panoptic import PanopticPostProcessor, number_segments
from maskconver.postprocess.peaks import find_peaks, gather_at_centers

__all__ = [
    "MergeCore",
    "PanopticPostProcessor",
    "find_peaks",
    "gather_at_centers",
    "merge_proposals",
    "number_segments",
    "sort_proposals",
]
