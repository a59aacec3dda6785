"""``make demo`` (after ``make run``): the local Triton on ``make run``'s repository and the live
recognition page in front of it, until Ctrl-C. The page's loopback URL is printed.

    python -m asl_recognition.web.demo [--repo DIR] [--port N] [--hold-ms MS ...]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from asl_recognition.options import option, parse
from asl_recognition.paths import workspace

from .options import WebLimits, WebOptions

PROG = "asl_recognition.web.demo"


@dataclass
class DemoWebOptions(WebOptions):
    """Serve make run's model with the local tritonserver and the live recognition page."""

    repo: str | None = option(None, "Triton repository (default: the last pipeline run's)")


def pipeline_repository() -> Path:
    """The repository the last completed ``make run`` built, else ``<workspace>/triton_repo``."""
    from asl_recognition.pipeline.runs import list_runs

    runs = [r for r in list_runs() if r.get("status") == "completed"]
    step = runs[-1].get("steps", {}).get("build_triton_repo", {}) if runs else {}
    return Path((step.get("outputs") or {}).get("repo") or workspace() / "triton_repo")


def serve(options: DemoWebOptions, repo: Path) -> int:
    from asl_recognition.serving.front import FrontServer
    from asl_recognition.serving.triton_server import TritonServer

    from .app import create_app

    log = workspace() / "triton_web_demo.log"
    print(f"Starting Triton on repository {repo} (log {log})", flush=True)
    with TritonServer.on_free_ports(repo, model_control_mode="none", log_path=log) as triton:
        options.triton = triton.grpc_url
        web = FrontServer(create_app(options), options.host, options.port, options)
        print(
            f"Triton ready (gRPC {triton.grpc_url}); the page is served until Ctrl-C", flush=True
        )
        print(f"\n    live recognition page: http://{options.host}:{options.port}/\n", flush=True)
        web.server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    options = parse(DemoWebOptions, argv, DemoWebOptions.__doc__ or "")
    repo = Path(options.repo) if options.repo else pipeline_repository()
    if not any(repo.glob("*/config.pbtxt")):
        print(
            f"{PROG}: error: no Triton repository at {repo}; run `make run` first", file=sys.stderr
        )
        return 2
    try:
        return serve(options, repo)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
        print(f"{PROG}: error: {str(exc).splitlines()[0] if str(exc) else exc!r}", file=sys.stderr)
        return 3


__all__ = ["DemoWebOptions", "WebLimits", "main", "pipeline_repository"]

if __name__ == "__main__":
    raise SystemExit(main())
