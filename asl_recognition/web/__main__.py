"""``python -m asl_recognition.web``: the live recognition page (and the status page on
``/status``) until Ctrl-C or SIGTERM."""

from __future__ import annotations

from .server import main

if __name__ == "__main__":
    raise SystemExit(main())
