"""Errors the training task turns into a one-line message (no traceback) for the user."""

from __future__ import annotations


class TrainingInputError(ValueError):
    """Bad input to training: missing dataset, class mismatch, bad size, unwritable output..."""


class NonFiniteLossError(TrainingInputError):
    """The loss became NaN/inf; the run stops and the last good checkpoint is kept."""


class ParityError(TrainingInputError):
    """The exported ONNX graph disagrees with the torch model: never ship it."""
