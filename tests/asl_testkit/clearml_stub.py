"""A **mock** ClearML server on loopback, and the environment clearml-agent gives a task.

No ClearML server can run here, so the clean-agent suite (``tests/pipeline/test_clean_agent.py``)
starts each task script against this mock instead. It is not ClearML: it answers the REST calls
the SDK (clearml 2.1.12) makes for ``Task.init`` under an agent and for what the tasks do after
it, with ``{"meta": {...}, "data": {...}}`` shaped as the SDK's response schemas in
``clearml/backend_api/services/v2_23/*.py`` expect, keeps the tasks, projects and models it is
given or asked to create, and records every request (endpoint and JSON body) so a test can
assert on what the process asked for. A call it has no answer for is answered with empty data
and listed in :attr:`MockClearmlServer.unanswered`.

The same port serves the files server (``/files/...``: uploads are kept in memory and served
back), so ``output_uri=True`` uploads have somewhere to go.
"""

from __future__ import annotations

import contextlib
import copy
import email.policy
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

API_VERSION = "2.23"
SERVER_VERSION = "1.17.0"
ACCESS_KEY = "MOCKACCESSKEY"
SECRET_KEY = "mock-secret-key"
Json = dict[str, Any]


@dataclass
class SeededTask:
    """A task the mock holds before the process starts: what an agent was asked to run."""

    name: str
    project: str = "ASL"
    type: str = "training"
    hyperparams: Mapping[str, str] = field(default_factory=dict)  # "Args/epochs" -> "3"
    script: str = ""


@dataclass
class Call:
    """One request the mock received."""

    endpoint: str  # "tasks.get_all"
    body: Any  # the JSON body (a list for the json-lines batch calls)

    def mentions(self, text: str) -> bool:
        return text in json.dumps(self.body, default=str)


def _now() -> str:
    stamp = time.time()
    micros = int(stamp % 1 * 1e6)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{micros:06d}+00:00"


def _new_id() -> str:
    return uuid.uuid4().hex


def _token() -> str:
    """A JWT the SDK decodes unverified for the API version (``Session._connect``)."""
    import jwt

    claims = {
        "api_version": API_VERSION,
        "server_version": SERVER_VERSION,
        "feature_set": "basic",
        "env": "mock",
        "exp": int(time.time()) + 24 * 3600,
        "identity": {"user": "mock-user", "company": "mock-company", "role": "user"},
    }
    return jwt.encode(claims, "mock-signing-key-of-32-bytes-long", algorithm="HS256")


def _hyperparams(flat: Mapping[str, str]) -> Json:
    """``{"Args/epochs": "3"}`` as the server stores it: ``{section: {name: param}}``."""
    sections: Json = {}
    for key, value in flat.items():
        section, name = key.split("/", 1)
        sections.setdefault(section, {})[name] = {
            "section": section,
            "name": name,
            "value": str(value),
            "type": "",
            "description": "",
        }
    return sections


def _matches_tags(have: list[str], query: list[str]) -> bool:
    """The server's tag filter: ``__$all``/``__$any`` set how terms combine, ``__$not`` or a
    leading ``-`` negates the next term."""
    mode, negate, results = "all", False, []
    for term in query:
        if term in ("__$all", "__$any"):
            mode = term[3:]
        elif term == "__$not":
            negate = True
        else:
            wanted = term[1:] if term.startswith("-") else term
            hit = wanted in have
            results.append(not hit if (negate or term.startswith("-")) else hit)
            negate = False
    return not results or (all(results) if mode == "all" else any(results))


def _matches_values(value: Any, query: Any) -> bool:
    """A field filter: a value or a list of values, with ``__$not`` exclusions."""
    terms = query if isinstance(query, list) else [query]
    include, exclude, negate = [], [], False
    for term in terms:
        if term == "__$not":
            negate = True
            continue
        if not str(term).startswith("__$"):
            (exclude if negate else include).append(term)
        negate = False
    return (not include or value in include) and value not in exclude


