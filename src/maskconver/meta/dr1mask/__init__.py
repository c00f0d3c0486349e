"""DR1Mask (Chen et al., arXiv 2011.09796): FCOS + DR1Basis + the unified panoptic layer.

A meta-architecture next to MaskConver (``build.py`` holds its table entry ``ENTRY``):

* ``fcos``: class and box towers on P3-P7, per-level scales, classification / box / centerness;
* ``top_layer``: per location the instance embedding and the DR1 factors (from the box tower);
* ``basis``: DR1Basis, the top-down DR1Conv merge into one shared map ``F`` at stride 4;
* ``model``: the network and its output ``DR1MaskOutput``; ``detect``: static top-k + NMS;
* ``assign`` / ``targets``: FCOS centre sampling and size-of-interest assignment, training targets;
* ``boxes``, ``nms``, ``roi_align``: pure-torch box utilities, NMS and aligned RoIAlign;
* ``unified``: the unified panoptic layer (static stuff columns + one column per instance);
* ``criterion``, ``postprocess``, ``export``: losses, panoptic output, the exportable graph.
"""
