"""Training stage: models, augmentation, the resumable loop, evaluation and ONNX export."""
