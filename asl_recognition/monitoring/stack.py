"""Start Prometheus + Alertmanager on loopback against Triton's metrics (``make monitor``).

Configs are rendered into a run directory from thresholds
(defaults < file < ASL_ALERT_* env < --set),
the drift baseline of the production model, and receiver settings from the environment.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asl_recognition.child_output import Output
from asl_recognition.locks import FileLock, holder
from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import option
from asl_recognition.processes import Child, redacted, sleep_unless
from asl_recognition.stop_signals import stop_on_signals

from .alert_rules import write_rules
from .alertmanager_config import SECRET_VARS, enabled_receivers, write_alertmanager_config
from .baseline import Baseline, load_baseline
from .prometheus_config import render_prometheus_config, write_prometheus_config
from .settings import AlertThresholds, ThresholdOptions, parse_cli
from .tools import require_tool, run_tool
from .urls import mask_webhook, url_secrets

PROG = "python -m asl_recognition.monitoring.stack"


def production_baseline() -> Baseline | None:
    """The production model's drift baseline from the registry, or None if there is none."""
    try:
        from asl_recognition.registry import get_registry  # owned by the training stage
    except ImportError:
        return None
    try:
        record = get_registry().production()
    except Exception as exc:  # noqa: BLE001 - a broken registry must not stop monitoring
        print(f"[monitor] registry unavailable ({type(exc).__name__}); no drift baseline")
        return None
    path = getattr(record, "baseline_path", None) if record else None
    if not path or not Path(path).is_file():
        return None
    return load_baseline(path)


def baseline_for(spec: str | None) -> Baseline | None:
    """``auto`` (registry production model), ``none``, or a path to baseline.json."""
    if spec in (None, "", "none"):
        return None
    if spec == "auto":
        return production_baseline()
    return load_baseline(spec)


DESCRIPTION = (
    "Run Prometheus and Alertmanager on loopback against Triton's metrics. "
    "Receivers come from SLACK_WEBHOOK_URL, TELEGRAM_BOT_TOKEN/TELEGRAM_CHAT_ID, "
    "SMTP_SMARTHOST/SMTP_FROM/ALERT_EMAIL_TO[/SMTP_USERNAME/SMTP_PASSWORD], ALERT_WEBHOOK_URL; "
    "thresholds from --thresholds FILE, ASL_ALERT_<NAME> env vars and --set NAME=VALUE."
)


@dataclass(frozen=True)
class StackOptions(ThresholdOptions):
    """The monitoring stack's command line (``make monitor``), declared once."""

    triton_metrics: str = option("127.0.0.1:8002", "Triton metrics HOST:PORT")
    launcher_metrics: str = option(
        "127.0.0.1:8000",
        "the launcher's front HOST:PORT (/metrics: gave-up flag); empty: not scraped",
    )
    run_dir: str | None = option(
        None, "where configs, data and logs go (default <workspace>/monitoring)"
    )
    host: str = option("127.0.0.1", "listen address for both servers")
    prometheus_port: int = option(9090, "Prometheus web/API port", low=0, high=65535)
    alertmanager_port: int = option(9093, "Alertmanager port", low=0, high=65535)
    scrape_interval: str = option("15s", "how often Triton is scraped")
    evaluation_interval: str = option("15s", "how often rules run")
    baseline: str = option(
        "auto", "drift baseline: auto (production model in the registry), none, or a path"
    )
    webhook_url: str | None = option(None, "extra generic webhook receiver")
    group_wait: str | None = option(None, "Alertmanager group_wait (30s)")
    group_interval: str | None = option(None, "Alertmanager group_interval (5m)")
    repeat_interval: str | None = option(None, "Alertmanager repeat_interval (4h)")
    render_only: bool = option(False, "render and check configs, then exit")
    print_thresholds: bool = option(False, "print the effective thresholds")


