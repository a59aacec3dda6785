"""A step template as the real SDK stores it on a server: the **mock** ClearML server of
``asl_testkit.clearml_stub`` on loopback, the real ``Task.create`` in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from asl_testkit.clearml_stub import ACCESS_KEY, SECRET_KEY, MockClearmlServer

from asl_recognition.paths import REPO_ROOT

CREATE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from asl_recognition.pipeline import clearml_controller
    from asl_recognition.pipeline.dag import ASL_DAG

    source = {"repo": "https://example.org/asl.git", "commit": "a" * 40}
    print(clearml_controller.ensure_base_task(ASL_DAG.step("train"), "ASL/t", source=source))
""")


def test_a_step_template_asks_for_the_python_the_controller_records(tmp_path):
    """clearml-agent gives a task the Python its ``script.binary`` names (``pythonX.Y``) and
    its own otherwise: a template recorded as plain ``python`` ran on the agent's Python, 3.10
    on Ubuntu 22.04, where requirements.txt does not install (docs/server-path.md)."""
    with MockClearmlServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
        env.update(
            CLEARML_API_HOST=server.api_host,
            CLEARML_WEB_HOST=server.web_host,
            CLEARML_FILES_HOST=server.files_host,
            CLEARML_API_ACCESS_KEY=ACCESS_KEY,
            CLEARML_API_SECRET_KEY=SECRET_KEY,
            HOME=str(tmp_path),
        )
        proc = subprocess.run(
            [sys.executable, "-c", CREATE, str(REPO_ROOT)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        script = server.tasks[proc.stdout.split()[-1]]["script"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert script["binary"] == version, json.dumps(script, default=str)[:2000]
    assert script["entry_point"] == "tasks/train.py"
