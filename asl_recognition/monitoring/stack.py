"""Start Prometheus + Alertmanager on loopback against Triton's metrics (``make monitor``).

Configs are rendered into a run directory from thresholds
(defaults < file < ASL_ALERT_* env < --set),
the drift baseline of the production model, and receiver settings from the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asl_recognition.processes import Child, Output, sleep_unless, stop_on_signals

from .alert_rules import write_rules
from .alertmanager_config import SECRET_VARS, enabled_receivers, write_alertmanager_config
from .baseline import Baseline, load_baseline
from .prometheus_config import render_prometheus_config, write_prometheus_config
from .settings import AlertThresholds, add_threshold_options, thresholds_from_cli
from .tools import require_tool, run_tool
from .urls import mask_webhook, url_secrets


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


def resolve_baseline(spec: str | None) -> Baseline | None:
    """``auto`` (registry production model), ``none``, or a path to baseline.json."""
    if spec in (None, "", "none"):
        return None
    if spec == "auto":
        return production_baseline()
    return load_baseline(spec)


def _redact(line: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in line:
            line = line.replace(secret, "<redacted>")
    return line


@dataclass
class MonitoringStack:
    """Prometheus + Alertmanager child processes with rendered configs; a context manager."""

    run_dir: Path
    triton_metrics: str = "127.0.0.1:8002"
    launcher_metrics: str | None = None  # the launcher's front (make serve: 127.0.0.1:8000)
    host: str = "127.0.0.1"
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    baseline: Baseline | None = None
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    webhook_url: str | None = field(default=None, repr=False)  # its path is often the secret
    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None
    resolve_timeout: str | None = None
    env: dict[str, str] | None = field(default=None, repr=False)
    _children: dict[str, Child] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).resolve()

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.host}:{self.alertmanager_port}"

    def render(self) -> dict[str, Path]:
        """Write rules, prometheus.yml and alertmanager.yml (mode 600) and check them."""
        rules = write_rules(self.run_dir / "rules", self.thresholds, self.baseline)
        prom_cfg = render_prometheus_config(
            triton_targets=[self.triton_metrics],
            alertmanager_targets=[f"{self.host}:{self.alertmanager_port}"],
            rule_files=[str(p) for p in rules],
            scrape_interval=self.scrape_interval,
            evaluation_interval=self.evaluation_interval,
            self_target=f"{self.host}:{self.prometheus_port}",
            triton_job=self.thresholds.triton_job,
            launcher_targets=[self.launcher_metrics] if self.launcher_metrics else None,
        )
        prom = write_prometheus_config(self.run_dir / "prometheus.yml", prom_cfg)
        am = write_alertmanager_config(
            self.run_dir / "alertmanager.yml",
            env=self.env if self.env is not None else os.environ,
            webhook_url=self.webhook_url,
            group_wait=self.group_wait,
            group_interval=self.group_interval,
            repeat_interval=self.repeat_interval,
            resolve_timeout=self.resolve_timeout,
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
        for url in (self.webhook_url, env.get("ALERT_WEBHOOK_URL"), env.get("SLACK_WEBHOOK_URL")):
            values.update(url_secrets(url))
        return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def _spawn(self, name: str, cmd: list[str], ready_url: str, timeout: float) -> None:
        """Start a child, wait until ``ready_url`` answers 2xx; output to logs/NAME.log (600).

        It fails fast when the port already answers or the child exits, with one line naming
        the command and its log's end. Alertmanager 0.25 logs the failing URL of a Telegram or
        webhook delivery, token included, so every line passes through :func:`_redact` before
        it reaches the disk. A stop waits up to ``timeout`` before SIGKILL.
        """
        secrets = self._secrets()
        log = Output(
            self.run_dir / "logs" / f"{name}.log",
            append=True,
            redact=lambda line: _redact(line, secrets),
        )
        child = Child(cmd, log, name=name, ready_url=ready_url, grace=timeout)
        self._children[name] = child.start()
        child.wait_ready(timeout)

    def start(self, timeout: float = 30.0) -> "MonitoringStack":
        """Render and check the configs, start both servers and wait until both are ready."""
        paths = self.render()
        try:
            self._spawn(
                "alertmanager",
                [
                    require_tool("alertmanager"),
                    f"--config.file={paths['alertmanager']}",
                    f"--storage.path={self.run_dir / 'alertmanager-data'}",
                    f"--web.listen-address={self.host}:{self.alertmanager_port}",
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
                    f"--web.listen-address={self.host}:{self.prometheus_port}",
                    "--web.enable-lifecycle",
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

    def running(self) -> bool:
        return bool(self._children) and all(c.running() for c in self._children.values())

    def __enter__(self) -> "MonitoringStack":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m asl_recognition.monitoring.stack",
        description="Run Prometheus and Alertmanager on loopback against Triton's metrics. "
        "Receivers come from SLACK_WEBHOOK_URL, TELEGRAM_BOT_TOKEN/TELEGRAM_CHAT_ID, "
        "SMTP_SMARTHOST/SMTP_FROM/ALERT_EMAIL_TO[/SMTP_USERNAME/SMTP_PASSWORD], "
        "ALERT_WEBHOOK_URL; "
        "thresholds from --thresholds FILE, ASL_ALERT_<NAME> env vars and --set NAME=VALUE.",
    )
    p.add_argument("--triton-metrics", default="127.0.0.1:8002", help="Triton metrics HOST:PORT")
    p.add_argument(
        "--launcher-metrics",
        default="127.0.0.1:8000",
        help="the launcher's front HOST:PORT (/metrics: gave-up flag); empty: not scraped",
    )
    p.add_argument(
        "--run-dir",
        default=None,
        help="where configs, data and logs go " "(default <workspace>/monitoring)",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address for both servers")
    p.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus web/API port")
    p.add_argument("--alertmanager-port", type=int, default=9093, help="Alertmanager port")
    p.add_argument("--scrape-interval", default="15s", help="how often Triton is scraped")
    p.add_argument("--evaluation-interval", default="15s", help="how often rules run")
    add_threshold_options(p)
    p.add_argument(
        "--baseline",
        default="auto",
        help="drift baseline: auto (production model in the registry), none, or a path",
    )
    p.add_argument("--webhook-url", default=None, help="extra generic webhook receiver")
    p.add_argument("--group-wait", default=None, help="Alertmanager group_wait (30s)")
    p.add_argument("--group-interval", default=None, help="Alertmanager group_interval (5m)")
    p.add_argument("--repeat-interval", default=None, help="Alertmanager repeat_interval (4h)")
    p.add_argument(
        "--render-only", action="store_true", help="render and check configs, then exit"
    )
    p.add_argument(
        "--print-thresholds", action="store_true", help="print the effective thresholds"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from asl_recognition.paths import workspace

    thresholds = thresholds_from_cli(parser, args)
    if args.print_thresholds:
        for key, value in thresholds.as_dict().items():
            print(f"{key}={value}")
    baseline = resolve_baseline(args.baseline)
    run_dir = Path(args.run_dir) if args.run_dir else workspace() / "monitoring"
    stack = MonitoringStack(
        run_dir=run_dir,
        triton_metrics=args.triton_metrics,
        launcher_metrics=args.launcher_metrics or None,
        host=args.host,
        prometheus_port=args.prometheus_port,
        alertmanager_port=args.alertmanager_port,
        thresholds=thresholds,
        baseline=baseline,
        scrape_interval=args.scrape_interval,
        evaluation_interval=args.evaluation_interval,
        webhook_url=args.webhook_url,
        group_wait=args.group_wait,
        group_interval=args.group_interval,
        repeat_interval=args.repeat_interval,
    )
    receivers = enabled_receivers()
    if args.webhook_url:  # where alerts go, without the path or token that authorises them
        receivers = [r for r in receivers if r != "webhook"]
        receivers.append(f"webhook {mask_webhook(args.webhook_url)}")
    base_msg = (
        f"baseline {baseline.source}" if baseline else "no drift baseline (drift alert idle)"
    )
    if args.render_only:
        paths = stack.render()
        print(f"[monitor] rendered {', '.join(str(p) for p in paths.values())}; {base_msg}")
        return 0
    stopping = stop_on_signals()
    stack.start()
    print(
        f"[monitor] Prometheus {stack.prometheus_url}  Alertmanager {stack.alertmanager_url}  "
        f"scraping Triton {args.triton_metrics}; receivers: "
        f"{', '.join(sorted(set(receivers))) or 'none (blackhole)'}; {base_msg}; Ctrl-C stops",
        flush=True,
    )
    try:
        while not sleep_unless(0.5, stopping):
            if not stack.running():
                print("[monitor] a child exited; see logs in " + str(run_dir / "logs"))
                return 1
    finally:
        stack.stop()
        print("[monitor] stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
