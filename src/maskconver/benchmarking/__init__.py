"""Speed and size measurements behind ``maskconver benchmark`` and the ``benchmarks/`` scripts.

* ``measure``: parameters, MACs and latency of a model config (no torch import at module level).
* ``compare``: this model's deployments (``deployments``: torch, onnxruntime, OpenVINO, TFLite)
  against the ``peers`` (Mask2Former, MaskFormer, EoMT), interleaved
  (``maskconver benchmark --compare``; imports torch).
* ``profile`` (analysis), ``profile_run`` (onnxruntime measurements) and ``profile_table``
  (text): the per-layer roofline
  of the exported network (``maskconver benchmark --profile``).

Nothing here imports ``maskconver.commands``: the command line sits on top of this package.
"""
