"""A local ``tritonserver`` process: the real binary from the ``nvidia-pytriton`` wheel, on CPU,
without Docker.

That build carries only the Python backend, so a backend directory is assembled per server:
``python/`` (the backend library, its utils and the stub for the running interpreter) and
``onnxruntime/model.py`` (the project's Python-based stand-in for the C++ onnxruntime backend),
so the generated ``platform: "onnxruntime_onnx"`` configs load unchanged.

Each server's Python-backend stubs name their ``/dev/shm`` regions with a prefix of this server
alone (``shm-region-prefix-name``); a server that died (SIGKILL, SIGSEGV) leaves them behind, and
:meth:`TritonServer.stop` (run before every restart) removes exactly those. The command line that
supervises a server behind the front is :mod:`.launcher`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Callable

from asl_recognition.child_output import Output
from asl_recognition.netutil import free_ports, raise_open_files_limit
from asl_recognition.paths import REPO_ROOT, workspace
from asl_recognition.processes import Child, ChildError, describe_exit, http_ready, never
from asl_recognition.serving import repo_manifest
from asl_recognition.serving.admin_api import (
    KEY_ENV,
    MODE_FLAG,
    OWN_FLAGS,
    AdminKeyError,
    admin_key,
    refused_flag,
    restriction_args,
)
from asl_recognition.serving.leftovers import (
    make_regions_private,
    remove_orphaned_env_dirs,
    remove_orphaned_regions,
    remove_shm_regions,
)
from asl_recognition.serving.stubs import StubWatch

# Log errors every CPU-only run prints; they say nothing about the models.
HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "cuda", "CUDA")
STANDIN_BACKEND = REPO_ROOT / "triton" / "backends" / "onnxruntime" / "model.py"
LOG = logging.getLogger(__name__)
# The Python backend's shared memory per model instance: the first size, and each growth step.
# A region grows while a request needs more and never shrinks until the stub exits, so the front's
# body cap is what bounds it; small steps keep a region close to what requests really needed.
SHM_DEFAULT_BYTES = 4 * 1024 * 1024
SHM_GROWTH_BYTES = 4 * 1024 * 1024
STUB_CHECK_SECONDS = 1.0  # how often running() looks for dead stubs (a /proc scan)
DEAD_STUB_DRAIN_SECONDS = 2.0  # SIGTERM to SIGKILL, for a server stopped for a dead stub


def shm_backend_config(prefix: str) -> list[str]:
    """``--backend-config`` flags of the Python backend (the onnxruntime stand-in reads them)."""
    return [
        f"--backend-config=python,shm-region-prefix-name={prefix}",
        f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
        f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
    ]


class TritonServerError(ChildError):
    """The server could not start, or died; the message carries the end of its log."""


class TritonNotInstalled(TritonServerError):
    """This Python has no local ``tritonserver``: requirements-serving.txt is not installed, as
    on a ClearML agent, which installs requirements.txt only."""


def pytriton_root() -> Path:
    """``site-packages/pytriton/tritonserver`` of the wheel that ships the binary."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalled(
            "nvidia-pytriton is not installed (pip install -r requirements-serving.txt)"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonServerError(f"no tritonserver binary under {root}")
    return root


def local_server_missing() -> str | None:
    """Why no local ``tritonserver`` can start in this Python, or None when the wheel is here.

    A broken install (the wheel without its binary) is not "missing": it raises on start."""
    try:
        pytriton_root()
    except TritonNotInstalled as exc:
        return str(exc)
    except TritonServerError:
        return None
    return None


def server_environment() -> dict[str, str]:
    """LD_LIBRARY_PATH: the interpreter's LIBDIR first, else the stub links the wrong libpython;
    ASL_PACKAGE_ROOT: where the hand pipeline model finds ``asl_recognition``."""
    root = pytriton_root()
    libs = root.parents[1] / "nvidia_pytriton.libs"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    # The hand pipeline's model.py imports this package; the stub's isolated interpreter
    # ignores PYTHONPATH, so the model reads the package root from here (Docker installs it).
    env.setdefault("ASL_PACKAGE_ROOT", str(REPO_ROOT))
    env.pop(KEY_ENV, None)  # on tritonserver's command line only, not in every stub's environment
    return env


