"""Loopback port helper shared by the launchers, the demo, the benches and the tests, and the
open-files limit a server's process starts with."""

from __future__ import annotations

import random
import resource
import socket
from pathlib import Path

# Linux's default when /proc does not say (net.ipv4.ip_local_port_range = 32768 60999).
DEFAULT_EPHEMERAL_LOW = 32768
PORTS_BELOW_EPHEMERAL = 12000
MOST_OPEN_FILES = 1 << 20  # the kernel's usual fs.nr_open, for an unlimited hard limit


def ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The lowest port the kernel hands out for bind(0) and outgoing connections."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, drawn below the kernel's ephemeral range.

    A port from bind(0) is an ephemeral one: any process's next outgoing connection may take it
    as its source port before the caller's server binds it (a busy test run makes thousands).
    Drawn below that range, only another listener can take it, and servers started on a taken
    port fail loudly (address in use) rather than silently talking to something else.
    """
    high = ephemeral_low()
    low = max(1024, high - PORTS_BELOW_EPHEMERAL)
    draw = random.SystemRandom()
    for _ in range(200):
        port = draw.randrange(low, high) if high > low else 0
        if port and not port_in_use(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below: the kernel's
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports: independent draws of :func:`free_port` can repeat (three
    of 12,000 ports: one server start in 4,000 had gRPC and metrics on one port, and failed)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding ``host:port`` fails now (something listens, or it is reserved)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard one; returns the soft limit.

    Children inherit it: each idle connection to one of tritonserver's ports holds a descriptor
    for good (its metrics port has no idle timeout), and at a desktop's soft limit of 1,024 a
    thousand of them left it unable to open its repository, so poll mode unloaded every model.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MOST_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # over fs.nr_open: the limit stays as it was
            pass
    return soft
