"""Tracking: offline sessions hold what a server import needs; outputs reach the executor."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from unittest import mock

import pytest
from asl_testkit.cli import run_script
from asl_testkit.task_harness import (
    load_task_module,
    make_mock_task,
    patch_task_init,
    recorded_outputs,
)
from clearml import Task
from clearml.binding.artifacts import Artifact

from asl_recognition import clearml_env, tracking
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
    assert clearml_env.server_configured() is expected


def test_config_file_with_credentials_counts_as_server(monkeypatch, tmp_path) -> None:
    for key in SERVER_ENV:
        monkeypatch.delenv(key, raising=False)
    conf = tmp_path / "clearml.conf"
    conf.write_text('api { api_server: "http://h:8008"\n credentials { access_key: "x" } }')
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(conf))
    assert clearml_env.server_configured() is True


def run_offline_step(
    tmp_path: Path, body: str, *args: str, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    """``body`` as a script run offline, as a step runs it: no CLEARML_* or ASL_* variables and a
    clearml.conf without credentials (the SDK's config loader, imported by server_configured,
    must not leave the SDK thinking it is online); argv[1] is the repository root."""
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    (tmp_path / "clearml.conf").write_text("sdk { }\n")
    env.update(ASL_WORKSPACE=str(tmp_path / "ws"), HOME=str(tmp_path), **env_extra)
    return subprocess.run(
        [sys.executable, str(script), str(REPO_ROOT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_offline_task_session_holds_params_outputs_and_artifacts(tmp_path) -> None:
    body = """
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
    """
    proc = run_offline_step(tmp_path, body, ASL_STEP_OUTPUTS=str(tmp_path / "out.json"))
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


def test_a_refused_run_is_marked_failed_with_its_reason_before_it_is_closed() -> None:
    """Outside an agent ``task.close()`` marks a task completed (clearml/task.py,
    ``Task.__shutdown``). Marked failed first, the server refuses that completion (failed ->
    completed is not in clearml-server's ``state_machine``, apiserver/bll/task/utils.py)."""
    mock_task = mock.create_autospec(Task, instance=True)
    ctx = tracking.TaskContext(task=mock_task, options=None, offline=False)
    with pytest.raises(SystemExit) as stop:
        ctx.fail("train: error: no such dataset", 2)
    assert stop.value.code == 2
    reason = "train: error: no such dataset"
    mock_task.mark_failed.assert_called_once_with(
        status_reason=reason, status_message=reason, force=True
    )
    order = [c[0] for c in mock_task.mock_calls if c[0] in ("mark_failed", "close")]
    assert order == ["mark_failed", "close"]


def test_offline_a_refused_run_records_its_reason_and_torch_save_makes_no_model(
    tmp_path,
) -> None:
    """One offline task, as a script runs it: a ``torch.save`` of a checkpoint reaches no
    output model (the SDK's PyTorch binding, ``PatchPyTorchModelIO._save`` ->
    ``WeightsFileHandler.create_output_model``, is off), and a refusal exits 2 with its line,
    the session record saying failed and why (offline the SDK sends no status at all)."""
    body = """
        import sys
        from dataclasses import dataclass
        sys.path.insert(0, sys.argv[1])
        import torch
        from clearml.binding.frameworks import WeightsFileHandler
        from asl_recognition.options import option
        from asl_recognition.tracking import init_task

        made = []
        original = WeightsFileHandler.create_output_model
        def counting(*args, **kwargs):
            made.append(args[1])
            return original(*args, **kwargs)
        WeightsFileHandler.create_output_model = staticmethod(counting)

        @dataclass
        class SmokeOptions:
            epochs: int = option(1, "epochs")

        ctx = init_task("ASL/tests", "refused-smoke", SmokeOptions(), "training")
        torch.save({"weights": torch.zeros(3)}, sys.argv[2])
        print("MODELS", made, flush=True)
        ctx.fail("refused-smoke: error: nothing to train on")
    """
    proc = run_offline_step(tmp_path, body, str(tmp_path / "epoch1.pt"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "refused-smoke: error: nothing to train on"
    # said once: not echoed again by the ClearML logger's console copy
    assert (proc.stdout + proc.stderr).count("nothing to train on") == 1, proc.stderr[-2000:]
    assert "MODELS []" in proc.stdout and (tmp_path / "epoch1.pt").is_file()
    sessions = (tmp_path / "ws" / "offline_sessions.jsonl").read_text().splitlines()
    record = json.loads(sessions[-1])
    assert record["status"] == "failed"
    assert record["status_reason"] == "refused-smoke: error: nothing to train on"
    assert Path(record["zip"]).is_file()


def test_output_uri_none_sets_no_destination_and_says_so_once(monkeypatch, capsys) -> None:
    """``Task.init(output_uri=False)`` sets no destination (clearml/task.py, the ``output_uri``
    setter: False becomes None); the store and registry get None too instead of an error."""
    monkeypatch.setenv("ASL_OUTPUT_URI", "none")
    monkeypatch.setattr(clearml_env, "_said_local", False)
    assert clearml_env.output_uri() is False
    assert clearml_env.configured_output_uri() is None
    assert clearml_env.weights_stay_local() is True
    notices = [line for line in capsys.readouterr().err.splitlines() if "ASL_OUTPUT_URI" in line]
    assert len(notices) == 1 and notices[0].startswith("ASL_OUTPUT_URI=none: model weights stay")
    monkeypatch.setenv("ASL_OUTPUT_URI", "s3://bucket/asl")
    assert clearml_env.output_uri() == "s3://bucket/asl" and not clearml_env.weights_stay_local()


def _fake_build(repo: Path):
    """What ``build_from_options`` returns, over a real folder (no model needed)."""

    def build(options):
        (repo / "asl_onnx").mkdir(parents=True, exist_ok=True)
        (repo / "asl_onnx" / "config.pbtxt").write_text('name: "asl_onnx"\n')
        return {
            "repo": str(repo),
            "model_name": "asl",
            "version": 1,
            "onnx_model": "asl_onnx",
            "versions": [1],
            "pruned": [],
            "removed_changed": [],
        }

    return build


@pytest.mark.parametrize("offline", [False, True], ids=["server", "local"])
def test_build_triton_repo_outputs_the_uploaded_repository_under_a_server(
    offline, tmp_path, monkeypatch
) -> None:
    """Under an agent the repository folder is in the agent's throw-away checkout: the step's
    ``repo`` output is the uploaded artifact's URL; a local run keeps the folder."""
    module = load_task_module("build_triton_repo")
    repo = tmp_path / "agent-checkout" / "workspace" / "triton_repo"
    monkeypatch.setattr(module, "build_from_options", _fake_build(repo))
    url = "http://files.mock-server.invalid/ASL/build_triton_repo.1/artifacts/triton_repo.zip"

    def upload(name, artifact_object, **_):
        mock_artifact = mock.create_autospec(Artifact, instance=True)
        mock_artifact.url = url if name == "triton_repo" else f"http://files/{name}"
        mock_task.artifacts[name] = mock_artifact

    mock_task = make_mock_task(tmp_path)
    mock_task.upload_artifact.side_effect = upload
    patch_task_init(monkeypatch, mock_task, tmp_path, offline=offline)

    assert module.main(["--onnx", "m.onnx", "--classes", "c.txt"]) == 0

    uploaded = [c.kwargs["name"] for c in mock_task.upload_artifact.call_args_list]
    outputs = recorded_outputs(mock_task)
    assert (outputs["model_name"], outputs["version"]) == ("asl", 1)
    if offline:
        assert uploaded == ["config.pbtxt"] and outputs["repo"] == str(repo)
    else:
        assert uploaded == ["config.pbtxt", "triton_repo"] and outputs["repo"] == url


def test_offline_reports_go_through_a_thread_and_every_event_reaches_the_session(
    tmp_path,
) -> None:
    """Offline, the reports are written from a thread (not the SDK's 5 s-period subprocess, which
    each flush and close waited for), and nothing reported is lost: the session zip holds every
    scalar and the text line."""
    body = """
        import sys
        from dataclasses import dataclass
        sys.path.insert(0, sys.argv[1])
        from clearml import Task
        from asl_recognition.options import option
        from asl_recognition.tracking import init_task

        @dataclass
        class SmokeOptions:
            epochs: int = option(1, "epochs")

        ctx = init_task("ASL/tests", "thread-reports", SmokeOptions(), "training")
        print("SUBPROCESS", Task._report_subprocess_enabled, flush=True)
        logger = ctx.task.get_logger()
        for step in range(50):
            logger.report_scalar("loss", "train", value=1.0 / (step + 1), iteration=step)
        logger.report_text("the last line", print_console=False)
        print("ZIP", ctx.close(), flush=True)
    """
    proc = run_offline_step(tmp_path, body)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SUBPROCESS False" in proc.stdout
    zipped = Path(proc.stdout.split("ZIP ", 1)[1].split()[0])
    with zipfile.ZipFile(zipped) as archive:
        events = [
            json.loads(line)
            for name in archive.namelist()
            if name.endswith(".jsonl")  # metrics.jsonl, log.jsonl
            for line in archive.read(name).decode().splitlines()
            if line.strip()
        ]
    flat = [e for item in events for e in (item if isinstance(item, list) else [item])]
    scalars = {e["iter"] for e in flat if e.get("type") == "training_stats_scalar"}
    assert scalars == set(range(50))
    assert any("the last line" in str(e.get("msg", "")) for e in flat)


def test_the_thread_switch_refuses_an_sdk_without_it() -> None:
    class NoSuchSwitch:
        pass

    with pytest.raises(RuntimeError, match="_report_subprocess_enabled"):
        tracking.report_from_a_thread(NoSuchSwitch)


def test_a_tls_server_the_sdk_is_told_to_trust_is_not_called_unreachable(
    monkeypatch, tmp_path
) -> None:
    """A ClearML server with a self-signed certificate and CLEARML_API_HOST_VERIFY_CERT=0 (or a
    private CA in a bundle the SDK is given): the SDK talks to it, so the enqueue and the trigger
    service must not refuse it as "does not answer (certificate verify failed)"."""
    import http.server
    import shutil
    import ssl
    import threading

    if not shutil.which("openssl"):
        pytest.skip("openssl makes the self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLEARML_API_HOST", f"https://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("CLEARML_API_HOST_VERIFY_CERT", "0")
    try:
        assert clearml_env.server_unreachable(tries=1, timeout_s=5) is None
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "where, advice",
    [
        ("reports/report.json", "(the folder --report-dir names): free space there or give"),
        ("ws/store/x", "(workspace {ws}); free space there or point ASL_WORKSPACE at a"),
        ("elsewhere/x", "(outside the workspace): free space on its file system"),
    ],
)
def test_a_storage_failure_names_the_folder_that_is_full(
    tmp_path, monkeypatch, capsys, where, advice
):
    from asl_recognition.data.options import ValidateRawOptions
    from asl_recognition.tracking import storage_errors_in_one_line

    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    options = ValidateRawOptions(report_dir=str(tmp_path / "reports"))
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / where))
    with pytest.raises(SystemExit) as stopped:
        with storage_errors_in_one_line("validate_raw", options):
            raise full
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"validate_raw: error: cannot write {tmp_path / where}: No space left")
    assert advice.format(ws=tmp_path / "ws") in line


