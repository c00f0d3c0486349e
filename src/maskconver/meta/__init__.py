"""Meta-architectures: one package each, equals, never importing one another.

* ``maskconver``: MaskConver (WACV 2024): centers on a heatmap, class-conditioned mask
  embeddings, masks as their product with per-pixel mask features;
* ``dr1mask``: DR1Mask: FCOS detections, DR1Basis, the unified panoptic layer.

Each package holds its model, output type, target generator, criterion, post-processor (with a
traceable ``core(...)``), exportable graph module and its table entry (``<name>/build.py``:
``ENTRY``, a ``base.MetaArchitecture``). ``maskconver.build.META_ARCHITECTURES`` names the
entries and imports a package only when its name is asked for. What more than one uses
(backbones, pixel decoders, layers, the merge core, the panoptic result type, target stacking)
lives below them. How to add one: ``docs/extending.md``.
"""
