"""``python -m asl_recognition.web``: the live recognition page until Ctrl-C or SIGTERM."""

from __future__ import annotations

import sys

from asl_recognition.options import parse
from asl_recognition.serving.front import FrontServer

from .app import create_app
from .options import WebOptions


def main(argv: list[str] | None = None) -> int:
    options = parse(WebOptions, argv, WebOptions.__doc__ or "")
    server = FrontServer(create_app(options), options.host, options.port, options)
    print(f"live recognition page: http://{options.host}:{options.port}/", flush=True)
    try:
        server.server.run()  # main thread: uvicorn handles SIGINT/SIGTERM itself
    except OSError as exc:
        print(f"asl_recognition.web: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