def _select(rows: Any, body: Json, fields: tuple[str, ...]) -> list[Json]:
    """Rows matching the query's ``name`` regex, tags and simple field filters."""
    found = list(rows)
    if body.get("name"):
        found = [r for r in found if re.search(str(body["name"]), r.get("name", ""))]
    for key in ("system_tags", "tags"):
        if body.get(key):
            found = [r for r in found if _matches_tags(r.get(key) or [], body[key])]
    for key in fields:
        if body.get(key) not in (None, [], ""):
            found = [r for r in found if _matches_values(r.get(key), body[key])]
    return found


def _field(row: Json, dotted: str) -> Any:
    for part in dotted.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row


def _matches_all(row: Json, query: Json | None) -> bool:
    """The server's ``_all_`` filter: every named field matches the pattern (the SDK's step
    cache looks up ``runtime.pipeline_job_hash`` so, ``clearml/automation/job.py``)."""
    if not query:
        return True
    pattern = re.compile(str(query.get("pattern", "")))
    return all(pattern.search(str(_field(row, f) or "")) for f in query.get("fields", []))


def _ordered(rows: list[Json], body: Json) -> list[Json]:
    for key in reversed(body.get("order_by") or []):
        name = key.lstrip("-")
        rows = sorted(rows, key=lambda r: str(r.get(name, "")), reverse=key.startswith("-"))
    size = body.get("page_size")
    if size:
        start = (body.get("page") or 0) * size
        rows = rows[start : start + size]
    return rows


