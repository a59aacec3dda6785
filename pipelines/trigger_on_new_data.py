"""ClearML service: start the ASL pipeline whenever a new ``ASL_raw`` dataset version appears.

A ``TriggerScheduler`` watches every dataset named exactly ``--dataset-name`` (in any project: a
project filter is resolved once, at registration, and would miss projects created later). For
every new finalized version it runs ``pipelines/asl_pipeline.py --mode queue raw_version=<id>``:
a fresh controller built from the one DAG, which skips validate_raw (the version already
exists). Versions made by the pipeline's own validate_raw carry the tag ``asl-pipeline`` and are
ignored, so one upload starts one pipeline. A failed launch is logged in one line and retried at
the next polls (``--max-tries``). One instance runs at a time: ``--replace`` stops the running
one and starts anew (the restart path, also how newer code is deployed: launched pipelines are
built from the service's own checkout). The service runs on the ``services`` queue, or here with
``--run-here``; under an agent its options are read back from its task. Needs a server. Life
cycle and state: ``asl_recognition/pipeline/trigger.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.clearml_env import server_configured, server_unreachable
from asl_recognition.options import parse
from asl_recognition.pipeline.options import TriggerOptions


def main(argv: list[str] | None = None) -> int:
    options = parse(TriggerOptions, argv, __doc__)
    if not server_configured():
        print(
            "trigger_on_new_data: error: needs a ClearML server (clearml.conf or CLEARML_API_* "
            "variables); without one, run `python pipelines/asl_pipeline.py` after adding data",
            file=sys.stderr,
        )
        return 2
    unreachable = server_unreachable()
    if unreachable:
        print(f"trigger_on_new_data: error: {unreachable}", file=sys.stderr)
        return 2
    from asl_recognition.pipeline.trigger import serve

    return serve(options)


if __name__ == "__main__":
    sys.exit(main())
