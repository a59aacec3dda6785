"""Real Prometheus + Alertmanager on loopback: start, alert delivery to a webhook, clean stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from asl_testkit.cli import cli_process
from asl_testkit.servers import ipv6_loopback

from asl_recognition.monitoring.baseline import Baseline
from asl_recognition.monitoring.settings import load_thresholds
from asl_recognition.monitoring.stack import MonitoringStack, StackOptions
from asl_recognition.monitoring.tools import find_tool
from asl_recognition.monitoring.webhook import WebhookReceiver
from asl_recognition.netutil import free_port

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not all(find_tool(t) for t in ("prometheus", "alertmanager", "promtool", "amtool")),
        reason="prometheus/alertmanager missing: run scripts/install_system_deps.sh",
    ),
]


def test_triton_down_alert_reaches_webhook_and_secrets_stay_out_of_logs(tmp_path: Path) -> None:
    """Nothing listens on the Triton port: up==0 must page through Alertmanager to the webhook."""
    secret_token = "sekret-slack-token-4242"
    env = {
        # Slack points at a closed loopback port: delivery fails and Alertmanager logs the failure
        "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/services/{secret_token}",
        "TELEGRAM_BOT_TOKEN": "999:sekret-telegram",
        "TELEGRAM_CHAT_ID": "1",
        "TELEGRAM_API_URL": f"http://127.0.0.1:{free_port()}",
    }
    thresholds = load_thresholds(overrides={"not_ready_for": "0s"}, env={})
    with WebhookReceiver() as hook:
        options = StackOptions(
            run_dir=str(tmp_path / "run"),
            triton_metrics=f"127.0.0.1:{free_port()}",
            prometheus_port=free_port(),
            alertmanager_port=free_port(),
            scrape_interval="1s",
            evaluation_interval="1s",
            webhook_url=hook.url,
            group_wait="1s",
            group_interval="1s",
            repeat_interval="1m",
        )
        # A baseline gives asl_baseline rules: Prometheus 2.44 and newer (Ubuntu 24.04's 2.45,
        # Debian 13's 2.53) leave a group with no rules out of /api/v1/rules.
        baseline = Baseline({"A": 0.5, "B": 0.5}, 0.9, "test")
        stack = MonitoringStack(options, thresholds, baseline, env=env)
        with stack:
            assert stack.running()
            fired = hook.wait_for(lambda ev: ("AslTritonDown", "firing") in ev, timeout=40)
            assert fired, f"no AslTritonDown at the webhook; got {hook.events()}"
            with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/rules", timeout=5) as r:
                groups = json.load(r)["data"]["groups"]
            assert {g["name"] for g in groups} >= {"asl_alerts", "asl_recording", "asl_baseline"}
            # no lifecycle API: a bodyless POST (a browser's "simple request" from any page)
            # had stopped Prometheus, and nothing alerts when Prometheus is gone
            quit_ = urllib.request.Request(f"{stack.prometheus_url}/-/quit", method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(quit_, timeout=5)
            assert refused.value.code == 403 and stack.running()
            time.sleep(2)  # let Alertmanager try (and fail) the Slack/Telegram deliveries
        procs = list(stack._children.values())
        assert not procs and not stack.running()
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("*.log"))
    assert "AslTritonDown" in logs or "notify" in logs.lower(), "expected delivery errors logged"
    for secret in (secret_token, "sekret-telegram"):
        assert secret not in logs
    # Alertmanager 0.25 writes the Telegram URL (bot token inside) when delivery fails: masked
    assert "<redacted>" in logs
    cfg = tmp_path / "run" / "alertmanager.yml"
    assert secret_token in cfg.read_text() and (cfg.stat().st_mode & 0o077) == 0


def test_stack_cli_renders_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Thresholds from env and --set, receivers named, secrets (webhook path too) never shown."""
    prom, am, hook_port = free_port(), free_port(), free_port()
    args = [
        "--run-dir",
        tmp_path / "run",
        "--triton-metrics",
        f"127.0.0.1:{free_port()}",
        "--prometheus-port",
        prom,
        "--alertmanager-port",
        am,
        "--baseline",
        "none",
        "--set",
        "latency_p95_ms=123",
        "--print-thresholds",
        # Triton is down: AslTritonDown fires at once and the webhook delivery fails and is logged
        "--set",
        "not_ready_for=0s",
        "--scrape-interval",
        "1s",
        "--evaluation-interval",
        "1s",
        "--group-wait",
        "1s",
        "--webhook-url",
        f"http://hookuser:hookpw-x@127.0.0.1:{hook_port}/hooks/sekret-hook-path?token=sekret-q",
    ]
    env = {
        "ASL_WORKSPACE": str(tmp_path / "ws"),
        "SMTP_PASSWORD": "sekret-pw",
        "SMTP_SMARTHOST": "127.0.0.1:25",
        "SMTP_FROM": "a@b.c",
        "ALERT_EMAIL_TO": "d@e.f",
        "SMTP_USERNAME": "u",
        "ASL_ALERT_ERROR_RATIO": "0.25",
    }
    with cli_process(
        "asl_recognition.monitoring.stack", *args, env=env, stderr=subprocess.STDOUT
    ) as proc:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        out = "".join(lines)
        assert "latency_p95_ms=123.0" in out and "error_ratio=0.25" in out, out
        assert "receivers: email" in out, out
        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/-/ready", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{am}/-/ready", timeout=5) as r:
            assert r.status == 200
        rules = (tmp_path / "run" / "rules" / "asl_alerts.yml").read_text()
        assert "> 123" in rules and "> 0.25" in rules
        assert f"webhook http://127.0.0.1:{hook_port}/…" in out, out
        am_log = tmp_path / "run" / "logs" / "alertmanager.log"
        deadline = time.monotonic() + 40
        while "integration=webhook" not in am_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "integration=webhook" in am_log.read_text(), "no webhook delivery attempt logged"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        out += rest
    assert proc.returncode == 0, out
    assert "[monitor] stopped" in out
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("*.log"))
    for secret in ("sekret-pw", "hookpw-x", "sekret-hook-path", "sekret-q"):
        assert secret not in out and secret not in logs, secret
    for port in (prom, am):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after stop"


