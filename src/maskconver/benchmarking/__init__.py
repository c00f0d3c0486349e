"""Speed and size measurements behind ``maskconver benchmark`` and the ``benchmarks/`` scripts.

* ``measure``: parameters, MACs and latency of a model config (no torch import at module level).
* ``peers``: this model in torch / onnxruntime against Mask2Former and MaskFormer, interleaved
  (``maskconver benchmark --compare``; imports torch).

Nothing here imports ``maskconver.commands``: the command line sits on top of this package.
"""