def assemble_backends(target: Path) -> Path:
    """Lay out ``<target>/python`` and ``<target>/onnxruntime`` as tritonserver expects them."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"no Python backend stub for Python {version} in {root}")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        # Copies, not symlinks: Triton refuses a backend library that resolves outside its dir.
        shutil.copy2(source, python_dir / source.name)
    ort_dir = target / "onnxruntime"
    ort_dir.mkdir(exist_ok=True)
    shutil.copyfile(STANDIN_BACKEND, ort_dir / "model.py")
    return target


class TritonServer:
    """A local tritonserver process; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        repo: str | Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        model_control_mode: str = "poll",
        poll_secs: int = 1,
        host: str = "127.0.0.1",
        log_path: str | Path | None = None,
        metrics_host: str | None = None,
        exit_on_error: bool = True,
        exit_timeout_secs: int = 10,
        extra_args: list[str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        if model_control_mode not in ("poll", "none", "explicit"):
            raise ValueError(
                f"model_control_mode must be poll|none|explicit: {model_control_mode}"
            )
        self.repo = Path(repo).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.model_control_mode = model_control_mode
        self.poll_secs = poll_secs
        self.host = host
        self.metrics_host = metrics_host or host
        self.exit_on_error = exit_on_error
        self.exit_timeout_secs = exit_timeout_secs
        self.extra_args = list(extra_args or [])
        # SIGTERM from the kernel when the thread that starts it ends (a kill -9 of `make demo`
        # had left tritonserver serving its ports and its metrics port for good)
        self.die_with_parent = die_with_parent
        self.log_path = Path(log_path) if log_path else None
        self._child: Child | None = None
        self._backend_dir: Path | None = None
        self.starts = 0
        self._stubs = StubWatch()
        self._stubs_checked = 0.0
        self.dead_stubs: list[str] = []  # models whose stub died, found by running()
        # Names this server's /dev/shm regions: this process, this object, nobody else.
        self.shm_prefix = f"asl_triton_{os.getpid()}_{secrets.token_hex(4)}_"
        taken = refused_flag(self.extra_args, OWN_FLAGS + (MODE_FLAG,))
        if taken:
            raise ValueError(f"extra_args: {taken.split('=', 1)[0]} is set by TritonServer")
        try:  # ASL_TRITON_ADMIN_KEY, or random: the admin protocols closed
            self._admin_key = admin_key()
        except AdminKeyError as exc:
            raise TritonServerError(str(exc)) from None

    @property
    def process(self) -> subprocess.Popen | None:
        """The server process from start() until stop(), even after it died."""
        return self._child.process if self._child is not None else None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        root = pytriton_root()
        assert self._backend_dir is not None
        cmd = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={self._backend_dir}",
            f"--cache-directory={root / 'caches'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.metrics_host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            # p50/p95/p99 latency summaries: the latency alert reads the p95 (else the mean)
            "--metrics-config=summary_latencies=true",
            f"--model-control-mode={self.model_control_mode}",
            f"--exit-on-error={'true' if self.exit_on_error else 'false'}",
            f"--exit-timeout-secs={self.exit_timeout_secs}",
            "--log-info=true",
        ]
        if self.model_control_mode == "poll":
            cmd.append(f"--repository-poll-secs={self.poll_secs}")
        cmd += shm_backend_config(self.shm_prefix) + self.extra_args
        return cmd + restriction_args(self.model_control_mode, self._admin_key)

    def start(self) -> "TritonServer":
        """Start tritonserver in its own process group, its output appended to ``log_path``."""
        if self.process is not None:
            return self
        if not self.repo.is_dir():
            raise TritonServerError(f"model repository {self.repo} does not exist")
        changed = repo_manifest.problems_unless_building(self.repo)
        if changed:
            raise TritonServerError(repo_manifest.describe(self.repo, changed))
        remove_orphaned_regions()
        remove_orphaned_env_dirs()
        raise_open_files_limit()  # inherited: idle clients must not starve its repository poll
        self._backend_dir = assemble_backends(
            Path(tempfile.mkdtemp(prefix="asl-triton-backends-"))
        )
        if self.log_path is None:
            self.log_path = workspace() / "logs" / f"tritonserver-{self.http_port}.log"
        self._child = Child(
            self.command(),
            # A restart appends, so the log keeps what the previous process said before it died.
            Output(self.log_path, append=self.starts > 0),
            name="tritonserver",
            ready_url=f"http://{self.http_url}/v2/health/ready",
            env=server_environment(),
            grace=self.exit_timeout_secs + 15,
            secrets_in_command=[self._admin_key],
            death_signal=signal.SIGTERM if self.die_with_parent else None,
        )
        self.starts += 1
        self._stubs, self.dead_stubs = StubWatch(), []
        try:
            self._child.start()
        except ChildError as exc:  # the HTTP port already answers
            self.stop()
            raise TritonServerError(str(exc)) from exc
        except BaseException:  # no binary, no log folder: nothing may be left behind
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 8) -> str:
        """The error lines of the log (model load failures), then its last lines."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        errors = [
            line
            for line in text
            if (line.startswith("E") and not any(h in line for h in HARMLESS))
            or "UNAVAILABLE" in line
        ]
        return "\n".join(errors[-15:] + ["..."] + text[-lines:])

    def is_ready(self) -> bool:
        return http_ready(f"http://{self.http_url}/v2/health/ready")

    def running(self) -> bool:
        """The process lives and none of its Python-backend stubs died (:mod:`.stubs`): Triton
        keeps a model whose stub was killed "ready" while every request to it fails."""
        process = self.process
        if self._child is None or process is None or not self._child.running():
            return False
        if time.monotonic() - self._stubs_checked < STUB_CHECK_SECONDS:
            return True
        self._stubs_checked = time.monotonic()
        make_regions_private(self.shm_prefix)  # a model (re)loaded in poll mode made new ones
        self.dead_stubs = self._stubs.dead_models(process.pid)
        if self.dead_stubs:
            LOG.error(
                "the Python backend stub of %s died, and Triton neither restarts it nor stops "
                "calling it ready (every request to it gets 500): tritonserver must restart",
                ", ".join(self.dead_stubs),
            )
        return not self.dead_stubs

    def wait_ready(
        self, timeout: float = 60.0, should_stop: Callable[[], bool] = never
    ) -> "TritonServer":
        """Block until /v2/health/ready answers 200; raise with the log tail if it dies."""
        if self._child is None or self.process is None:
            raise TritonServerError("server not started")
        try:
            self._child.wait_ready(timeout, should_stop)
        except ChildError as exc:
            if exc.code is not None:
                what = f"exited with {describe_exit(exc.code)}"
            elif "stopped before it was ready" in str(exc):
                what = "stopped before it was ready"
            else:
                what = f"not ready after {timeout:.0f} s"
            raise TritonServerError(
                f"tritonserver {what}; log {self.log_path}:\n{self.log_tail()}", exc.code
            ) from exc
        make_regions_private(self.shm_prefix)  # before any client's photo is written there
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (Triton drains in-flight requests), SIGKILL only if it hangs.

        Triton also waits up to ``exit_timeout_secs`` for idle keep-alive client connections.
        Returns the exit code, or None when no server was started since the last stop.
        """
        code = None
        if timeout is None and self.dead_stubs:
            # Triton would wait its whole exit timeout for the model of the dead stub, which
            # never unloads: a short drain for the other models' requests, then SIGKILL.
            timeout = DEAD_STUB_DRAIN_SECONDS
        if self._child is not None:
            code = self._child.stop(timeout)
            self._child = None
            # A clean exit removes its regions; a killed server (and its stubs) cannot.
            removed = remove_shm_regions(self.shm_prefix)
            if removed:
                LOG.warning(
                    "removed %d shared-memory region(s) the dead server left: %s",
                    len(removed), ", ".join(removed),
                )  # fmt: skip
        if self._backend_dir is not None:
            shutil.rmtree(self._backend_dir, ignore_errors=True)
            self._backend_dir = None
        return code

    @classmethod
    def on_free_ports(cls, repo: str | Path, **kwargs: object) -> "TritonServer":
        """A server (not started) on three free loopback ports: tests, benches, measurements."""
        names = ("http_port", "grpc_port", "metrics_port")
        ports = dict(zip(names, free_ports(len(names))))
        return cls(repo, **ports, **kwargs)  # type: ignore[arg-type]

    def start_ready(self, timeout: float = 60.0) -> "TritonServer":
        """Start and wait until ready; a server that never gets ready is stopped, not leaked."""
        self.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> "TritonServer":
        return self.start_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