def test_stack_refuses_a_port_already_taken_and_leaves_nothing_running(tmp_path: Path) -> None:
    """Another server on the Alertmanager port: a clear error, not a half-started stack."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = StackOptions(
            run_dir=str(tmp_path / "run"),
            triton_metrics=f"127.0.0.1:{free_port()}",
            prometheus_port=free_port(),
            alertmanager_port=taken.getsockname()[1],
        )
        stack = MonitoringStack(options, env={})
        with pytest.raises(RuntimeError, match="already answers; pick another port"):
            stack.start(timeout=20)
    assert not stack.running() and not stack._children
    with socket.socket() as s:
        prometheus = ("127.0.0.1", stack.options.prometheus_port)
        assert s.connect_ex(prometheus) != 0, "prometheus was started"


@pytest.mark.skipif(find_tool("alertmanager") is None, reason="alertmanager missing")
def test_the_launcher_giving_up_is_not_hidden_by_the_server_being_down(tmp_path: Path) -> None:
    """The launcher stops tritonserver when it gives up, so ``AslTritonDown`` fires a minute
    later; it inhibited every other alert, ``AslServerGaveUp`` too, the one to act on. Real
    Alertmanager on the generated config: the gave-up alert stays active, the down one not."""
    from asl_recognition.monitoring.alertmanager_config import write_alertmanager_config

    config = write_alertmanager_config(
        tmp_path / "alertmanager.yml", env={}, webhook_url="http://127.0.0.1:9/hook"
    )
    port = free_port()
    manager = subprocess.Popen(
        [find_tool("alertmanager"), f"--config.file={config}", f"--storage.path={tmp_path}"]
        + [f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v2/alerts"
    alerts = [
        {"labels": {"alertname": name, "model": "asl", "severity": "critical"}}
        for name in ("AslServerGaveUp", "AslTritonDown")
    ]
    expected = {"AslServerGaveUp": "active", "AslTritonDown": "suppressed"}
    try:
        states: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and states != expected:
            try:
                post = urllib.request.Request(
                    api, json.dumps(alerts).encode(), {"Content-Type": "application/json"}
                )
                urllib.request.urlopen(post, timeout=5).close()
                with urllib.request.urlopen(api, timeout=5) as answer:
                    found = json.load(answer)
                states = {a["labels"]["alertname"]: a["status"]["state"] for a in found}
            except OSError:
                pass
            time.sleep(0.3)
        assert states == expected, states
    finally:
        manager.terminate()
        manager.wait(timeout=30)


def _stack_args(run_dir: Path, prom: int, am: int) -> list:
    """``make monitor``'s command line on free ports, Triton absent, no baseline."""
    return ["--run-dir", run_dir, "--triton-metrics", f"127.0.0.1:{free_port()}",
            "--launcher-metrics", "", "--prometheus-port", prom, "--alertmanager-port", am,
            "--baseline", "none"]  # fmt: skip


