"""Heads: feature fusions, the light conv head and the mask-embedding generator."""

from maskconver.meta.maskconver.heads.fusion import PyramidFusion, SelectLevels, SumToMerge
from maskconver.meta.maskconver.heads.light_head import LightHead
from maskconver.meta.maskconver.heads.mask_embedding import MaskEmbeddingGenerator
from maskconver.meta.maskconver.heads.semantic import SemanticHead

__all__ = [
    "LightHead",
    "MaskEmbeddingGenerator",
    "PyramidFusion",
    "SelectLevels",
    "SemanticHead",
    "SumToMerge",
]
