"""kMaX-DeepLab (k-means Mask Transformer), the model ReMaX was made for.

Modules: ``model`` (``KMaXDeepLab``, ``PixelHead``), ``outputs`` (``KMaXOutput``),
``pixel_decoder`` (axial-attention and bottleneck stages), ``transformer`` (k-means
cross-attention blocks and the predictor), ``targets`` (stride-4 masks per image),
``matching`` (Hungarian matching), ``losses`` (the loss terms), ``semantic_heads`` (kMaX's
auxiliary semantic head and ReMaX's per-stage heads, training only), ``criterion`` (deep
supervision over every prediction, ReMaX's ReMask and ReClass), ``postprocess`` (query scores
and the shared merge core), ``export`` (the ONNX graph), ``build`` (the table entry ``ENTRY``).
"""