class MockClearmlServer:
    """A mock of the ClearML API and files servers: threads, loopback, one port.

    ``tasks`` seeds the tasks an agent would hand to a process (``{task_id: SeededTask}``).
    """

    def __init__(self, tasks: Mapping[str, SeededTask] | None = None) -> None:
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.unanswered: list[str] = []
        self.projects: dict[str, Json] = {}
        self.tasks: dict[str, Json] = {}
        self.models: dict[str, Json] = {}
        self.files: dict[str, bytes] = {}
        self.queues: dict[str, Json] = {
            f"queue-{name}": {"id": f"queue-{name}", "name": name, "entries": [], "tags": []}
            for name in ("default", "services")
        }
        for task_id, seeded in (tasks or {}).items():
            self.seed_task(task_id, seeded)
        self._http = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    # ----------------------------------------------------------------------- life cycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def api_host(self) -> str:
        return f"{self.url}/api"

    @property
    def files_host(self) -> str:
        return f"{self.url}/files"

    @property
    def web_host(self) -> str:
        return f"{self.url}/web"

    def __enter__(self) -> "MockClearmlServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._http.shutdown()
        self._http.server_close()

    # ----------------------------------------------------------------------- state
    def project_id(self, name: str, system_tags: list[str] | None = None) -> str:
        with self.lock:
            for project in self.projects.values():
                if project["name"] == name:
                    return project["id"]
            pid = _new_id()
            self.projects[pid] = {
                "id": pid,
                "name": name,
                "basename": name.rsplit("/", 1)[-1],
                "system_tags": list(system_tags or []),
                "tags": [],
                "created": _now(),
                "last_update": _now(),
                "description": "",
                "company": "mock-company",
                "user": "mock-user",
            }
            return pid

    def seed_task(self, task_id: str, seeded: SeededTask) -> None:
        project = self.project_id(seeded.project)
        self.tasks[task_id] = {
            "id": task_id,
            "name": seeded.name,
            "project": project,
            "type": seeded.type,
            "status": "queued",
            "status_reason": "",
            "status_message": "",
            "user": "mock-user",
            "company": "mock-company",
            "created": _now(),
            "last_update": _now(),
            "last_change": _now(),
            "tags": [],
            "system_tags": [],
            "comment": "",
            "hyperparams": _hyperparams(seeded.hyperparams),
            "configuration": {},
            "execution": {"parameters": {}, "artifacts": [], "queue": "mock-queue"},
            "script": {
                "repository": "",
                "branch": "",
                "version_num": "",
                "entry_point": seeded.script,
                "working_dir": ".",
                "requirements": {},
                "diff": "",
            },
            "runtime": {},
            "models": {"input": [], "output": []},
            "container": {},
            "output": {"destination": None},
            "last_iteration": 0,
            "last_metrics": {},
        }

    def endpoints(self) -> list[str]:
        return [c.endpoint for c in self.calls]

    def calls_to(self, endpoint: str) -> list[Call]:
        return [c for c in self.calls if c.endpoint == endpoint]

    def parameter(self, task_id: str, key: str) -> str | None:
        section, name = key.split("/", 1)
        param = self.tasks[task_id]["hyperparams"].get(section, {}).get(name)
        return None if param is None else param.get("value")

    # ----------------------------------------------------------------------- dispatch
    def answer(self, endpoint: str, body: Any) -> tuple[int, Json]:
        with self.lock:
            self.calls.append(Call(endpoint, copy.deepcopy(body)))
        handler: Callable[[Any], Json] | None = getattr(
            self, "on_" + endpoint.replace(".", "__"), None
        )
        if handler is None:
            with self.lock:
                self.unanswered.append(endpoint)
            return 200, {}
        try:
            return 200, handler(body if body is not None else {})
        except KeyError as exc:
            return 400, {"__error__": f"mock: unknown id {exc}"}

    # --- auth, server
    def on_auth__login(self, body: Json) -> Json:
        return {"token": _token()}

    def on_server__info(self, body: Json) -> Json:
        return {
            "version": SERVER_VERSION,
            "build": "mock",
            "commit": "mock",
            "api_version": API_VERSION,
        }

    def on_users__get_current_user(self, body: Json) -> Json:
        return {
            "user": {"id": "mock-user", "name": "mock", "company": {"id": "mock-company"}},
            "getting_started": {},
            "settings": {},
        }

    # --- projects
    def on_projects__get_all(self, body: Json) -> Json:
        found = _select(self.projects.values(), body, ("basename",))
        if body.get("id"):
            ids = body["id"] if isinstance(body["id"], list) else [body["id"]]
            found = [p for p in found if p["id"] in ids]
        return {"projects": copy.deepcopy(_ordered(found, body))}

    on_projects__get_all_ex = on_projects__get_all

    def on_projects__get_by_id(self, body: Json) -> Json:
        return {"project": copy.deepcopy(self.projects[body["project"]])}

    def on_projects__create(self, body: Json) -> Json:
        pid = self.project_id(body["name"], body.get("system_tags"))
        return {"id": pid}

    def on_projects__update(self, body: Json) -> Json:
        project = self.projects[body["project"]]
        for key in ("name", "system_tags", "tags", "description", "default_output_destination"):
            if key in body:
                project[key] = body[key]
        return {"updated": 1, "fields": {}}

    # --- tasks
    def _task_ids(self, body: Json) -> list[str]:
        ids = body.get("id") or body.get("ids") or body.get("tasks") or body.get("task")
        return ids if isinstance(ids, list) else [ids] if ids else []

    def on_tasks__get_all(self, body: Json) -> Json:
        found = _select(self.tasks.values(), body, ("project", "type", "status", "parent"))
        found = [t for t in found if _matches_all(t, body.get("_all_"))]
        ids = self._task_ids(body)
        if ids:
            found = [t for t in found if t["id"] in ids]
        return {"tasks": copy.deepcopy(_ordered(found, body))}

    on_tasks__get_all_ex = on_tasks__get_all

    def on_tasks__get_by_id(self, body: Json) -> Json:
        return {"task": copy.deepcopy(self.tasks[body["task"]])}

    def on_tasks__create(self, body: Json) -> Json:
        tid = _new_id()
        project_name = next(
            (p["name"] for p in self.projects.values() if p["id"] == body.get("project")), "ASL"
        )
        self.seed_task(tid, SeededTask(name=body.get("name", ""), project=project_name))
        task = self.tasks[tid]
        task["status"] = "created"
        for key in ("type", "tags", "system_tags", "comment", "script", "hyperparams"):
            if key in body:
                task[key] = body[key]
        return {"id": tid}

    def on_tasks__edit(self, body: Json) -> Json:
        task = self.tasks[body["task"]]
        for key, value in body.items():
            if key not in ("task", "force", "method"):
                task[key] = value
        task["last_update"] = _now()
        return {"updated": 1, "fields": {}}

    def _status(self, status: str) -> Callable[[Json], Json]:
        def change(body: Json) -> Json:
            task = self.tasks[body["task"]]
            task["status"] = status
            task["last_update"] = _now()
            task["status_reason"] = body.get("status_reason", "")
            task["status_message"] = body.get("status_message", "")
            return {"updated": 1, "fields": {"status": status}}

        return change

    def on_tasks__started(self, body: Json) -> Json:
        return self._status("in_progress")(body) | {"started": 1}

    def on_tasks__stopped(self, body: Json) -> Json:
        return self._status("stopped")(body)

    def on_tasks__completed(self, body: Json) -> Json:
        return self._status("completed")(body)

    def on_tasks__failed(self, body: Json) -> Json:
        return self._status("failed")(body)

    def on_tasks__close(self, body: Json) -> Json:
        return self._status("closed")(body)

    def on_tasks__publish(self, body: Json) -> Json:
        return self._status("published")(body) | {"committed_versions_results": []}

    def on_tasks__reset(self, body: Json) -> Json:
        return self._status("created")(body) | {"dequeued": {}, "frames": {}, "events": {}}

    def on_tasks__ping(self, body: Json) -> Json:
        return {}

    def on_tasks__edit_hyper_params(self, body: Json) -> Json:
        task = self.tasks[body["task"]]
        replace = body.get("replace_hyperparams", "none")
        if replace == "all":
            task["hyperparams"] = {}
        for param in body.get("hyperparams", []):
            section = task["hyperparams"].setdefault(param["section"], {})
            if replace == "section":
                section.clear()
            section[param["name"]] = {"type": "", "description": "", **param}
        return {"updated": 1}

    def on_tasks__get_hyper_params(self, body: Json) -> Json:
        out = []
        for tid in body.get("tasks", []):
            params = [p for s in self.tasks[tid]["hyperparams"].values() for p in s.values()]
            out.append({"task": tid, "hyperparams": params})
        return {"params": out}

    def on_tasks__delete_hyper_params(self, body: Json) -> Json:
        task = self.tasks[body["task"]]
        for param in body.get("hyperparams", []):
            section = task["hyperparams"].get(param["section"], {})
            if param.get("name"):
                section.pop(param["name"], None)
            else:
                task["hyperparams"].pop(param["section"], None)
        return {"deleted": 1}

    def on_tasks__edit_configuration(self, body: Json) -> Json:
        task = self.tasks[body["task"]]
        if body.get("replace_configuration"):
            task["configuration"] = {}
        for item in body.get("configuration", []):
            task["configuration"][item["name"]] = item
        return {"updated": 1}

    def on_tasks__get_configurations(self, body: Json) -> Json:
        out = []
        for tid in body.get("tasks", []):
            out.append(
                {"task": tid, "configuration": list(self.tasks[tid]["configuration"].values())}
            )
        return {"configurations": out}

    def on_tasks__get_configuration_names(self, body: Json) -> Json:
        out = []
        for tid in body.get("tasks", []):
            out.append({"task": tid, "names": list(self.tasks[tid]["configuration"])})
        return {"configurations": out}

    def on_tasks__add_or_update_artifacts(self, body: Json) -> Json:
        task = self.tasks[body["task"]]
        artifacts = {a["key"]: a for a in task["execution"].get("artifacts", [])}
        for artifact in body.get("artifacts", []):
            artifacts[artifact["key"]] = artifact
        task["execution"]["artifacts"] = list(artifacts.values())
        return {"updated": 1}

    def on_tasks__add_or_update_model(self, body: Json) -> Json:
        task = self.tasks[body["task"]]
        kind = body.get("type", "output")
        models = [m for m in task["models"][kind] if m["name"] != body.get("name")]
        task["models"][kind] = models + [{"name": body.get("name"), "model": body.get("model")}]
        return {"updated": 1}

    def on_tasks__clone(self, body: Json) -> Json:
        source = self.tasks[body["task"]]
        tid = _new_id()
        task = copy.deepcopy(source)
        task.update(
            id=tid, status="created", created=_now(), last_update=_now(), parent=source["id"]
        )
        for key in (
            "name",
            "comment",
            "tags",
            "system_tags",
            "hyperparams",
            "configuration",
            "parent",
            "project",
            "container",
        ):
            if body.get(f"new_task_{key}") is not None:
                task[key] = body[f"new_task_{key}"]
        self.tasks[tid] = task
        return {"id": tid, "new_project": {}}

    def on_tasks__enqueue(self, body: Json) -> Json:
        """No agent pulls the queue: the task fails at once, so a controller does not wait."""
        self._status("queued")(body)
        task = self.tasks[body["task"]]
        task.update(status="failed", status_reason="mock server: no agent runs queued tasks")
        return {"queued": 1, "updated": 1, "fields": {}}

    def on_tasks__dequeue(self, body: Json) -> Json:
        return self._status("created")(body) | {"dequeued": 1}

    # --- events
    def on_events__add_batch(self, body: Any) -> Json:
        count = len(body) if isinstance(body, list) else 0
        return {"added": count, "errors": 0, "errors_info": {}}

    def on_events__get_task_log(self, body: Json) -> Json:
        return {"events": [], "returned": 0, "total": 0}

    # --- models
    def on_models__get_all(self, body: Json) -> Json:
        found = _select(self.models.values(), body, ("project", "task"))
        if body.get("id"):
            found = [m for m in found if m["id"] in body["id"]]
        return {"models": copy.deepcopy(_ordered(found, body))}

    def on_models__add_or_update_metadata(self, body: Json) -> Json:
        model = self.models[body["model"]]
        if body.get("replace_metadata") or not isinstance(model.get("metadata"), dict):
            model["metadata"] = {}
        for item in body.get("metadata", []):
            model["metadata"][item["key"]] = item
        return {"updated": 1}

    on_models__get_all_ex = on_models__get_all

    def on_models__get_by_id(self, body: Json) -> Json:
        return {"model": copy.deepcopy(self.models[body["model"]])}

    def on_models__create(self, body: Json) -> Json:
        mid = _new_id()
        self.models[mid] = {"id": mid, "created": _now(), "ready": False, "tags": [], **body}
        self.models[mid].setdefault("system_tags", [])
        return {"id": mid, "created": True}

    def on_models__update_for_task(self, body: Json) -> Json:
        mid = body.get("override_model_id") or _new_id()
        model = self.models.setdefault(mid, {"id": mid, "created": _now()})
        model.update({k: v for k, v in body.items() if k not in ("override_model_id",)})
        return {"id": mid, "created": True, "updated": 1, "fields": {}}

    def on_models__edit(self, body: Json) -> Json:
        self.models[body["model"]].update(body)
        return {"updated": 1, "fields": {}}

    on_models__update = on_models__edit

    # --- queues, workers
    def on_queues__get_all(self, body: Json) -> Json:
        return {"queues": copy.deepcopy(_select(self.queues.values(), body, ()))}

    def on_queues__get_by_id(self, body: Json) -> Json:
        return {"queue": copy.deepcopy(self.queues[body["queue"]])}

    def on_queues__get_default(self, body: Json) -> Json:
        return {"id": "mock-queue", "name": "default"}