@dataclass
class MonitoringStack:
    """Prometheus + Alertmanager child processes with rendered configs; a context manager."""

    options: StackOptions = field(default_factory=StackOptions, repr=False)  # webhook: secret
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    baseline: Baseline | None = None
    env: dict[str, str] | None = field(default=None, repr=False)
    run_dir: Path = field(init=False)
    _children: dict[str, Child] = field(default_factory=dict, repr=False)
    _lock: FileLock | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from asl_recognition.paths import workspace

        chosen = self.options.run_dir
        self.run_dir = (Path(chosen) if chosen else workspace() / "monitoring").resolve()

    @property
    def host(self) -> str:
        return self.options.host

    def address(self, port: int) -> str:
        """``HOST:PORT``, an IPv6 host in brackets (``::1:9090`` had been a traceback); one
        given in brackets (``[::1]``, which had always worked) is not bracketed twice."""
        host = self.host.removeprefix("[").removesuffix("]")
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.address(self.options.prometheus_port)}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.address(self.options.alertmanager_port)}"

    def render(self) -> dict[str, Path]:
        """Write rules, prometheus.yml and alertmanager.yml (mode 600) and check them."""
        rules = write_rules(self.run_dir / "rules", self.thresholds, self.baseline)
        prom_cfg = render_prometheus_config(
            triton_targets=[self.options.triton_metrics],
            alertmanager_targets=[self.address(self.options.alertmanager_port)],
            rule_files=[str(p) for p in rules],
            scrape_interval=self.options.scrape_interval,
            evaluation_interval=self.options.evaluation_interval,
            self_target=self.address(self.options.prometheus_port),
            triton_job=self.thresholds.triton_job,
            launcher_targets=[launcher] if (launcher := self.options.launcher_metrics) else None,
        )
        prom = write_prometheus_config(self.run_dir / "prometheus.yml", prom_cfg)
        am = write_alertmanager_config(
            self.run_dir / "alertmanager.yml",
            env=self.env if self.env is not None else os.environ,
            webhook_url=self.options.webhook_url,
            group_wait=self.options.group_wait,
            group_interval=self.options.group_interval,
            repeat_interval=self.options.repeat_interval,
        )
        for tool, args in (
            ("promtool", ("check", "config", prom)),
            ("amtool", ("check-config", am)),
        ):
            res = run_tool(tool, *args)
            if res.returncode != 0:
                # amtool echoes nothing secret on failure: it reports field names and line numbers
                raise RuntimeError(
                    f"{tool} rejected the rendered config:\n{res.stdout}{res.stderr}"
                )
        return {"prometheus": prom, "alertmanager": am, "rules": rules[0], "baseline": rules[1]}

    def _secrets(self) -> list[str]:
        """Values no log line may show: secret env vars and the webhook URLs' secret parts."""
        env = self.env if self.env is not None else os.environ
        values = {(env.get(k) or "").strip() for k in SECRET_VARS}
        values |= {urllib.parse.quote(v, safe="") for v in values}
        for url in (
            self.options.webhook_url,
            env.get("ALERT_WEBHOOK_URL"),
            env.get("SLACK_WEBHOOK_URL"),
        ):
            values.update(url_secrets(url))
        return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def _spawn(self, name: str, cmd: list[str], ready_url: str, timeout: float) -> None:
        """Start a child, wait until ``ready_url`` answers 2xx; output to logs/NAME.log (600).

        It fails fast when the port already answers or the child exits, with one line naming
        the command and its log's end. Alertmanager 0.25 logs the failing URL of a Telegram or
        webhook delivery, token included, so every line is :func:`.processes.redacted` before it
        reaches the disk. A stop waits up to ``timeout`` before SIGKILL.
        """
        secrets = self._secrets()
        log = Output(
            self.run_dir / "logs" / f"{name}.log",
            append=True,
            redact=lambda line: redacted(line, secrets, "<redacted>"),
        )
        child = Child(
            cmd, log, name=name, ready_url=ready_url, grace=timeout,
            death_signal=signal.SIGTERM,  # a kill -9 of this process takes both servers along
            pass_fds=(self._lock.fileno(),) if self._lock else (),  # run_dir busy while alive
        )  # fmt: skip
        self._children[name] = child.start()
        child.wait_ready(timeout)

    def _lock_run_dir(self) -> None:
        """One stack per run directory: Debian's Prometheus takes no TSDB lock, and two of them
        on one data directory (a second ``make monitor`` on other ports) corrupt its chunks."""
        lock = FileLock(self.run_dir / "stack.lock")
        if not lock.acquire():
            raise RuntimeError(
                f"another monitoring stack (pid {holder(lock.path)}) uses {self.run_dir}: "
                "stop it, or give this one another --run-dir"
            )
        self._lock = lock

    def start(self, timeout: float = 30.0) -> "MonitoringStack":
        """Render and check the configs, start both servers and wait until both are ready.
        Start it from the thread that stops it: the servers die with that thread."""
        self._lock_run_dir()
        try:
            paths = self.render()
            self._spawn(
                "alertmanager",
                [
                    require_tool("alertmanager"),
                    f"--config.file={paths['alertmanager']}",
                    f"--storage.path={self.run_dir / 'alertmanager-data'}",
                    f"--web.listen-address={self.address(self.options.alertmanager_port)}",
                    "--cluster.listen-address=",  # no gossip port: single instance on loopback
                    "--log.level=warn",
                ],
                f"{self.alertmanager_url}/-/ready",
                timeout,
            )
            self._spawn(
                "prometheus",
                [
                    require_tool("prometheus"),
                    f"--config.file={paths['prometheus']}",
                    f"--storage.tsdb.path={self.run_dir / 'prometheus-data'}",
                    f"--web.listen-address={self.address(self.options.prometheus_port)}",
                    "--storage.tsdb.retention.time=15d",
                    "--log.level=warn",
                ],
                f"{self.prometheus_url}/-/ready",
                timeout,
            )
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM each child's process group (Prometheus flushes its head block); SIGKILL what
        outlives the start timeout. A child that already died with an error is not re-reported.
        """
        for child in reversed(list(self._children.values())):
            child.stop()
        self._children.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def running(self) -> bool:
        return bool(self._children) and all(c.running() for c in self._children.values())

    def __enter__(self) -> "MonitoringStack":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`StackOptions` (also for the README table)."""
    parser = build_options_parser(StackOptions, DESCRIPTION)
    parser.prog = PROG
    return parser


