"""MaskConver: backbone -> pixel decoder -> three light heads -> mask embeddings -> masks.

* ``model`` / ``outputs``: the network and ``MaskConverOutput`` (same in train and eval);
* ``heads``: feature fusions, the light conv head, the mask-embedding generator, semantic head;
* ``peaks``: top-K center peaks, gathering at centers, the hard sigmoid;
* ``targets``: center heatmaps and mask slots; ``losses``: focal / mask losses, ReMaX, criterion;
* ``postprocess``: the panoptic post-processor (``core(...)`` traceable, shared with ``export``);
* ``export``: the exportable graph; ``build``: the table entry (``ENTRY``) built from a config.
"""