class _QuietServer(ThreadingHTTPServer):
    """A client that exits with keep-alive connections open resets them: not an error."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def _multipart(headers: Any, raw: bytes, prefix: str) -> Iterator[tuple[str, bytes]]:
    """The files of an upload: the SDK posts multipart fields named by the object's path under
    the URL it posts to (``clearml/storage/helper.py``, ``_HttpDriver.upload_object_via_stream``).
    """
    kind = headers.get("Content-Type") or ""
    if "multipart/" not in kind:
        yield prefix, raw
        return
    message = BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + raw
    )
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        yield f"{prefix.rstrip('/')}/{name.lstrip('/')}", part.get_payload(decode=True) or b""


def _handler_for(server: MockClearmlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet: the calls are recorded instead
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, payload: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _api(self) -> None:
            raw = self._body()
            path = self.path.split("?", 1)[0]
            endpoint = path.rsplit("/", 1)[-1]
            if raw and "json-lines" in (self.headers.get("Content-Type") or ""):
                body: Any = [json.loads(line) for line in raw.splitlines() if line.strip()]
            else:
                body = json.loads(raw) if raw.strip() else {}
            status, data = server.answer(endpoint, body)
            error = data.pop("__error__", "") if isinstance(data, dict) else ""
            meta = {
                "id": _new_id(),
                "trx": _new_id(),
                "endpoint": {
                    "name": endpoint,
                    "requested_version": API_VERSION,
                    "actual_version": "1.0",
                },
                "result_code": status,
                "result_subcode": 0,
                "result_msg": error or "OK",
                "error_stack": "",
                "error_data": {},
            }
            self._send(status, json.dumps({"meta": meta, "data": data}).encode())

        def _files(self) -> None:
            key = self.path.split("?", 1)[0][len("/files") :]
            if self.command in ("POST", "PUT"):
                for name, payload in _multipart(self.headers, self._body(), key):
                    server.files[name] = payload
                    with server.lock:
                        server.calls.append(Call("files.upload", {"path": name}))
                self._send(200, b"{}")
            elif key in server.files:
                self._send(200, server.files[key], "application/octet-stream")
            else:
                self._send(404, b"{}")

        def _any(self) -> None:
            if self.path.startswith("/api/"):
                self._api()
            elif self.path.startswith("/files"):
                self._files()
            else:
                self._send(404, b"{}")

        do_GET = do_POST = do_PUT = _any

    return Handler


# --------------------------------------------------------------------------------------------
# The environment clearml-agent 3.0.3 gives a task process


def agent_config(server: MockClearmlServer, folder: Path) -> Path:
    """The configuration file the agent writes for the task (``Worker.execute`` dumps its
    session's config to a temp ``.clearml_agent.*.cfg`` and points ``CLEARML_CONFIG_FILE`` at
    it, ``clearml_agent/commands/worker.py``): the servers and the worker's credentials."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".clearml_agent.mock.cfg"
    path.write_text(
        "api {\n"
        f'  api_server: "{server.api_host}"\n'
        f'  web_server: "{server.web_host}"\n'
        f'  files_server: "{server.files_host}"\n'
        f'  credentials {{ access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}\n'
        "}\n"
        "sdk { development { report_use_subprocess: false } }\n",
        encoding="utf-8",
    )
    return path


