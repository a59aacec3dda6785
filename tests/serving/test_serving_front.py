"""The launcher's public HTTP front (issue 19.2) and its crash clean-up (19.18), real processes.

One launcher CLI (``python -m asl_recognition.serving.launcher``) per test module serves model
a on free loopback ports; Triton's own HTTP port is behind the front. Clients use their own
loopback source addresses (127.0.0.x) so each test has its own rate bucket.
"""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from asl_testkit.cli import cli_process
from asl_testkit.tiny_models import load_images

from asl_recognition.netutil import free_port
from asl_recognition.serving.leftovers import remove_orphaned_regions, remove_shm_regions
from asl_recognition.serving.limits import MIB, TokenBuckets
from asl_recognition.serving.repository import build_repository

pytestmark = pytest.mark.server
CAP = 4 * MIB
SHM = Path("/dev/shm")


class Served:
    def __init__(self, proc, http: int, triton_http: int) -> None:
        self.proc, self.http, self.triton_http = proc, http, triton_http

    def regions(self) -> set[str]:
        """This launcher's Python-backend regions (its prefix carries the launcher's pid)."""
        return {p.name for p in SHM.glob(f"asl_triton_{self.proc.pid}_*")}

    def triton_pid(self) -> int:
        """The tritonserver child of the launcher (read from /proc)."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid and name == "tritonserver":
                return int(stat.parent.name)
        raise AssertionError("no tritonserver under the launcher")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders()}
    finally:
        conn.close()


def wait_ready(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/v2/health/ready", source="127.0.0.9")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not ready on {port}")


def launch(tmp_path: Path, tiny_models, *options: str):
    a = tiny_models["a"]
    if not (tmp_path / "repo").is_dir():
        build_repository(a.onnx, a.classes, tmp_path / "repo")
    http, triton_http = free_port(), free_port()
    args = ["--repo", tmp_path / "repo", "--http-port", http, "--grpc-port", free_port()]
    args += ["--metrics-port", free_port(), "--triton-http-port", triton_http]
    args += ["--log-path", tmp_path / "triton.log", "--exit-timeout", "2", *options]
    return cli_process("asl_recognition.serving.launcher", *args), http, triton_http


@pytest.fixture(scope="module")
def served(tiny_models, tmp_path_factory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("front")
    options = (
        "--max-body-bytes",
        str(CAP),
        "--rate",
        "5",
        "--burst",
        "5",
        "--header-timeout",
        "2",
    )
    options += ("--restart-backoff", "0.2")
    context, http, triton_http = launch(tmp, tiny_models, *options)
    with context as proc:
        line = proc.stdout.readline()
        assert line.startswith("tritonserver ready"), line + proc.stderr.read()
        yield Served(proc, http, triton_http)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0


def infer_body(batch: np.ndarray) -> bytes:
    """A JSON infer request for model a (pixels in)."""
    inputs = [{"name": "images", "shape": list(batch.shape), "datatype": "UINT8"}]
    inputs[0]["data"] = batch.flatten().tolist()
    return json.dumps({"inputs": inputs}).encode()


def test_triton_itself_listens_on_loopback_only_behind_the_front(served) -> None:
    status, body, _ = request(served.http, "GET", "/healthz", source="127.0.0.2")
    assert status == 200 and body == b"ok\n"
    with socket.socket() as probe:  # Triton's own port: no address but 127.0.0.1
        assert probe.connect_ex(("127.0.0.2", served.triton_http)) != 0


def test_a_normal_request_gets_its_answer_through_the_front(served) -> None:
    batch = np.ascontiguousarray(load_images(["A"], 32, per_class=2)[0])
    status, body, _ = request(
        served.http, "POST", "/v2/models/asl/infer", infer_body(batch), "127.0.0.3"
    )
    assert status == 200, body
    outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, 29]


def test_only_the_inference_api_passes_the_front(served) -> None:
    """Triton's admin API stays on loopback: registering a client-named ``/dev/shm`` file made
    root's tritonserver write model outputs into it; logging and model control likewise. One
    client address per part: each has a burst of 5."""
    source = "127.0.0.20"
    for method, path, body in (
        ("POST", "/v2/systemsharedmemory/region/r1/register", b'{"key": "/x", "byte_size": 8}'),
        ("GET", "/v2/systemsharedmemory/status", b""),
        ("POST", "/v2/logging", b'{"log_verbose_level": 5}'),
        ("POST", "/v2/repository/models/asl/unload", b"{}"),
        ("GET", "/v2/trace/setting", b""),
    ):
        status, answer, _ = request(served.http, method, path, body, source)
        assert status == 404, (path, answer)
        assert "not served here" in json.loads(answer)["error"], answer
    for path in ("/v2/health/live", "/v2/models/asl", "/v2/models/asl/config"):
        assert request(served.http, "GET", path, source="127.0.0.22")[0] == 200, path
    batch = np.ascontiguousarray(load_images(["A"], 32, per_class=1)[0])
    request_json = json.loads(infer_body(batch))
    request_json["outputs"] = [
        {"name": "probabilities", "parameters": {"shared_memory_region": "r1"}}
    ]
    status, answer, _ = request(
        served.http,
        "POST",
        "/v2/models/asl/infer",
        json.dumps(request_json).encode(),
        "127.0.0.23",
    )
    assert status == 400 and "shared-memory" in json.loads(answer)["error"], answer


def test_a_request_nested_deep_enough_to_crash_triton_is_refused(served) -> None:
    """400 KB of ``[`` crashed tritonserver 2.51 (SIGSEGV); six in a row made the launcher give
    up for good. Refused before forwarding: the same server answers the next request."""
    pid = served.triton_pid()
    status, answer, _ = request(served.http, "POST", "/v2/models/asl/infer", b"[" * 400_000,
                                "127.0.0.21")  # fmt: skip
    assert status == 400 and "nests deeper than" in json.loads(answer)["error"], answer
    batch = np.ascontiguousarray(load_images(["A"], 32, per_class=1)[0])
    status, answer, _ = request(
        served.http, "POST", "/v2/models/asl/infer", infer_body(batch), "127.0.0.21"
    )
    assert status == 200, answer
    assert served.triton_pid() == pid  # not restarted


def test_a_json_length_given_twice_cannot_hide_a_crashing_nest(served) -> None:
    """The front checked the first ``Inference-Header-Content-Length`` and forwarded the last:
    a 10-byte head passed, then Triton parsed 400 KB of ``[`` and crashed (SIGSEGV; six such
    requests in 41 s and the launcher gave up for good). Now 400 before forwarding, as for a
    length that is not plain digits; the same server answers the next request."""
    pid = served.triton_pid()
    body = b'{"a": ' + b"[" * 400_000
    for lengths in (["10", str(len(body))], ["+10"]):
        conn = http.client.HTTPConnection(
            "127.0.0.1", served.http, timeout=30, source_address=("127.0.0.27", 0)
        )
        conn.putrequest("POST", "/v2/models/asl/infer")
        for length in lengths:
            conn.putheader("Inference-Header-Content-Length", length)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        status, text = answer.status, answer.read()
        conn.close()
        assert status == 400 and b"must be given once" in text, (lengths, status, text)
    batch = np.ascontiguousarray(load_images(["A"], 32, per_class=1)[0])
    status, answer, _ = request(
        served.http, "POST", "/v2/models/asl/infer", infer_body(batch), "127.0.0.27"
    )
    assert status == 200, answer
    assert served.triton_pid() == pid  # not restarted


def test_a_compressed_body_is_refused_before_triton_inflates_it(served) -> None:
    """Triton inflates a gzip or deflate body itself, without bound, after the front had checked
    only the compressed bytes: the deep JSON above gzips to under 1 KB and crashed it (SIGSEGV),
    and 1 MiB of gzip took it to 2 GB. Now 415; the same server answers the next request."""
    pid = served.triton_pid()
    deep = gzip.compress(b"[" * 400_000)
    assert len(deep) < 2000
    for encoding in ("gzip", "deflate", "GZIP, identity"):
        status, answer, _ = request(served.http, "POST", "/v2/models/asl/infer", deep,
                                    "127.0.0.24", {"Content-Encoding": encoding})  # fmt: skip
        assert status == 415, (encoding, answer)
        assert "send them uncompressed" in json.loads(answer)["error"], answer
    batch = np.ascontiguousarray(load_images(["A"], 32, per_class=1)[0])
    status, answer, _ = request(served.http, "POST", "/v2/models/asl/infer", infer_body(batch),
                                "127.0.0.24", {"Content-Encoding": "identity"})  # fmt: skip
    assert status == 200, answer
    assert served.triton_pid() == pid  # not restarted


def test_the_ensembles_steps_take_no_inference_through_the_front(served) -> None:
    """Anyone reaching the public port called ``asl_metrics`` itself, counting made-up
    predictions in the production metrics the alerts read. Metadata stays readable."""
    batch = np.ascontiguousarray(load_images(["A"], 32, per_class=1)[0])
    for path in ("/v2/models/asl_metrics/infer", "/v2/models/asl_onnx/versions/1/infer"):
        status, answer, _ = request(served.http, "POST", path, infer_body(batch), "127.0.0.25")
        assert status == 404, (path, answer)
        assert "a step of an ensemble" in json.loads(answer)["error"], answer
    for path in ("/v2/models/asl_metrics/config", "/v2/models/asl_onnx/config"):
        assert request(served.http, "GET", path, source="127.0.0.25")[0] == 200, path


def test_shared_memory_spelt_with_json_escapes_is_refused(served) -> None:
    """Triton's parser decodes ``\\u`` escapes in keys: ``shared\\u005fmemory_region`` passed
    the front's byte search and Triton looked the region up."""
    batch = np.ascontiguousarray(load_images(["A"], 32, per_class=1)[0])
    body = infer_body(batch)[:-1] + b', "outputs": [{"name": "probabilities", "parameters": '
    body += b'{"shared\\u005fmemory_region": "r1"}}]}'
    json.loads(body)  # valid JSON, the key decoded
    status, answer, _ = request(served.http, "POST", "/v2/models/asl/infer", body, "127.0.0.26")
    assert status == 400 and "shared-memory" in json.loads(answer)["error"], answer


def test_a_connection_that_never_finishes_its_headers_is_closed(served) -> None:
    """64 such sockets held every connection slot (503 for everyone) for as long as they
    stayed open; now each is closed once --header-timeout (2 s here) has passed."""
    for sent in (b"", b"GET /v2 HTTP/1.1\r\nHost: x\r\n"):
        with socket.create_connection(("127.0.0.1", served.http), timeout=15) as sock:
            sock.sendall(sent)
            start = time.monotonic()
            assert sock.recv(1) == b""  # closed by the front; before: held open (a timeout)
            assert time.monotonic() - start < 12
    conn = http.client.HTTPConnection("127.0.0.1", served.http, source_address=("127.0.0.24", 0))
    try:  # a kept-alive connection still carries its next request
        for _ in range(2):
            conn.request("GET", "/v2/health/live")
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200
    finally:
        conn.close()


def test_a_body_over_the_cap_gets_413_and_tritonserver_does_not_grow(served) -> None:
    """1 GiB declared, 8 MiB sent: refused by Content-Length; then a chunked body past the cap."""
    pid = served.triton_pid()
    before = rss_kib(pid)
    conn = http.client.HTTPConnection("127.0.0.1", served.http, timeout=30)
    conn.putrequest("POST", "/v2/models/asl/infer")
    conn.putheader("Content-Length", str(1 << 30))
    conn.endheaders()
    try:
        conn.send(b"x" * (8 * MIB))
    except OSError:  # the front may close before all of it is taken
        pass
    answer = conn.getresponse()
    assert answer.status == 413
    assert f"the limit is {CAP} bytes" in json.loads(answer.read())["error"]
    conn.close()
    chunked = socket.create_connection(("127.0.0.1", served.http), timeout=30)
    chunked.sendall(b"POST /v2/models/asl/infer HTTP/1.1\r\nHost: x\r\n")
    chunked.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % MIB + b"y" * MIB + b"\r\n"
    try:
        for _ in range(CAP // MIB + 2):
            chunked.sendall(chunk)
    except OSError:
        pass
    head = chunked.recv(4096)
    chunked.close()
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert rss_kib(pid) - before < 20 * 1024, (before, rss_kib(pid))


def test_a_flood_from_one_client_gets_429s_and_others_are_still_served(served) -> None:
    answers = [
        request(served.http, "GET", "/v2/health/ready", source="127.0.0.4") for _ in range(30)
    ]
    codes = [status for status, _, _ in answers]
    assert codes[:5] == [200] * 5 and codes.count(429) >= 20, codes
    refused = next(a for a in answers if a[0] == 429)
    assert int(refused[2]["retry-after"]) >= 1
    assert "too many requests from 127.0.0.4" in json.loads(refused[1])["error"]
    assert request(served.http, "GET", "/v2/health/ready", source="127.0.0.5")[0] == 200


def test_token_buckets_refill_at_the_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=2)
    assert [buckets.take("c", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert buckets.take("c", now=0.5) == 0.0 and buckets.take("other", now=0.5) == 0.0


def test_a_killed_server_leaves_no_shared_memory_after_the_restart(served) -> None:
    """kill -9 of tritonserver: its stubs' regions are removed before the new server starts."""
    old = served.regions()
    assert old, "the server's Python-backend regions carry the launcher's prefix"
    served.triton_pid()  # it is there
    import os

    os.kill(served.triton_pid(), signal.SIGKILL)
    time.sleep(1.0)
    wait_ready(served.http)
    assert not old & served.regions(), sorted(old & served.regions())
    assert served.regions(), "the new server has its own regions"


def test_remove_shm_regions_touches_only_its_prefix(tmp_path) -> None:
    for name in ("asl_triton_1_aa_x", "asl_triton_1_aa_y", "asl_triton_1_ab_x", "other"):
        (tmp_path / name).write_bytes(b"")
    assert remove_shm_regions("asl_triton_1_aa_", tmp_path) == [
        "asl_triton_1_aa_x",
        "asl_triton_1_aa_y",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asl_triton_1_ab_x", "other"]


def test_regions_of_a_launcher_killed_with_sigkill_are_swept_unless_mapped(tmp_path) -> None:
    """A launcher killed with -9 cannot clean up: the next one removes regions whose launcher
    pid is dead and that no process maps; a live launcher's and a mapped one stay."""
    import mmap
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = int(gone.stdout)
    names = [f"asl_triton_{dead}_aa_x", f"asl_triton_{dead}_aa_mapped", "asl_triton_1_bb_x"]
    for name in names:
        (tmp_path / name).write_bytes(b"\0" * 4096)
    with open(tmp_path / names[1], "r+b") as handle, mmap.mmap(handle.fileno(), 4096):
        assert remove_orphaned_regions(tmp_path) == [names[0]]  # pid 1 lives; one is mapped
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def test_giving_up_is_said_by_the_front_and_its_metrics(tiny_models, tmp_path) -> None:
    """No restart allowed: after one crash the front answers 503 with the reason until stopped."""
    context, http, _ = launch(tmp_path, tiny_models, "--max-restarts", "0")
    with context as proc:
        assert proc.stdout.readline().startswith("tritonserver ready")
        served = Served(proc, http, 0)
        import os

        os.kill(served.triton_pid(), signal.SIGKILL)
        deadline = time.monotonic() + 30
        status, body = 0, b""
        while time.monotonic() < deadline and b"stopped restarting it" not in body:
            status, body, _ = request(http, "GET", "/healthz")
            time.sleep(0.3)
        assert status == 503 and b"stopped restarting it" in body, body
        status, body, _ = request(http, "POST", "/v2/models/asl/infer", b"{}")
        assert status == 503 and "died once in a row" in json.loads(body)["error"]
        metrics = request(http, "GET", "/metrics")[1].decode()
        assert "asl_server_gave_up 1" in metrics
        assert proc.poll() is None and not served.regions()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 1
    assert "the front answers 503 until stopped" in proc.stderr.read()
