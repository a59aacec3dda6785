"""Alert rules, Prometheus/Alertmanager configs and thresholds, checked by promtool/amtool."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from asl_testkit.cli import run_script

from asl_recognition.classes import CLASSES
from asl_recognition.monitoring.alert_rules import (
    ALERT_NAMES,
    baseline_rules,
    dump_yaml,
    write_rules,
)
from asl_recognition.monitoring.alertmanager_config import (
    enabled_receivers,
    render_alertmanager_config,
    write_alertmanager_config,
)
from asl_recognition.monitoring.baseline import load_baseline, parse_baseline, uniform_baseline
from asl_recognition.monitoring.prometheus_config import (
    render_prometheus_config,
    write_prometheus_config,
)
from asl_recognition.monitoring.settings import AlertThresholds, env_name, load_thresholds
from asl_recognition.monitoring.tools import find_tool, run_tool
from asl_recognition.paths import REPO_ROOT

MON = REPO_ROOT / "triton" / "monitoring"
needs_promtool = pytest.mark.skipif(
    find_tool("promtool") is None, reason="promtool missing: run scripts/install_system_deps.sh"
)
needs_amtool = pytest.mark.skipif(
    find_tool("amtool") is None, reason="amtool missing: run scripts/install_system_deps.sh"
)

SECRETS = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/sekret-slack-XYZ",
    "SLACK_CHANNEL": "#asl-alerts",
    "TELEGRAM_BOT_TOKEN": "123456:sekret-telegram-ABC",
    "TELEGRAM_CHAT_ID": "-1001234567",
    "SMTP_SMARTHOST": "smtp.example.com:587",
    "SMTP_FROM": "asl-alerts@example.com",
    "SMTP_USERNAME": "asl-alerts@example.com",
    "SMTP_PASSWORD": "sekret-smtp-PWD",
    "ALERT_EMAIL_TO": "oncall@example.com",
}


def _ok(res: subprocess.CompletedProcess) -> str:
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    return out


# ------------------------------------------------------------------ promtool
@needs_promtool
def test_promtool_unit_tests_cover_every_alert_firing_and_silent() -> None:
    test_file = MON / "tests" / "asl_alerts_test.yml"
    out = _ok(
        run_tool("promtool", "test", "rules", test_file.name, timeout=120, cwd=test_file.parent)
    )
    assert "SUCCESS" in out
    spec = yaml.safe_load(test_file.read_text())
    firing, silent = set(), set()
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing == set(ALERT_NAMES), f"alerts without a firing test: {set(ALERT_NAMES) - firing}"
    assert silent == set(ALERT_NAMES), f"alerts without a silent test: {set(ALERT_NAMES) - silent}"


@needs_promtool
def test_checked_in_rules_are_the_rendered_defaults_and_pass_promtool(tmp_path: Path) -> None:
    write_rules(tmp_path, AlertThresholds(), uniform_baseline(list(CLASSES)))
    for name in ("asl_alerts.yml", "asl_baseline.yml"):
        checked_in = (MON / "rules" / name).read_text()
        assert (
            checked_in == (tmp_path / name).read_text()
        ), f"triton/monitoring/rules/{name} is stale: python -m asl_recognition.monitoring.render"
    out = _ok(run_tool("promtool", "check", "rules", *sorted((MON / "rules").glob("*.yml"))))
    assert "18 rules found" in out and "29 rules found" in out
    fixture = load_baseline(MON / "tests" / "baseline_fixture.json")
    rendered = dump_yaml({"groups": [baseline_rules(fixture)]})
    assert rendered in (MON / "tests" / "asl_baseline_fixture.yml").read_text()


@needs_promtool
def test_docker_prometheus_config_is_valid() -> None:
    out = _ok(run_tool("promtool", "check", "config", MON / "prometheus.yml"))
    assert "2 rule files found" in out


@needs_promtool
def test_thresholds_change_what_fires(tmp_path: Path) -> None:
    """The healthy series (mean confidence 0.9) fire only once the floor is raised above 0.9."""
    healthy = {
        "asl_prediction_confidence_sum": "0+540x30",
        "asl_prediction_confidence_count": "0+600x30",
    }
    series = [{"series": f'{k}{{model="asl"}}', "values": v} for k, v in healthy.items()]
    for floor, expect in (
        (0.6, []),
        (0.95, [{"exp_labels": {"severity": "warning", "model": "asl"}}]),
    ):
        rules = tmp_path / str(floor)
        t = load_thresholds(
            overrides={"min_mean_confidence": floor, "confidence_for": "0s"}, env={}
        )
        write_rules(rules, t, None)
        alert = yaml.safe_load((rules / "asl_alerts.yml").read_text())["groups"][1]["rules"][5]
        assert alert["alert"] == "AslMeanConfidenceLow" and f"< {floor:g})" in alert["expr"]
        if expect:
            expect[0]["exp_annotations"] = {
                "summary": f"Mean top-1 confidence below {floor:g}",
                "description": "Mean confidence is 0.90 over the last 5m: inputs may differ "
                "from the training data.",
            }
        test = {
            "rule_files": ["asl_alerts.yml"],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": [
                        {
                            "alertname": "AslMeanConfidenceLow",
                            "eval_time": "20m",
                            "exp_alerts": expect,
                        }
                    ],
                }
            ],
        }
        (rules / "t.yml").write_text(yaml.safe_dump(test))
        _ok(run_tool("promtool", "test", "rules", "t.yml", cwd=rules))


@needs_promtool
def test_rendered_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules", AlertThresholds(), None)
    cfg = render_prometheus_config(
        ["127.0.0.1:8002"],
        ["127.0.0.1:9093"],
        [str(p) for p in rules],
        "1s",
        "1s",
        "127.0.0.1:9090",
    )
    assert cfg["global"]["scrape_timeout"] == "1s"
    path = write_prometheus_config(tmp_path / "prometheus.yml", cfg)
    _ok(run_tool("promtool", "check", "config", path))


# ------------------------------------------------------------------ thresholds / baseline
def test_threshold_precedence_defaults_file_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "th.yml"
    f.write_text("thresholds:\n  latency_p95_ms: 400\n  error_ratio: 0.2\n  window: 10m\n")
    env = {env_name("error_ratio"): "0.1", env_name("window"): "2m"}
    t = load_thresholds(f, overrides={"window": "30s"}, env=env)
    assert (t.latency_p95_ms, t.error_ratio, t.window) == (400.0, 0.1, "30s")
    assert t.drift_max_tvd == AlertThresholds().drift_max_tvd
    assert env_name("latency_p95_ms") == "ASL_ALERT_LATENCY_P95_MS"


@pytest.mark.parametrize(
    "override",
    [
        {"window": "5 minutes"},
        {"error_ratio": 2},
        {"min_hand_found_ratio": 1.5},
        {"hand_window": "half an hour"},
        {"model_name": 'asl"} or vector(1'},
        {"nope": 1},
    ],
)
def test_bad_thresholds_are_rejected(override: dict) -> None:
    with pytest.raises((ValueError, KeyError)):
        load_thresholds(overrides=override, env={})


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e400"])
def test_non_finite_thresholds_are_refused_not_silently_off(text: str) -> None:
    """NaN compares false with everything: an alert with it would never fire."""
    with pytest.raises(ValueError, match="latency_p95_ms=.* must be a finite number"):
        load_thresholds(overrides={"latency_p95_ms": text}, env={})
    variable = env_name("max_nonfinite_predictions")
    with pytest.raises(ValueError, match="max_nonfinite_predictions=.* must be a finite number"):
        load_thresholds(env={variable: text})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "latency_p95_ms=nan"], "latency_p95_ms=nan must be a finite number"),
        (["--set", "latency_p95_ms=fast"], "latency_p95_ms='fast' is not a number"),
        (["--set", "latency"], "--set expects NAME=VALUE, got 'latency'"),
        (["--set", "nope=1"], "unknown threshold 'nope'"),
        (["--set", "window=0s"], "window='0s' must be longer than 0"),
        (["--set", "drift_window=5m5m"], "drift_window='5m5m' is not a Prometheus duration"),
        (["--set", "hand_for=30s1m"], "hand_for='30s1m' is not a Prometheus duration"),
    ],
)
def test_monitoring_clis_refuse_bad_thresholds_in_one_line(args, message, tmp_path) -> None:
    for module in ("render", "dashboard", "stack"):
        result = run_script("-m", f"asl_recognition.monitoring.{module}", *args, timeout=60)
        assert result.returncode == 2, (module, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (module, result.stderr[-2000:])
        assert message in result.stderr.strip().splitlines()[-1], module


@pytest.mark.parametrize(
    "text", ["thresholds:\n", "thresholds: [1]\n", "window: [5m\n", "- 1\n- 2\n"]
)
def test_a_bad_thresholds_file_is_one_line_too(text: str, tmp_path: Path) -> None:
    """An empty ``thresholds:``, a list, or broken YAML had ended each CLI in a traceback."""
    path = tmp_path / "thresholds.yml"
    path.write_text(text)
    for module in ("render", "stack"):
        args = ("--thresholds", path, "--out" if module == "render" else "--run-dir", tmp_path)
        result = run_script("-m", f"asl_recognition.monitoring.{module}", *args, timeout=60)
        assert result.returncode == 2, (module, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (module, result.stderr[-2000:])
        assert str(path) in result.stderr.strip().splitlines()[-1], module


def test_baseline_accepts_counts_shares_and_histograms(tmp_path: Path) -> None:
    b = parse_baseline({"class_distribution": {"A": 30, "B": 10}})
    assert b.class_shares == {"A": 0.75, "B": 0.25} and b.confidence_mean is None
    b = parse_baseline(
        {
            "baseline": {
                "class_counts": {"A": 1},
                "confidence_histogram": {"buckets": [0.5, 1.0], "counts": [1, 3]},
            }
        }
    )
    assert b.class_shares == {"A": 1.0}
    assert b.confidence_mean == pytest.approx((0.25 * 1 + 0.75 * 3) / 4)
    b = parse_baseline(
        {"class_distribution": {"A": "x"}, "confidence_histogram": {"buckets": "?"}}
    )
    assert b.class_shares == {} and b.confidence_mean is None
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError):
        load_baseline(path)


# ------------------------------------------------------------------ alertmanager
@needs_amtool
def test_alertmanager_config_all_receivers_valid_private_and_quiet(tmp_path: Path) -> None:
    path = write_alertmanager_config(
        tmp_path / "am.yml", env=SECRETS, webhook_url="http://127.0.0.1:9/hook"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out = _ok(run_tool("amtool", "check-config", path))
    assert "5 receivers" in out
    cfg = yaml.safe_load(path.read_text())
    names = [r["name"] for r in cfg["receivers"]]
    assert names == ["blackhole", "slack", "telegram", "email", "webhook"]
    assert cfg["receivers"][1]["slack_configs"][0]["api_url"] == SECRETS["SLACK_WEBHOOK_URL"]
    assert cfg["receivers"][2]["telegram_configs"][0]["chat_id"] == -1001234567
    assert cfg["receivers"][3]["email_configs"][0]["auth_password"] == SECRETS["SMTP_PASSWORD"]
    assert [r["receiver"] for r in cfg["route"]["routes"]] == names[1:]
    # the CLI (used by the Docker path) prints receiver names, never values
    res = run_script(
        "-m",
        "asl_recognition.monitoring.alertmanager_config",
        "--out",
        str(tmp_path / "cli.yml"),
        env={**os.environ, **SECRETS},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "receivers: email, slack, telegram" in res.stdout
    for key in ("SLACK_WEBHOOK_URL", "TELEGRAM_BOT_TOKEN", "SMTP_PASSWORD"):
        assert SECRETS[key] not in res.stdout + res.stderr
        assert SECRETS[key].split("/")[-1] not in res.stdout + res.stderr


@needs_amtool
def test_alertmanager_receivers_omitted_when_unset(tmp_path: Path) -> None:
    assert enabled_receivers({}) == []
    partial = {"TELEGRAM_BOT_TOKEN": "1:x", "SMTP_SMARTHOST": "smtp:25"}  # incomplete pairs
    assert enabled_receivers(partial) == []
    cfg = render_alertmanager_config(env={"SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"})
    assert [r["name"] for r in cfg["receivers"]] == ["blackhole", "slack"]
    path = write_alertmanager_config(tmp_path / "am.yml", env={})
    out = _ok(run_tool("amtool", "check-config", path))
    assert "1 receivers" in out
    with pytest.raises(ValueError):
        render_alertmanager_config(env={"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_CHAT_ID": "@chan"})


# ------------------------------------------------------------------ Grafana (Docker path)
# Metric names a real tritonserver 2.51 exported on this machine (CPU build, summary_latencies on)
TRITON_251 = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
    "nv_inference_request_summary_us", "nv_inference_queue_summary_us", "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes", "nv_pinned_memory_pool_total_bytes",
    "nv_pinned_memory_pool_used_bytes",
}  # fmt: skip
METRICS_STEP = {
    "asl_prediction_confidence_bucket", "asl_prediction_confidence_sum",
    "asl_prediction_confidence_count", "asl_predictions_total", "asl_low_confidence_total",
    "asl_nonfinite_predictions_total", "asl_hand_checked_total", "asl_hand_found_total",
}  # fmt: skip
PROMETHEUS_BUILTIN = {"up", "ALERTS"}


def recorded_names() -> set[str]:
    """Recording-rule outputs (the fixture baseline adds asl:baseline_confidence_mean)."""
    names = set()
    for path in [*(MON / "rules").glob("*.yml"), MON / "tests" / "asl_baseline_fixture.yml"]:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def grafana_exprs() -> list[str]:
    from asl_recognition.monitoring.grafana import exprs

    return exprs(json.loads((MON / "grafana" / "dashboards" / "asl-serving.json").read_text()))


def test_every_metric_the_rules_read_is_exported_by_the_metrics_step_or_triton() -> None:
    """The step's own source declares the asl_* names (a histogram adds _bucket/_sum/_count)."""
    from asl_recognition.monitoring.grafana import metric_names
    from asl_recognition.serving.repository import METRICS_MODEL_SOURCE

    declared = set(re.findall(r'"(asl_[a-z_]+)"', Path(METRICS_MODEL_SOURCE).read_text()))
    parts = {f"{name}_{part}" for name in declared for part in ("bucket", "sum", "count")}
    assert METRICS_STEP <= declared | parts, f"not in the metrics step: {METRICS_STEP - declared}"
    used: set[str] = set()
    for group in yaml.safe_load((MON / "rules" / "asl_alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            used |= metric_names(rule["expr"])
    from asl_recognition.serving.front import ServerState, metrics_text

    front = set(re.findall(r"^(asl_[a-z_]+)", metrics_text(ServerState()), re.M))  # launcher's
    known = TRITON_251 | METRICS_STEP | PROMETHEUS_BUILTIN | recorded_names() | front
    assert used <= known, f"rules read unknown metrics: {used - known}"
    assert {"asl_hand_checked_total", "asl_hand_found_total"} <= used


def test_promql_metric_name_extraction() -> None:
    from asl_recognition.monitoring.grafana import metric_names

    expr = 'sum by (le) (increase(a_b{x="y(z)"}[5m])) / on() group_left() max(c:d) > bool 0'
    assert metric_names(expr) == {"a_b", "c:d"}


def test_grafana_dashboard_is_current_valid_and_queries_only_real_metrics(tmp_path: Path) -> None:
    from asl_recognition.monitoring import grafana
    from asl_recognition.monitoring.grafana import metric_names

    path = MON / "grafana" / "dashboards" / "asl-serving.json"
    dash = json.loads(path.read_text())
    assert dash == grafana.dashboard(), "stale: python -m asl_recognition.monitoring.grafana"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "asl-serving"
    ds = yaml.safe_load((MON / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((MON / "grafana/provisioning/dashboards/asl.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    known = TRITON_251 | METRICS_STEP | PROMETHEUS_BUILTIN | recorded_names()
    used: set[str] = set()
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, target["expr"]
            used |= names
    assert used <= known, f"unknown metrics in the dashboard: {used - known}"
    # and the queries parse: promtool checks them as recording rules
    rules = {"groups": [{"name": "g", "rules": [
        {"record": f"grafana:q{i}", "expr": e.replace("$__rate_interval", "1m").replace(
            "$model", "asl")} for i, e in enumerate(grafana_exprs())]}]}  # fmt: skip
    (tmp_path / "q.yml").write_text(yaml.safe_dump(rules))
    if find_tool("promtool"):
        _ok(run_tool("promtool", "check", "rules", tmp_path / "q.yml"))


# ------------------------------------------------------------------ Docker path
@needs_amtool
def test_alertmanager_config_renders_without_pyyaml_for_the_plain_python_image(
    tmp_path: Path,
) -> None:
    """docker-compose renders in python:3.11-slim (no PyYAML): JSON output, still valid."""
    out = tmp_path / "am.yml"
    code = (
        "import sys; sys.modules['yaml'] = None\n"
        "from asl_recognition.monitoring.alertmanager_config import main\n"
        f"sys.exit(main(['--out', {str(out)!r}, '--chown', '{os.getuid()}:{os.getgid()}']))"
    )
    env = {**os.environ, **SECRETS}
    res = run_script("-c", code, env=env)
    assert res.returncode == 0, res.stderr
    assert out.read_text().lstrip().startswith("{")
    assert json.loads(out.read_text())["receivers"][1]["name"] == "slack"
    assert "4 receivers" in _ok(run_tool("amtool", "check-config", out))
    assert SECRETS["SMTP_PASSWORD"] not in res.stdout + res.stderr


def test_compose_monitoring_services_mount_existing_files() -> None:
    compose = yaml.safe_load((REPO_ROOT / "triton" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["prometheus"]["image"] == "prom/prometheus:v2.42.0"
    assert services["alertmanager"]["image"] == "prom/alertmanager:v0.25.0"
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("prometheus", "alertmanager", "grafana", "alertmanager-config"):
        for vol in services[name]["volumes"]:
            if isinstance(vol, dict) and vol["type"] == "bind":
                assert (REPO_ROOT / "triton" / vol["source"]).exists(), vol["source"]
            else:
                assert str(vol).split(":")[0] in compose["volumes"], vol
    targets = {v["target"] for v in services["prometheus"]["volumes"] if isinstance(v, dict)}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/rules"} <= targets
    env = services["alertmanager-config"]["environment"]
    assert {"SLACK_WEBHOOK_URL", "TELEGRAM_BOT_TOKEN", "SMTP_PASSWORD", "ALERT_EMAIL_TO"} <= set(
        env
    )
    assert all(str(v).startswith("${") for v in env.values()), "no literal settings in compose"
    cmd = services["alertmanager-config"]["command"]
    assert "asl_recognition.monitoring.alertmanager_config" in cmd
    assert services["alertmanager"]["depends_on"]["alertmanager-config"]["condition"] == (
        "service_completed_successfully"
    )
    prom_cfg = yaml.safe_load((MON / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom_cfg["scrape_configs"]}
    assert jobs["triton"]["static_configs"][0]["targets"] == ["triton:8002"]


def test_private_write_never_follows_symlinks(tmp_path: Path) -> None:
    """A symlink planted at ``<out>.tmp`` or at ``<out>`` must not receive the secrets."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "run" / "alertmanager.yml"
    out.parent.mkdir()
    planted = out.with_name(out.name + ".tmp")
    planted.symlink_to(victim)
    write_alertmanager_config(out, env=SECRETS)
    assert victim.read_text() == "keep me" and planted.is_symlink()
    assert SECRETS["SMTP_PASSWORD"] in out.read_text() and not out.is_symlink()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, planted.name]
    linked = tmp_path / "linked.yml"
    linked.symlink_to(victim)
    with pytest.raises(ValueError, match="symlink"):
        write_alertmanager_config(linked, env=SECRETS)
    assert victim.read_text() == "keep me" and linked.is_symlink()


def test_url_masking_keeps_host_and_hides_credentials() -> None:
    from asl_recognition.monitoring.urls import mask_url, mask_webhook, split_credentials

    url = "https://ops:p%40ss@prom.example.com:9443/prefix"
    assert mask_url(url) == "https://***@prom.example.com:9443/prefix"
    bare, auth = split_credentials(url)
    assert bare == "https://prom.example.com:9443/prefix" and auth == "Basic b3BzOnBAc3M="
    assert split_credentials("http://127.0.0.1:9090") == ("http://127.0.0.1:9090", None)
    assert mask_webhook("https://u:p@hooks.slack.com/services/T0/B0/x?t=1") == (
        "https://hooks.slack.com/…"
    )
    assert mask_webhook("http://127.0.0.1:9099") == "http://127.0.0.1:9099"
    # Without "http://", urlsplit reads "user" as the scheme and sees no userinfo at all.
    assert mask_url("ops:s3cret@127.0.0.1:9090") == "***@127.0.0.1:9090"
    assert mask_url("http://127.0.0.1:9090/a@b") == "http://127.0.0.1:9090/a@b"


def test_status_page_refuses_a_prometheus_url_without_scheme_and_shows_no_secret() -> None:
    from asl_recognition.monitoring.dashboard import StatusSource

    with pytest.raises(ValueError, match="must start with http") as refused:
        StatusSource(prometheus="ops:s3cret@127.0.0.1:9", registry_backend="local").collect()
    assert "s3cret" not in str(refused.value)


def test_grafana_cli_prints_help_and_writes_where_it_is_told(tmp_path: Path) -> None:
    """``--help`` used to write the checked-in dashboard instead of printing help."""
    checked_in = MON / "grafana" / "dashboards" / "asl-serving.json"
    before = os.stat(checked_in).st_mtime_ns
    shown = run_script("-m", "asl_recognition.monitoring.grafana", "--help", timeout=60)
    assert shown.returncode == 0 and "--out-dir" in shown.stdout and "wrote" not in shown.stdout
    assert os.stat(checked_in).st_mtime_ns == before
    wrote = run_script("-m", "asl_recognition.monitoring.grafana", f"--out-dir={tmp_path}")
    assert wrote.returncode == 0, wrote.stderr
    assert (tmp_path / "asl-serving.json").read_bytes() == checked_in.read_bytes()
    refused = run_script("-m", "asl_recognition.monitoring.grafana", "--outdir=x", timeout=60)
    assert refused.returncode == 2 and "unrecognized arguments: --outdir=x" in refused.stderr
