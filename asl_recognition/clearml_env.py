"""Where a task's ClearML session goes, decided before ``clearml`` is imported: a configured
server (``clearml.conf``, the ``CLEARML_API_*`` variables, or an agent's ``CLEARML_TASK_ID`` /
``CLEARML_AUTH_TOKEN``) or ClearML's offline mode; and where model weights are uploaded
(``$ASL_OUTPUT_URI``, the files server, or nowhere).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

from asl_recognition.option_text import TRUE_WORDS
from asl_recognition.paths import REPO_ROOT, workspace

AGENT_ENV = ("CLEARML_TASK_ID", "TRAINS_TASK_ID", "CLEARML_AUTH_TOKEN")  # SDK: either id
OUTPUT_URI_ENV = "ASL_OUTPUT_URI"
# Every task variable the SDK reads to attach to an existing task. The SDK's sanitisers drop
# them before starting a child (``PipelineDecorator.pipeline``'s ``sanitized_env`` in
# clearml/automation/controller.py; ``LocalClearmlJob.launch`` in clearml/automation/job.py),
# each read under both prefixes (``clearml/config/defs.py``); clearml-agent sets the CLEARML_
# and TRAINS_ pairs side by side (``clearml_agent/definitions.py``).
SDK_TASK_ENV = (
    "CLEARML_TASK_ID",
    "TRAINS_TASK_ID",
    "CLEARML_PROC_MASTER_ID",
    "TRAINS_PROC_MASTER_ID",
    "CLEARML_LOG_TASK_TO_BACKEND",
    "TRAINS_LOG_TASK_TO_BACKEND",
    "CLEARML_SIMULATE_REMOTE_TASK",
)
KEEP_LOCAL = ("none", "false", "off")  # ASL_OUTPUT_URI values that mean "upload no weights"
_URI_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_said_local = False


# The SDK's own offline switch: the first of these set wins, and any word but a false one turns
# it on (clearml/backend_api/session/defs.py, ENV_OFFLINE_MODE; backend_config/converters.py,
# safe_text_to_bool, strtobool's words).
SDK_OFFLINE_ENV = ("CLEARML_OFFLINE_MODE", "TRAINS_OFFLINE_MODE")
SDK_FALSE_WORDS = ("n", "no", "f", "false", "off", "0")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


def sdk_offline() -> bool:
    """Whether the SDK will run offline, read as it reads it: ``TRAINS_OFFLINE_MODE=1`` or
    ``CLEARML_OFFLINE_MODE=y`` had the SDK offline while the task took the server path."""
    for name in SDK_OFFLINE_ENV:
        value = os.environ.get(name, "").strip().lower()
        if value:
            return value not in SDK_FALSE_WORDS
    return False


def server_configured() -> bool:
    """True when the SDK would talk to a server: the same test as ``clearml.Session``.

    An agent runs a step with ``CLEARML_TASK_ID`` and may authenticate with
    ``CLEARML_AUTH_TOKEN`` alone (no keys in any file); otherwise credentials come from the
    ``CLEARML_API_ACCESS_KEY`` variable or ``api.credentials`` of the SDK's own configuration
    files, read with the SDK's loader. Forced offline mode wins.
    """
    if sdk_offline() or _env_true("ASL_OFFLINE"):
        return False
    if any(os.environ.get(name) for name in AGENT_ENV):
        return True
    from clearml.backend_api.config import load
    from clearml.backend_api.session.defs import ENV_ACCESS_KEY

    try:
        configured = load().get("api.credentials.access_key", None)
    except Exception:  # an unreadable clearml.conf: the SDK itself would fail on it too
        configured = None
    return bool(ENV_ACCESS_KEY.get(default=configured))


def not_configured() -> str:
    """Why ``Task.init`` found no server: an agent's variable asks for one (an agent-like
    start, a copied shell) while no credentials are set anywhere."""
    named = [name for name in AGENT_ENV if os.environ.get(name)]
    asked = f"{' and '.join(named)} ask for a server (a ClearML agent sets them)" if named else ""
    return (
        f"ClearML is not configured here{': ' + asked if asked else ''}, but no credentials "
        "are set: set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY (or "
        "run clearml-init), or unset them and set ASL_OFFLINE=1 to run offline"
    )


def weights_stay_local() -> bool:
    """``ASL_OUTPUT_URI=none``: model weights are registered where they are, not uploaded.

    Only sensible on one machine; dataset files and task artifacts still go to the files
    server (a ClearML dataset cannot be finalized without storage). Said once per process.
    """
    value = os.environ.get(OUTPUT_URI_ENV, "").strip().lower()
    local = value in KEEP_LOCAL
    global _said_local
    if local and not _said_local:
        _said_local = True
        print(
            f"{OUTPUT_URI_ENV}={value}: model weights stay on this machine (registered as local "
            "paths); datasets and artifacts still go to the files server",
            file=sys.stderr,
        )
    return local


def configured_output_uri() -> str | None:
    """``ASL_OUTPUT_URI`` if set to a destination (models and datasets are uploaded there).

    None means the SDK default: the ClearML files server (``api.files_server`` /
    ``CLEARML_FILES_HOST``), which every machine of the deployment can read; ``none`` (see
    :func:`weights_stay_local`) gives None too. A relative path is refused: it would name a
    different folder on every machine.
    """
    value = os.environ.get(OUTPUT_URI_ENV, "").strip()
    if not value or weights_stay_local():
        return None
    if not (_URI_SCHEME.match(value) or os.path.isabs(value)):
        raise ValueError(
            f"{OUTPUT_URI_ENV}={value!r} must be a URL (https://, s3://, gs://, azure://, "
            "file://) or an absolute shared path"
        )
    return value


def step_output_uri() -> str | None:
    """Where a step's datasets go: ``ASL_OUTPUT_URI``, else, on an agent, its task's own
    destination, which the pipeline set at launch (an agent passes on no variable of the
    launching shell, and ``Dataset.create`` without one uses the files server)."""
    chosen = configured_output_uri()
    if chosen or weights_stay_local():
        return chosen
    if not (os.environ.get("CLEARML_TASK_ID") or os.environ.get("TRAINS_TASK_ID")):
        return None
    from clearml import Task

    task = Task.current_task()
    return str(task.output_uri) if task is not None and task.output_uri else None


def output_uri() -> str | bool:
    """``Task.init``'s ``output_uri``: ``$ASL_OUTPUT_URI`` or the files server.

    ``True`` is the SDK's way to say "the configured files server"; ``False`` (for
    ``ASL_OUTPUT_URI=none``) sets no destination (``clearml/task.py``, the ``output_uri``
    setter: False becomes None).
    """
    if weights_stay_local():
        return False
    return os.environ.get(OUTPUT_URI_ENV, "").strip() or True


def prepare_environment() -> bool:
    """Set the offline-mode environment before ``clearml`` is imported; returns ``offline``."""
    offline = not server_configured()
    if offline:
        drop_task_binding()
        os.environ["CLEARML_OFFLINE_MODE"] = "1"
        os.environ.setdefault(
            "CLEARML_CONFIG_FILE", str(REPO_ROOT / "config" / "clearml-offline.conf")
        )
        os.environ.setdefault("CLEARML_CACHE_DIR", str(workspace() / "clearml_cache"))
        if "clearml" in sys.modules:
            # server_configured() read the SDK's configuration, which imported clearml; the SDK
            # froze CLEARML_OFFLINE_MODE at import (class attributes), so tell it again.
            from clearml import Task

            Task.set_offline(True)
    return offline


def drop_task_binding() -> None:
    """Offline, an agent's task id (``ASL_OFFLINE=1`` beside ``CLEARML_TASK_ID``) names no task
    the SDK can reach, only the stale offline session of that id, whose stored ``Args`` then
    replaced the command line's options and whose zip the new session overwrote: a fresh
    session instead. Must run before ``clearml`` is imported (it reads the id at import)."""
    dropped = [name for name in SDK_TASK_ENV if os.environ.pop(name, None)]
    if dropped:
        print(
            f"offline: {', '.join(dropped)} ignored (no server to attach to): a new offline task",
            file=sys.stderr,
        )


def record_requirements_file() -> None:
    """Make the next ``Task.init`` record ``requirements.txt`` as the task's packages.

    By default the SDK lists the packages it finds imported, which drops tritonclient's
    ``[http,grpc]`` extras and the pins of packages nobody imports by name (protobuf, pip); a
    task run here and then cloned in the web UI would install that list on the agent. A path
    given to ``force_requirements_env_freeze`` is read as the list instead
    (clearml/backend_interface/task/task.py, ``_update_repository``). Call before ``Task.init``.
    """
    from clearml import Task

    Task.force_requirements_env_freeze(requirements_file=str(REPO_ROOT / "requirements.txt"))


def server_unreachable(tries: int = 3, timeout_s: float = 10.0) -> str | None:
    """Why the configured API server cannot be reached (None: it answered, whatever it said).

    The SDK retries a refused or silent server for hours (``api.http.retries``: 240 tries,
    backoff up to 120 s) and prints nothing, so a wrong ``CLEARML_API_HOST`` hung the enqueue
    job until the runner's time-out. Any HTTP answer counts as reachable: credentials are the
    SDK's to check, with its own clear error.
    A TLS handshake that fails (a self-signed or private-CA certificate) is an answer too: the
    SDK trusts what ``api.verify_certificate`` (``CLEARML_API_HOST_VERIFY_CERT``) or a CA bundle
    says, which this check cannot see.
    """
    import ssl
    import time
    import urllib.error
    import urllib.request

    from clearml.backend_api import Session

    host = Session.get_api_server_host()
    reason = ""
    for attempt in range(tries):
        try:
            urllib.request.urlopen(f"{host}/debug.ping", timeout=timeout_s).close()
            return None
        except urllib.error.HTTPError:
            return None
        except (OSError, ValueError) as exc:
            why = getattr(exc, "reason", None)  # URLError wraps it; ssl.SSLError's is a str
            if isinstance(exc, ssl.SSLError) or isinstance(why, ssl.SSLError):
                return None  # a TLS server answered; its certificate is the SDK's to judge
            reason = str(why or exc)
        if attempt + 1 < tries:
            time.sleep(2.0)
    return (
        f"the ClearML API server {host} does not answer ({reason}; {tries} tries): check "
        "CLEARML_API_HOST (or api.api_server in clearml.conf)"
    )


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without the variables that would bind a child to this process's task:
    a child that starts its own task (a pipeline step, the trigger's pipeline) must not attach
    to it, nor, offline, to the stale session of that id."""
    env = dict(os.environ if environ is None else environ)
    for name in SDK_TASK_ENV:
        env.pop(name, None)
    return env
