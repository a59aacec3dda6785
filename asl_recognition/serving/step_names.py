"""The names of an ensemble's steps, shared by the build and the public front.

A module of its own because the front's image installs only starlette, uvicorn and httpx: the
front imports nothing else (the build's modules pull in protobuf, tritonclient and onnx).
"""

# <model name> + one of these names a step; no served model may end so (the front takes no
# inference on them: calling <name>_metrics itself forged the production metrics).
STEP_SUFFIXES = ("_onnx", "_metrics", "_hands")