@pytest.mark.parametrize(
    "name, value", [("TRAINS_OFFLINE_MODE", "1"), ("CLEARML_OFFLINE_MODE", "y")]
)
def test_the_sdks_other_offline_words_beside_an_agents_task_id(tmp_path, name, value) -> None:
    """The SDK reads either name, and any word but a false one (review k): the task had taken
    the server path with the SDK offline, kept its session under ~/.clearml and ended in
    'Insufficient permissions (write failed)'."""
    task_id = "0123456789abcdef0123456789abcdef"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ASL_WORKSPACE": str(tmp_path)}
    env.update({name: value, "CLEARML_TASK_ID": task_id, "TRAINS_TASK_ID": task_id})
    result = run_script("tasks/validate_raw.py", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "clearml_cache" / "offline").glob("*.zip")), result.stderr[-2000:]
    assert not (tmp_path / ".clearml" / "cache" / "offline").exists()


def test_an_agents_task_id_with_no_server_configured_is_one_line(tmp_path) -> None:
    """An agent-like start (its task variables, no clearml.conf, no keys) ended in the SDK's
    MissingConfigError traceback and its multi-line greeting (review)."""
    task_id = "0123456789abcdef0123456789abcdef"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ASL_WORKSPACE": str(tmp_path / "ws"),
    }
    env.update(CLEARML_TASK_ID=task_id, TRAINS_TASK_ID=task_id)
    result = run_script("tasks/select_best.py", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "select_best: error: ClearML is not configured here: CLEARML_TASK_ID and TRAINS_TASK_ID "
        "ask for a server (a ClearML agent sets them), but no credentials are set"
    ), line


