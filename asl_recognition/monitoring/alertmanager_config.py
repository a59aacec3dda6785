"""Render ``alertmanager.yml`` from environment variables only; secrets are never printed.

Stdlib only (PyYAML optional) so the Docker path can run it in a plain ``python`` container.
Receivers whose variables are unset are left out; with none set, alerts go to a blackhole.

Environment:
  SLACK_WEBHOOK_URL [SLACK_CHANNEL]
  TELEGRAM_BOT_TOKEN TELEGRAM_CHAT_ID [TELEGRAM_API_URL]
  SMTP_SMARTHOST (host:port) SMTP_FROM ALERT_EMAIL_TO
  [SMTP_USERNAME SMTP_PASSWORD SMTP_REQUIRE_TLS]
  ALERT_WEBHOOK_URL (generic JSON webhook, used by the tests)
  ALERT_GROUP_WAIT ALERT_GROUP_INTERVAL ALERT_REPEAT_INTERVAL ALERT_RESOLVE_TIMEOUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from asl_recognition.options import OptionError
from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import from_mapping, missing, option

SECRET_VARS = (
    "SLACK_WEBHOOK_URL",
    "TELEGRAM_BOT_TOKEN",
    "SMTP_PASSWORD",
    "SMTP_USERNAME",
    "ALERT_WEBHOOK_URL",
)

_SLACK_TITLE = (
    "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.model }})"
)
_SLACK_TEXT = (
    "{{ range .Alerts }}*{{ .Annotations.summary }}*\n{{ .Annotations.description }}\n{{ end }}"
)
_TELEGRAM_MESSAGE = (
    "{{ .Status | toUpper }}: {{ .CommonLabels.alertname }}\n"
    "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n{{ end }}"
)


def _get(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def enabled_receivers(env: Mapping[str, str] | None = None) -> list[str]:
    """Names of the receivers the environment configures (safe to print)."""
    return [r["name"] for r in _receivers(os.environ if env is None else env)]


def _receivers(env: Mapping[str, str], webhook_url: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if _get(env, "SLACK_WEBHOOK_URL"):
        cfg: dict[str, Any] = {
            "api_url": _get(env, "SLACK_WEBHOOK_URL"),
            "send_resolved": True,
            "title": _SLACK_TITLE,
            "text": _SLACK_TEXT,
        }
        if _get(env, "SLACK_CHANNEL"):
            cfg["channel"] = _get(env, "SLACK_CHANNEL")
        out.append({"name": "slack", "slack_configs": [cfg]})
    if _get(env, "TELEGRAM_BOT_TOKEN") and _get(env, "TELEGRAM_CHAT_ID"):
        try:
            chat_id = int(_get(env, "TELEGRAM_CHAT_ID"))
        except ValueError as exc:
            raise ValueError("TELEGRAM_CHAT_ID must be an integer chat id") from exc
        cfg = {
            "bot_token": _get(env, "TELEGRAM_BOT_TOKEN"),
            "chat_id": chat_id,
            "send_resolved": True,
            "parse_mode": "",
            "message": _TELEGRAM_MESSAGE,
        }
        if _get(env, "TELEGRAM_API_URL"):
            cfg["api_url"] = _get(env, "TELEGRAM_API_URL")
        out.append({"name": "telegram", "telegram_configs": [cfg]})
    if _get(env, "SMTP_SMARTHOST") and _get(env, "ALERT_EMAIL_TO") and _get(env, "SMTP_FROM"):
        cfg = {
            "to": _get(env, "ALERT_EMAIL_TO"),
            "from": _get(env, "SMTP_FROM"),
            "smarthost": _get(env, "SMTP_SMARTHOST"),
            "send_resolved": True,
            "require_tls": _get(env, "SMTP_REQUIRE_TLS").lower() not in ("0", "false", "no"),
        }
        if _get(env, "SMTP_USERNAME"):
            cfg["auth_username"] = _get(env, "SMTP_USERNAME")
            cfg["auth_password"] = _get(env, "SMTP_PASSWORD")
        out.append({"name": "email", "email_configs": [cfg]})
    url = webhook_url or _get(env, "ALERT_WEBHOOK_URL")
    if url:
        out.append({"name": "webhook", "webhook_configs": [{"url": url, "send_resolved": True}]})
    return out


def render_alertmanager_config(
    env: Mapping[str, str] | None = None,
    webhook_url: str | None = None,
    group_wait: str | None = None,
    group_interval: str | None = None,
    repeat_interval: str | None = None,
    resolve_timeout: str | None = None,
) -> dict[str, Any]:
    """The config dict: a blackhole root route, one ``continue: true`` child per receiver."""
    env = os.environ if env is None else env
    receivers = _receivers(env, webhook_url)
    return {
        "global": {
            "resolve_timeout": resolve_timeout or _get(env, "ALERT_RESOLVE_TIMEOUT") or "5m"
        },
        "route": {
            "receiver": "blackhole",
            "group_by": ["alertname", "model"],
            "group_wait": group_wait or _get(env, "ALERT_GROUP_WAIT") or "30s",
            "group_interval": group_interval or _get(env, "ALERT_GROUP_INTERVAL") or "5m",
            "repeat_interval": repeat_interval or _get(env, "ALERT_REPEAT_INTERVAL") or "4h",
            "routes": [{"receiver": r["name"], "continue": True} for r in receivers],
        },
        "inhibit_rules": [
            {
                # a dead server explains every other serving alert: page once; but not the
                # launcher giving up, which stops the server and is the alert to act on
                "source_matchers": ['alertname="AslTritonDown"'],
                "target_matchers": [
                    'alertname=~"Asl.+"',
                    'alertname!="AslTritonDown"',
                    'alertname!="AslServerGaveUp"',
                ],
            },
            {
                "source_matchers": ['alertname="AslServerGaveUp"'],
                "target_matchers": ['alertname=~"Asl.+"', 'alertname!="AslServerGaveUp"'],
            },
        ],
        "receivers": [{"name": "blackhole"}, *receivers],
    }


def dumps(config: Mapping[str, Any]) -> str:
    """YAML when PyYAML is importable, else JSON (which is valid YAML)."""
    try:
        import yaml
    except ImportError:
        return json.dumps(config, indent=2) + "\n"
    return yaml.safe_dump(dict(config), sort_keys=False, width=1000)


def write_private(path: str | Path, text: str) -> Path:
    """Create/replace a file readable by its owner only (it may hold webhook URLs and tokens).

    The temporary file is created exclusively (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 600) under a
    fresh random name, so a symlink planted at a predictable ``<out>.tmp`` is never followed;
    a symlink at the final path is refused rather than replaced.
    """
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symlink; refusing to write secrets through it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp: os.open(O_RDWR|O_CREAT|O_EXCL|O_NOFOLLOW, 0o600) with a random name
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_alertmanager_config(path: str | Path, **kwargs: Any) -> Path:
    return write_private(path, dumps(render_alertmanager_config(**kwargs)))


DESCRIPTION = (
    "Write alertmanager.yml (mode 600) from SLACK_*/TELEGRAM_*/SMTP_*/ALERT_* environment "
    "variables. Prints only which receivers are enabled."
)


@dataclass(frozen=True)
class AlertmanagerConfigOptions:
    """Where the file goes, an extra receiver, and who owns it."""

    out: str = option("", "output file, e.g. /etc/alertmanager/a.yml", required=True)
    webhook_url: str | None = option(None, "extra generic webhook receiver")
    chown: str | None = option(
        None,
        "owner of the written file (the alertmanager image runs as 65534:65534)",
        metavar="UID:GID",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`AlertmanagerConfigOptions`."""
    return build_options_parser(AlertmanagerConfigOptions, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        options = from_mapping(AlertmanagerConfigOptions, vars(parser.parse_args(argv)))
    except OptionError as exc:
        parser.error(str(exc))
    if missing(options):
        parser.error(f"the following arguments are required: {', '.join(missing(options))}")
    path = write_alertmanager_config(options.out, webhook_url=options.webhook_url)
    if options.chown:
        uid, _, gid = options.chown.partition(":")
        os.chown(path, int(uid), int(gid or uid))
    names = enabled_receivers() + (["webhook"] if options.webhook_url else [])
    print(f"wrote {options.out}; receivers: {', '.join(sorted(set(names))) or 'none (blackhole)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
