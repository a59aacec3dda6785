"""Triton's admin protocols behind a key, on its own HTTP and gRPC ports.

The front (:mod:`.front`) already answers 404 for Triton's admin API over HTTP, but gRPC has no
front: anyone who reaches the gRPC port (loopback, the compose network) could otherwise register
shared-memory regions, read the trace settings, or turn verbose logging on (checked on the real
tritonserver 2.51: ``update_log_settings({"log_verbose_level": 5})`` succeeded from a client).
Triton restricts protocol groups itself (``--grpc-restricted-protocol``,
``--http-restricted-api``): a restricted call without the header is refused with "This protocol
is restricted". Inference, health, metadata, model config and statistics stay open; so does the
repository index in the modes that the project serves in (poll, none), which refuse load and
unload anyway; in ``explicit`` mode (or any spelling not known to be poll or none) the
repository protocol, index included, needs the key too.

The key comes from ``ASL_TRITON_ADMIN_KEY``; without it each start draws a random one that is
never shown, which closes the admin protocols. Send it as the header ``asl-admin-key`` (HTTP) or
``triton-grpc-protocol-asl-admin-key`` (gRPC metadata). Triton takes the key only on its command
line, so local users who can read the server's ``/proc/<pid>/cmdline`` can read it too.

The standard library only, on Python 3.10 (the Triton image's interpreter): the server image
starts tritonserver through this module (``triton/server/entrypoint.sh``)::

    python3 -m asl_recognition.serving.admin_api tritonserver [tritonserver arguments...]
"""

from __future__ import annotations

import os
import re
import secrets
import sys

from asl_recognition.netutil import raise_open_files_limit

KEY_ENV = "ASL_TRITON_ADMIN_KEY"
HEADER = "asl-admin-key"
GRPC_HEADER = f"triton-grpc-protocol-{HEADER}"  # how Triton names it in gRPC metadata
ALWAYS_RESTRICTED = ("shared-memory", "trace", "logging")
MODE_FLAG = "--model-control-mode"
OWN_FLAGS = ("--http-restricted-api", "--grpc-restricted-protocol")
# the shortest abbreviation tritonserver 2.51 takes for each (``--model-con`` is also config-)
_SHORTEST = {
    MODE_FLAG: "--model-cont",
    "--model-repository": "--model-r",
    "--model-store": "--model-s",
    "--http-restricted-api": "--http-r",
    "--grpc-restricted-protocol": "--grpc-r",
}
_KEY_FORMAT = re.compile(r"[A-Za-z0-9_.~-]{16,128}")  # Triton splits its flag at , : and =


class AdminKeyError(ValueError):
    """``ASL_TRITON_ADMIN_KEY`` is set to something Triton's flag cannot carry, or too short."""


def admin_key(environ: dict[str, str] | None = None) -> str:
    """The key from ``ASL_TRITON_ADMIN_KEY``, or a random one that nobody is told."""
    value = (os.environ if environ is None else environ).get(KEY_ENV, "")
    if not value:
        return secrets.token_urlsafe(32)
    if not _KEY_FORMAT.fullmatch(value):
        raise AdminKeyError(
            f"{KEY_ENV} must be 16-128 characters of A-Z a-z 0-9 _ . ~ - "
            f"(it is {len(value)} characters; its value is not shown)"
        )
    return value


def restricted_groups(model_control_mode: str) -> tuple[str, ...]:
    """The protocol groups that need the key; load and unload too unless the mode refuses them
    (poll, none): an unknown spelling counts as ``explicit``, so the check fails closed."""
    if model_control_mode.lower() in ("poll", "none"):
        return ALWAYS_RESTRICTED
    return ALWAYS_RESTRICTED + ("model-repository",)


def restriction_args(model_control_mode: str, key: str) -> list[str]:
    """tritonserver's two flags that put ``restricted_groups`` behind ``key``, on HTTP and gRPC."""
    groups = ",".join(restricted_groups(model_control_mode))
    return [
        f"--http-restricted-api={groups}:{HEADER}={key}",
        f"--grpc-restricted-protocol={groups}:{HEADER}={key}",
    ]


def _names(arg: str, flag: str) -> bool:
    """True when ``arg`` is ``flag`` as tritonserver's getopt_long reads it: the whole name or
    an unambiguous abbreviation of it, with or without ``=value``."""
    given = arg.split("=", 1)[0]
    return len(given) >= len(_SHORTEST[flag]) and flag.startswith(given)


def flag_values(args: list[str], *flags: str) -> list[str]:
    """The values given to any of ``flags`` in tritonserver's arguments, in order, each
    spelled as its getopt_long reads it (``--flag=value``, ``--flag value``, abbreviated)."""
    values = []
    for index, arg in enumerate(args):
        if any(_names(arg, flag) for flag in flags):
            if "=" in arg:
                values.append(arg.split("=", 1)[1])
            elif index + 1 < len(args):
                values.append(args[index + 1])
    return values


def _control_mode(args: list[str]) -> str:
    """The last ``--model-control-mode`` in tritonserver's arguments (Triton's default: none)."""
    return (["none"] + flag_values(args, MODE_FLAG))[-1]


def refused_flag(args: list[str], flags: tuple[str, ...] = OWN_FLAGS) -> str | None:
    """The first argument that sets one of ``flags`` (by default the restricted-API flags, which
    this module owns), or None."""
    return next((arg for arg in args if any(_names(arg, flag) for flag in flags)), None)


def main(argv: list[str] | None = None) -> int:
    """Replace this process by ``argv[0]`` (tritonserver) with its arguments and the two flags."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(
            "usage: python3 -m asl_recognition.serving.admin_api TRITONSERVER [ARGS...]",
            file=sys.stderr,
        )
        return 2
    own = refused_flag(argv[1:])
    if own:
        print(
            f"admin_api: {own.split('=', 1)[0]} is set here, from {KEY_ENV}; leave it out",
            file=sys.stderr,
        )
        return 2
    try:
        key = admin_key()
    except AdminKeyError as exc:
        print(f"admin_api: {exc}", file=sys.stderr)
        return 2
    server, args = argv[0], argv[1:]
    raise_open_files_limit()  # as TritonServer.start: idle connections must not starve it
    env = {name: value for name, value in os.environ.items() if name != KEY_ENV}
    env.pop("PYTHONPATH", None)  # set by the entrypoint for this module only
    os.execvpe(server, [server, *args, *restriction_args(_control_mode(args), key)], env)
    return 1  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
