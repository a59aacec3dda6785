"""Faster variants of a registered model: INT8 (static QDQ) and ORT graph-optimised ONNX.

:mod:`variants` builds and registers them, :mod:`measure` scores and times them side by side,
:mod:`report` writes and logs the comparison, :mod:`profiling` keeps a training-step and a
served-request profile, and :mod:`predict` answers one image with torch, onnxruntime or Triton.
"""
