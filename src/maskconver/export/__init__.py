"""Deployment: the exportable graph, ONNX export with metadata, int8, the onnxruntime backend."""
