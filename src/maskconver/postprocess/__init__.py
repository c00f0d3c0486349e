"""Post-processing: center peaks and the panoptic merge."""

from maskconver.postprocess.panoptic import PanopticPostProcessor
from maskconver.postprocess.peaks import find_peaks, gather_embeddings

__all__ = ["PanopticPostProcessor", "find_peaks", "gather_embeddings"]