def agent_env(
    task_id: str, server: MockClearmlServer, home: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What clearml-agent 3.0.3 puts in a task process's environment (venv mode, no docker).

    From ``clearml_agent/commands/worker.py``, ``Worker._get_job_os_envs`` (called in
    ``Worker.execute`` just before the ``python -u <entry point>`` starts), each value under both
    names ``definitions.ENVIRONMENT_SDK_PARAMS`` lists:

    - ``CLEARML_TASK_ID`` / ``TRAINS_TASK_ID``: the task's id;
    - ``CLEARML_LOG_LEVEL`` / ``TRAINS_LOG_LEVEL``: the daemon's ``--log-level`` (``INFO``);
    - ``CLEARML_LOG_TASK_TO_BACKEND`` / ``TRAINS_LOG_TASK_TO_BACKEND``: ``"0"`` (the agent
      itself streams the console to the server);
    - ``CLEARML_CONFIG_FILE`` / ``TRAINS_CONFIG_FILE``: the agent's temp configuration, which
      holds the API, web and files servers and the credentials (:func:`agent_config`).

    ``Worker.run_one_task`` also sets ``CLEARML_WORKER_ID`` (``ENV_WORKER_ID.set``) for the
    daemon's children; ``CLEARML_AUTH_TOKEN`` only with ``--impersonate``-style task-owner
    tokens or in docker mode, so not here. ``CLEARML_PROC_MASTER_ID`` is not set by the agent: the
    SDK sets it itself in ``Task.init`` (``clearml/backend_interface/task/task.py``,
    ``Task.__update_master_pid_task``), for the task's children.
    ``PYTHONPATH`` is the script's folder added by ``get_python_path`` (here: none set, the
    scripts add the repository root themselves).
    """
    env = {
        k: v
        for k, v in (base if base is not None else os.environ).items()
        if not k.startswith(("CLEARML_", "TRAINS_", "ASL_")) and k != "PYTHONPATH"
    }
    config = str(agent_config(server, home))
    for name in ("CLEARML_", "TRAINS_"):
        env[f"{name}TASK_ID"] = task_id
        env[f"{name}LOG_LEVEL"] = "INFO"
        env[f"{name}LOG_TASK_TO_BACKEND"] = "0"
        env[f"{name}CONFIG_FILE"] = config
    env["CLEARML_WORKER_ID"] = "mock-agent:0"
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def mock_clearml_server(tasks: Mapping[str, SeededTask]) -> Iterator[MockClearmlServer]:
    """A started :class:`MockClearmlServer` holding ``tasks``; stopped on exit."""
    with MockClearmlServer(tasks) as server:
        yield server


# --------------------------------------------------------------------------------------------
# The agent's checkout


def agent_checkout(source: Path, dest: Path) -> Path:
    """A checkout as an agent has it: the files git tracks, plus the untracked ones it does not
    ignore (so uncommitted work is tested too), committed in a fresh repository at ``dest``.

    Nothing ignored comes along: no ``.venv``, no ``.cache/hand_models``, no ``workspace/``,
    no ``make`` output.
    """
    import subprocess
    import tarfile

    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=source,
        check=True,
        capture_output=True,
    ).stdout.decode()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest.parent / f"{dest.name}.tar"
    with tarfile.open(archive, "w") as tar:
        for rel in filter(None, listed.split("\0")):
            if (source / rel).is_file():  # listed but deleted in the work tree: not there
                tar.add(source / rel, arcname=rel, recursive=False)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")
    archive.unlink()
    git = ["git", "-c", "user.name=mock agent", "-c", "user.email=agent@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "agent checkout"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True)
    return dest


def mock_build_controller(monkeypatch: Any) -> dict[str, Any]:
    """``clearml_controller.build_controller`` replaced by an autospec **mock** of itself (a
    keyword the real one lacks fails here too): the returned dict gets each call's arguments
    by name and the strict mock controller it built (``PipelineController`` autospec, with a
    ``Task`` autospec as its task); set ``"succeeds"`` to False for a failed pipeline."""
    import inspect
    from unittest import mock

    from clearml import PipelineController, Task

    from asl_recognition.pipeline import clearml_controller

    real = clearml_controller.build_controller
    made: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(real).bind(*args, **kwargs)
        bound.apply_defaults()
        controller = mock.create_autospec(PipelineController, instance=True)
        controller.task = mock.create_autospec(Task, instance=True)
        # a failed pipeline: the SDK marks its task failed (``PipelineController.stop``)
        status = "in_progress" if made.get("succeeds", True) else "failed"
        controller.task.get_status.return_value = status
        controller.get_pipeline_dag.return_value = {}
        made.update(bound.arguments, controller=controller)
        return controller

    built = mock.create_autospec(real, side_effect=record)
    monkeypatch.setattr(clearml_controller, "build_controller", built)
    return made
