"""Tracking: offline sessions hold what a server import needs; outputs reach the executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from asl_recognition import tracking
from asl_recognition.data.options import PublishDatasetOptions
from asl_recognition.options import from_mapping
from asl_recognition.paths import REPO_ROOT

SERVER_ENV = (
    "CLEARML_API_HOST",
    "CLEARML_API_ACCESS_KEY",
    "CLEARML_TASK_ID",
    "CLEARML_AUTH_TOKEN",
    "ASL_OFFLINE",
    "CLEARML_OFFLINE_MODE",
)


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, False),
        ({"CLEARML_API_HOST": "http://127.0.0.1:8008", "CLEARML_API_ACCESS_KEY": "k"}, True),
        (
            {
                "CLEARML_API_HOST": "http://127.0.0.1:8008",
                "CLEARML_API_ACCESS_KEY": "k",
                "ASL_OFFLINE": "1",
            },
            False,
        ),
        # an agent authenticates with its task id / token, no keys in any file
        ({"CLEARML_TASK_ID": "abc"}, True),
        ({"CLEARML_AUTH_TOKEN": "t"}, True),
        ({"CLEARML_TASK_ID": "abc", "CLEARML_OFFLINE_MODE": "1"}, False),
    ],
)
def test_server_detection(monkeypatch, tmp_path, env, expected) -> None:
    for key in SERVER_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(tmp_path / "absent.conf"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert tracking.server_configured() is expected


def test_config_file_with_credentials_counts_as_server(monkeypatch, tmp_path) -> None:
    for key in SERVER_ENV:
        monkeypatch.delenv(key, raising=False)
    conf = tmp_path / "clearml.conf"
    conf.write_text('api { api_server: "http://h:8008"\n credentials { access_key: "x" } }')
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(conf))
    assert tracking.server_configured() is True


def test_offline_task_session_holds_params_outputs_and_artifacts(tmp_path) -> None:
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent("""
        import sys
        from dataclasses import dataclass
        sys.path.insert(0, sys.argv[1])
        from asl_recognition.options import option
        from asl_recognition.tracking import init_task

        @dataclass
        class SmokeOptions:
            epochs: int = option(2, "epochs")
            source: list[str] = option([], "sources")
            weights: str | None = option(None, "weights")

        ctx = init_task("ASL/tests", "tracking-smoke", SmokeOptions(source=["a", "b"]))
        assert ctx.offline
        assert ctx.options == SmokeOptions(source=["a", "b"]), ctx.options
        ctx.upload_artifact("summary", {"ok": True})
        ctx.record_outputs(dataset_id="abc123", success=True)
        print("ZIP", ctx.close())
    """))
    # No CLEARML_* and a clearml.conf without credentials: the SDK's config loader (imported by
    # server_configured) must not leave the SDK thinking it is online.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    (tmp_path / "clearml.conf").write_text("sdk { }\n")
    env.update(
        ASL_WORKSPACE=str(tmp_path / "ws"),
        ASL_STEP_OUTPUTS=str(tmp_path / "out.json"),
        HOME=str(tmp_path),
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(REPO_ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    zip_path = Path(proc.stdout.split("ZIP ")[-1].strip())
    assert zip_path.is_file() and zip_path.is_relative_to(tmp_path / "ws")
    with zipfile.ZipFile(zip_path) as zf:
        task = json.loads(zf.read("task.json"))
    params = task["hyperparams"]
    assert params["Args"]["epochs"]["value"] == "2"
    # the text the web UI shows for a list (JSON) is what from_mapping types back
    stored = params["Args"]["source"]["value"]
    assert from_mapping(PublishDatasetOptions, {"holdout_source": stored}).holdout_source == [
        "a",
        "b",
    ]
    assert params["Outputs"]["dataset_id"]["value"] == "abc123"
    assert [a["key"] for a in task["execution"]["artifacts"]] == ["summary"]
    assert json.loads((tmp_path / "out.json").read_text()) == {
        "dataset_id": "abc123",
        "success": True,
    }
    sessions = (tmp_path / "ws" / "offline_sessions.jsonl").read_text().splitlines()
    assert json.loads(sessions[-1])["zip"] == str(zip_path)