def _started(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The CLI's output up to its ready line (or its end)."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline and not any("Ctrl-C stops" in x for x in lines):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    return "".join(lines)


def test_a_killed_stack_takes_its_servers_along_and_the_next_one_starts(tmp_path: Path) -> None:
    """``kill -9`` of ``make monitor`` had left Prometheus and Alertmanager running, holding the
    ports (the next ``make monitor`` failed) and the data directory."""
    from asl_testkit.cli import left_after, processes_of

    run_dir, prom, am = tmp_path / "run", free_port(), free_port()
    env = {"ASL_WORKSPACE": str(tmp_path / "ws")}
    with cli_process(
        "asl_recognition.monitoring.stack", *_stack_args(run_dir, prom, am), env=env,
        stderr=subprocess.STDOUT,
    ) as proc:  # fmt: skip
        assert "Ctrl-C stops" in _started(proc)
        assert len(processes_of(run_dir)) == 3  # the CLI and its two servers
        proc.kill()
        proc.wait()
    assert left_after(run_dir, timeout=20) == [], "servers outlived a killed stack"
    with cli_process(
        "asl_recognition.monitoring.stack", *_stack_args(run_dir, prom, am), env=env,
        stderr=subprocess.STDOUT,
    ) as again:  # fmt: skip
        out = _started(again)
        assert "Ctrl-C stops" in out, out
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=30) == 0


def test_a_second_stack_on_the_same_run_dir_is_refused(tmp_path: Path) -> None:
    """Two stacks on other ports but one run directory had run two Prometheus on one TSDB
    (Debian's build takes no lock), whose next start lost chunks ("out of sequence")."""

    def options(prom: int, am: int) -> StackOptions:
        return StackOptions(
            run_dir=str(tmp_path / "run"), triton_metrics=f"127.0.0.1:{free_port()}",
            launcher_metrics="", prometheus_port=prom, alertmanager_port=am,
        )  # fmt: skip

    with MonitoringStack(options(free_port(), free_port()), env={}) as first:
        second = MonitoringStack(options(free_port(), free_port()), env={})
        with pytest.raises(RuntimeError, match="another monitoring stack .* uses"):
            second.start(timeout=20)
        assert first.running() and not second._children
    with MonitoringStack(options(free_port(), free_port()), env={}) as third:
        assert third.running()  # the run directory is free again once the first stopped


@pytest.mark.parametrize(
    "args, message",
    [
        (["--render-only", "--triton-metrics", "http://127.0.0.1:8002"], "promtool rejected"),
        (["--render-only", "--scrape-interval", "1m30s"], "rendered"),
        (["--scrape-interval", "15x"], "is not a Prometheus duration"),
        pytest.param(
            ["--host", "::1"],
            "Ctrl-C stops",
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
        pytest.param(
            ["--host", "[::1]"],
            "Ctrl-C stops",
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
    ],
)
def test_the_stack_cli_takes_any_duration_and_host_and_refuses_in_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """A target with a scheme, ``--scrape-interval 1m30s`` (a Prometheus duration) and an IPv6
    ``--host`` had each ended ``make monitor`` in a traceback."""
    ports = ["--prometheus-port", str(free_port()), "--alertmanager-port", str(free_port())]
    base = ["--run-dir", str(tmp_path), "--baseline", "none", "--launcher-metrics", "", *ports]
    with cli_process(
        "asl_recognition.monitoring.stack", *base, *args, stderr=subprocess.STDOUT
    ) as proc:
        out = _started(proc) if message == "Ctrl-C stops" else proc.communicate(timeout=60)[0]
        if message == "Ctrl-C stops":
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    assert "Traceback" not in out and message in out, out