def test_offline_beside_an_agents_task_id_starts_a_new_session_each_run(tmp_path) -> None:
    """ASL_OFFLINE=1 beside an agent's task variables: the second run attached to the offline
    session the first left under that id, took its stored Args over its own command line (the
    default sources again, silently) and overwrote its zip (review k)."""
    task_id = "0123456789abcdef0123456789abcdef"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ASL_WORKSPACE": str(tmp_path)}
    env.update(ASL_OFFLINE="1", CLEARML_TASK_ID=task_id, TRAINS_TASK_ID=task_id)
    first = run_script("tasks/validate_raw.py", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_script("tasks/validate_raw.py", "--source", "massey=data/massey_signers", env=env)
    said = second.stdout + second.stderr
    assert "class(es) missing: del, nothing, space" in said, said[-2000:]  # its own source
    zips = sorted((tmp_path / "clearml_cache" / "offline").glob("*.zip"))
    assert len(zips) == 2 and not any(task_id in z.name for z in zips), zips


def _recorded_session(ws: Path) -> Path:
    """A session zip in ``ws``'s offline cache, recorded as a run records it (absolute)."""
    offline = ws / "clearml_cache" / "offline"
    offline.mkdir(parents=True)
    with zipfile.ZipFile(offline / "offline-1.zip", "w") as zf:
        zf.writestr("task.json", "{}")
    line = {"task": "t", "project": "ASL", "zip": str(offline / "offline-1.zip")}
    (ws / "offline_sessions.jsonl").write_text(json.dumps(line) + "\n")
    return offline / "offline-1.zip"


def _import(ws: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env.update(ASL_WORKSPACE=str(ws), CLEARML_OFFLINE_MODE="1")
    return run_script("-m", "asl_recognition.offline_import", env=env, timeout=120)


def test_the_offline_import_finds_the_sessions_of_a_moved_or_copied_workspace(tmp_path) -> None:
    """``offline_sessions.jsonl`` names each zip by absolute path: once the workspace was
    renamed, the import command the docs gave stopped at the first line ("Could not find the
    session folder") and imported nothing; a copy imported the other workspace's zips. Offline,
    a zip found gets as far as ClearML's refusal to create a task without a server."""
    _recorded_session(tmp_path / "ws")
    (tmp_path / "ws").rename(tmp_path / "moved")
    shutil.copytree(tmp_path / "moved", tmp_path / "copy")
    for ws in (tmp_path / "moved", tmp_path / "copy"):
        done = _import(ws)
        here = ws / "clearml_cache" / "offline" / "offline-1.zip"
        assert done.returncode == 1 and "Could not find the session" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last == (
            f"offline_import: {here}: UsageError: Creating task in offline mode. "
            "Use 'Task.init' instead."
        )
    missing = _import(tmp_path / "empty")
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"offline_import: error: {tmp_path / 'empty' / 'offline_sessions.jsonl'}: "
        "no offline sessions recorded"
    )