def receivers_line(options: StackOptions) -> str:
    """Where alerts go, without the path or token that authorises them."""
    receivers = enabled_receivers()
    if options.webhook_url:
        receivers = [r for r in receivers if r != "webhook"]
        receivers.append(f"webhook {mask_webhook(options.webhook_url)}")
    return ", ".join(sorted(set(receivers))) or "none (blackhole)"


def main(argv: list[str] | None = None) -> int:
    options, thresholds = parse_cli(StackOptions, argv, PROG, DESCRIPTION)
    if options.print_thresholds:
        for key, value in thresholds.as_dict().items():
            print(f"{key}={value}")
    baseline = baseline_for(options.baseline)
    stack = MonitoringStack(options, thresholds, baseline)
    base_msg = (
        f"baseline {baseline.source}" if baseline else "no drift baseline (drift alert idle)"
    )
    stopping = None if options.render_only else stop_on_signals()
    try:  # a busy port or run directory, a config promtool refuses: one line, no trace
        if options.render_only:
            paths = stack.render()
            print(f"[monitor] rendered {', '.join(str(p) for p in paths.values())}; {base_msg}")
            return 0
        stack.start()
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"[monitor] error: {exc}", file=sys.stderr)
        return 1
    print(
        f"[monitor] Prometheus {stack.prometheus_url}  Alertmanager {stack.alertmanager_url}  "
        f"scraping Triton {options.triton_metrics}; receivers: {receivers_line(options)}; "
        f"{base_msg}; Ctrl-C stops",
        flush=True,
    )
    try:
        while not sleep_unless(0.5, stopping):
            if not stack.running():
                print("[monitor] a child exited; see logs in " + str(stack.run_dir / "logs"))
                return 1
    finally:
        stack.stop()
        print("[monitor] stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
