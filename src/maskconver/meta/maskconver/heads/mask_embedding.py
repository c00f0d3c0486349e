"""Class-conditioned mask embeddings and mask logits (reference section 1.6)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from maskconver.layers.types import ActLayer

EMBEDDING_INIT_RANGE = 0.05  # Keras Embedding default: uniform(-0.05, 0.05)
MLP_NORM_EPS = 1e-6


class MaskEmbeddingGenerator(nn.Module):
    """``MLP(center_embedding (*|+) class_embedding[class])`` and the mask-logit product.

    Args:
        num_classes: rows of the class-embedding table.
        embedding_dim: E, the center/pixel embedding size.
        hidden_dim: MLP hidden width (256 single-scale reference, 1024 multi-scale).
        fusion: ``"mul"`` (reference single-scale), ``"add"`` (paper / multi-scale) or
            ``"none"`` (no class embedding, MaskConver Table 4's ablation: the MLP sees the
            center embedding alone and there is no class table).
        act_layer: ``act_layer()`` builds the MLP activation.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        *,
        hidden_dim: int,
        fusion: Literal["mul", "add", "none"] = "mul",
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        if fusion not in ("mul", "add", "none"):
            raise ValueError(
                f"MaskEmbeddingGenerator: fusion must be 'mul', 'add' or 'none', got {fusion!r}"
            )
        self.num_classes = num_classes
        self.fusion = fusion
        self.class_embedding: nn.Embedding | None = None
        if fusion != "none":
            self.class_embedding = nn.Embedding(num_classes, embedding_dim)
            nn.init.uniform_(
                self.class_embedding.weight, -EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE
            )
        first, last = nn.Linear(embedding_dim, hidden_dim), nn.Linear(hidden_dim, embedding_dim)
        self.mlp = nn.Sequential(
            first, nn.LayerNorm(hidden_dim, eps=MLP_NORM_EPS), act_layer(), last
        )
        for layer in (first, last):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, center_embeddings: Tensor, classes: Tensor) -> Tensor:
        """Fuse center and class embeddings and run the MLP.

        Args:
            center_embeddings: ``[B, K, E]`` embeddings gathered at the centers.
            classes: ``[B, K]`` int class indices; negatives (padding) are clamped to 0.

        Returns:
            ``[B, K, E]`` mask embeddings.
        """
        if self.class_embedding is None:
            return self.mlp(center_embeddings)
        class_emb = self.class_embedding(classes.long().clamp(min=0))
        if self.fusion == "mul":
            fused = center_embeddings * class_emb
        else:
            fused = center_embeddings + class_emb
        return self.mlp(fused)

    @staticmethod
    def mask_logits(mask_embeddings: Tensor, pixel_embeddings: Tensor) -> Tensor:
        """Dot product per pixel, no bias or scale.

        Args:
            mask_embeddings: ``[B, K, E]``.
            pixel_embeddings: ``[B, E, h, w]``.

        Returns:
            ``[B, K, h, w]`` mask logits.
        """
        return torch.einsum("bke,behw->bkhw", mask_embeddings, pixel_embeddings)
