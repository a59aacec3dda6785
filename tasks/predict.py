"""Classify images with the registered model: ``--runtime torch|onnx|triton``, one JSON answer.

    python tasks/predict.py --image A.jpg [--image B.jpg] [--runtime onnx] [--model-id production]

torch rebuilds an image classifier from the training run's best checkpoint, onnx runs the
registered ONNX file in onnxruntime (a landmark classifier, ``make run``'s model, gets the hand
pipeline here first, as Triton's hand step measures photos), triton asks the served model at
``--url``. All three print the Triton client's JSON (``[{image, predictions: [{label, index,
probability}]}]``, with ``hand_found`` for a landmark classifier). A command, not a
ClearML task: answering one image should not open (and pay ~10 s to close) a tracked session.
Exit codes: 0 all answered; 1 some files were not images; 2 bad options, model, checkpoint or
server.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.optimize.options import PredictOptions
from asl_recognition.options import missing, parse


def main(argv: list[str] | None = None) -> int:
    options = parse(PredictOptions, argv, __doc__)
    absent = missing(options)
    if absent:
        print(f"predict: error: missing required option(s) {', '.join(absent)}", file=sys.stderr)
        return 2
    from asl_recognition.optimize.predict import run_predict
    from asl_recognition.optimize.variants import OptimizeError

    try:
        return run_predict(options)
    except OptimizeError as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
