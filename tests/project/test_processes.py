"""The one way children are started, waited for and stopped (asl_recognition.processes).

Every case runs real child processes (this interpreter with a small script) on loopback.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from asl_testkit.cli import child_pids

from asl_recognition.child_output import Output
from asl_recognition.locks import FileLock, LockTimeout, exclusive
from asl_recognition.netutil import free_port
from asl_recognition.processes import Child, ChildError, describe_exit, http_ready
from asl_recognition.stop_signals import StopFlag, handle_stop_signals
from asl_recognition.supervision import RestartPolicy, supervise, supervised


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def wait_for_log(path: Path, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    child = Child(
        python("""
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ignoring SIGTERM", flush=True)
            time.sleep(60)
        """),
        Output(log),
        name="stubborn",
        grace=0.5,
    ).start()
    wait_for_log(log, "ignoring SIGTERM")
    pid = child.process.pid
    started = time.monotonic()
    assert child.stop() == -signal.SIGKILL
    took = time.monotonic() - started
    assert 0.5 <= took < 5, took
    assert gone(pid) and child.process is None and not child.running()
    assert describe_exit(child.returncode) == "signal SIGKILL"
    assert child.stop() == -signal.SIGKILL  # stopping again reports the same end


def test_stop_reaches_a_grandchild_in_the_process_group(tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    child = Child(
        python("""
            import subprocess, sys, time
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            print(f"grandchild {grandchild.pid}", flush=True)
            time.sleep(60)
        """),
        Output(log),
    ).start()
    grandchild = int(wait_for_log(log, "grandchild ").split()[1])
    assert not gone(grandchild)
    assert child.stop() == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while not gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(grandchild), "the grandchild outlived its group's stop"


REPO = str(Path(__file__).resolve().parents[2])

# A runner starts a step (die_with_parent) that starts a grandchild in a session of its own,
# then waits; the test kills the runner with SIGKILL. Issue #19.6: the step lived on.
STEP = """
import os, subprocess, sys, time
sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
grandchild = subprocess.Popen(sleeper, start_new_session=True)
print(f"pids {os.getpid()} {grandchild.pid}", flush=True)
time.sleep(60)
"""
RUNNER = """
import sys, time
from pathlib import Path
sys.path.insert(0, REPO)
from asl_recognition.child_output import Output
from asl_recognition.processes import Child
step, log = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
child = Child([sys.executable, "-c", step], Output(log), die_with_parent=True).start()
time.sleep(60)
"""


def test_a_child_and_its_whole_tree_die_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    log, step, script = tmp_path / "step.log", tmp_path / "step.py", tmp_path / "runner.py"
    step.write_text(STEP)
    script.write_text(RUNNER.replace("REPO", repr(REPO)))
    runner = subprocess.Popen([sys.executable, str(script), str(step), str(log)])
    pids: list[int] = []
    try:
        pids = [int(p) for p in wait_for_log(log, "pids ").split()[1:3]]
        assert not any(gone(pid) for pid in pids)
        runner.kill()
        runner.wait(timeout=10)
        deadline = time.monotonic() + 5
        while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(gone(pid) for pid in pids), "the step or its grandchild outlived the runner"
    finally:
        runner.kill()
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_guarded_child_exits_as_its_command_did_and_holds_passed_locks(tmp_path: Path) -> None:
    """Under the reaper an exit code, a death by signal and a stop read as they do without it;
    a lock passed to the child stays held while it lives, and is free once it is stopped."""
    out = Output(tmp_path / "out.log")
    assert Child(python("import sys; sys.exit(3)"), out, die_with_parent=True).start().wait() == 3
    suicide = python("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert Child(suicide, out, die_with_parent=True).start().wait() == -signal.SIGTERM
    missing = Child(["/no/such/program"], out, die_with_parent=True).start()
    assert missing.wait() == 127 and "/no/such/program" in missing.last_output()

    lock = FileLock(tmp_path / "run.lock")
    assert lock.acquire()
    sleeper = python("print('up', flush=True); import time; time.sleep(60)")
    child = Child(
        sleeper, Output(tmp_path / "s.log"), die_with_parent=True, pass_fds=(lock.fileno(),)
    ).start()
    wait_for_log(tmp_path / "s.log", "up")
    lock.release()
    assert not FileLock(lock.path).acquire(timeout=0.2)  # the child holds it
    assert child.stop() == -signal.SIGTERM  # SIGTERM reached the command itself
    assert FileLock(lock.path).acquire(timeout=2)


def test_a_log_replaced_by_a_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    """A step's log turned into a symlink (to any file): the next run had opened it with
    O_TRUNC through the link and emptied the file it named (review)."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    log = tmp_path / "step" / "stdout.log"
    log.parent.mkdir()
    log.symlink_to(precious)
    assert Child(python("print('step output')"), Output(log)).start().wait() == 0
    assert precious.read_text() == "keep me\n"
    assert not log.is_symlink() and "step output" in log.read_text()


def test_a_file_lock_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        python(f"""
            import sys, time
            sys.path.insert(0, {REPO!r})
            from asl_recognition.locks import FileLock
            assert FileLock({str(path)!r}).acquire()
            print("held", flush=True)
            time.sleep(60)
        """),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockTimeout, match=f"held by pid {holder.pid}"):
            with exclusive(path, timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(path, timeout=2) as lock:
        assert lock.held


def test_a_finished_step_is_not_held_up_by_a_grandchild_keeping_its_output_open(
    tmp_path: Path,
) -> None:
    log = tmp_path / "step.log"
    step = Child(
        python("""
            import subprocess, sys
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            print(f"grandchild {grandchild.pid}; step done", flush=True)
        """),
        Output(log),
    ).start()
    started = time.monotonic()
    assert step.wait(drain=0.5) == 0
    assert time.monotonic() - started < 10
    grandchild = int(log.read_text().split()[1].rstrip(";"))
    deadline = time.monotonic() + 5
    while not gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(grandchild), "the step's leftover outlived the wait"


def test_readiness_timeout_and_early_exit_are_one_line_errors(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/ready"
    command = python("print('binding soon', flush=True); import time; time.sleep(60)")
    child = Child(command, Output(tmp_path / "slow.log"), name="slow", ready_url=url).start()
    try:
        with pytest.raises(ChildError) as timeout:
            child.wait_ready(1.0)
    finally:
        child.stop(grace=1)
    message = str(timeout.value)
    assert "\n" not in message and message.startswith("slow not ready after 1 s: ")
    assert sys.executable in message and "binding soon" in message, message
    # a stop asked for while waiting (SIGTERM) is said as such, not as a timeout
    child = Child(command, Output(tmp_path / "stopped.log"), name="slow", ready_url=url).start()
    try:
        with pytest.raises(ChildError, match="^slow stopped before it was ready: "):
            child.wait_ready(60.0, should_stop=lambda: True)
    finally:
        child.stop(grace=1)

    failing = Child(
        python("import sys; print('bad option --x', file=sys.stderr); sys.exit(2)"),
        Output(tmp_path / "out.log"),
        Output(tmp_path / "err.log"),
        ready_url=url,
    ).start()
    with pytest.raises(ChildError, match=r"exited with code 2: .*bad option --x$") as exited:
        failing.wait_ready(20)
    assert exited.value.code == 2 and failing.stop() == 2
    assert (tmp_path / "err.log").read_text() == "bad option --x\n"


def test_ready_on_http_then_refused_on_a_taken_port(tmp_path: Path) -> None:
    port = free_port()
    server = Child(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        Output(tmp_path / "http.log"),
        name="http.server",
        ready_url=f"http://127.0.0.1:{port}/",
        cwd=tmp_path,
    )
    try:
        assert server.start().wait_ready(20).running()
        second = Child(["true"], Output(tmp_path / "second.log"), ready_url=server.ready_url)
        with pytest.raises(ChildError, match="already answers; pick another port"):
            second.start()
        assert second.process is None
    finally:
        code = server.stop()
    assert describe_exit(code) == "signal SIGTERM"
    assert "GET / HTTP/1.1" in (tmp_path / "http.log").read_text()


def test_output_streams_as_it_arrives_and_redacts_whole_lines(tmp_path: Path) -> None:
    script = python("""
        import sys, time
        sys.stdout.write("50%\\r"); sys.stdout.flush(); time.sleep(0.2)
        sys.stdout.write("token=sek"); sys.stdout.flush(); time.sleep(0.2)
        sys.stdout.write("ret-9\\n100%\\n")
    """)
    console = io.StringIO()
    assert Child(script, Output(tmp_path / "raw.log", console)).start().wait() == 0
    assert (tmp_path / "raw.log").read_bytes().decode() == console.getvalue()
    assert console.getvalue() == "50%\rtoken=sekret-9\n100%\n"

    redacted = Output(tmp_path / "red.log", redact=lambda line: line.replace("sekret", "<x>"))
    child = Child(script, redacted).start()
    assert child.wait() == 0
    assert (tmp_path / "red.log").read_bytes() == b"50%\rtoken=<x>-9\n100%\n"
    assert (tmp_path / "red.log").stat().st_mode & 0o077 == 0


def test_supervise_restarts_with_backoff_then_gives_up(tmp_path: Path, caplog) -> None:
    child = Child(python("import time; time.sleep(0.3)"), Output(tmp_path / "svc.log"), name="svc")
    policy = RestartPolicy(max_restarts=2, base_delay=0.1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="asl_recognition.supervision"):
        code = supervise(child.start(), lambda: time.monotonic() - started > 20, policy, 5, "svc")
    assert code == 1 and time.monotonic() - started < 10
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(";")[1].strip() for m in messages[:-1] if "ready" not in m] == [
        "restart 1/2 in 0.1 s (log " + str(tmp_path / "svc.log") + ")",
        "restart 2/2 in 0.2 s (log " + str(tmp_path / "svc.log") + ")",
    ], messages
    assert messages[-1].startswith("error: svc exited with code 0 after 2 restarts in a row")
    assert not child.running()


def test_a_stop_landing_as_the_child_turns_ready_is_no_failure(tmp_path: Path) -> None:
    """The race the serving tests hit: SIGTERM arrives after the child answers ready but
    before the next 0.2 s poll sees it; the child was ready, so no "stopped before" error."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    serve = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    child = Child(serve, Output(tmp_path / "web.log"), name="web", ready_url=url).start()
    try:
        assert child.wait_ready(30.0, should_stop=lambda: http_ready(url)) is child
    finally:
        child.stop(grace=1)


def test_a_restart_a_stop_cuts_short_is_not_logged_as_failed(tmp_path: Path, caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}/never"  # the restarted child never turns ready
    log = tmp_path / "svc.log"
    child = Child(python("import time; time.sleep(60)"), Output(log), name="svc", ready_url=url)
    child.start()
    first = child.process.pid
    child.process.kill()

    def restarted() -> bool:  # the stop lands while the restart waits for readiness
        return child.process is not None and child.process.pid != first

    with caplog.at_level(logging.INFO, logger="asl_recognition.supervision"):
        try:
            assert supervise(child, restarted, RestartPolicy(base_delay=0.1), 60, "svc") == 0
        finally:
            child.stop(grace=1)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1] == "restart 1 left unfinished: asked to stop", messages
    assert not [m for m in messages if "failed" in m], messages


def test_stop_flag_is_set_by_sigterm_and_sigint() -> None:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            flag = StopFlag().install()
            assert not flag()
            os.kill(os.getpid(), sig)
            deadline = time.monotonic() + 5
            while not flag() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert flag() and flag.signal == sig
        mine = StopFlag().install()  # a handler already installed stays with keep_installed
        handle_stop_signals(lambda signum, frame: None, keep_installed=True)
        assert signal.getsignal(signal.SIGTERM) == mine._set
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_supervised_restarts_a_dead_child_while_the_block_runs(tmp_path: Path) -> None:
    child = Child(python("import time; time.sleep(60)"), Output(tmp_path / "svc.log"), name="svc")
    child.start()
    policy = RestartPolicy(max_restarts=2, base_delay=0.1)
    try:
        with supervised(child, "svc", policy=policy, ready_timeout=5) as supervision:
            first = child.process.pid
            child.process.kill()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                child.process is not None and child.process.pid != first and child.running()
            ):
                time.sleep(0.05)
            assert child.process.pid != first and child.running()
        assert not supervision.thread.is_alive() and not supervision.gave_up
    finally:
        child.stop()


def test_leaving_supervised_waits_for_the_supervisor_through_a_second_ctrl_c() -> None:
    """A stand-in thread (not a real one) whose first join a Ctrl-C cuts short: the exit joins
    again, so the caller never stops the service beside a restart, then re-raises the Ctrl-C."""
    import threading

    from asl_recognition.supervision import _stop_and_join

    class InterruptedThread:
        joins, alive = 0, True

        def is_alive(self) -> bool:
            return self.alive

        def join(self) -> None:
            self.joins += 1
            if self.joins == 1:
                raise KeyboardInterrupt
            self.alive = False

    stop, thread = threading.Event(), InterruptedThread()
    with pytest.raises(KeyboardInterrupt):
        _stop_and_join(stop, thread)  # type: ignore[arg-type]
    assert stop.is_set() and thread.joins == 2 and not thread.alive


@pytest.mark.parametrize("failure", ["keeps exiting", "program vanishes"])
def test_supervised_gives_up_and_calls_back(tmp_path: Path, failure: str) -> None:
    """Restarts that run out (a child that keeps exiting), or a restart that raises (its program
    vanished: not a ChildError): ``gave_up`` is set and the callback (the live page stopping
    itself) runs while the block is still open, instead of the supervisor dying silently."""
    import threading

    script = tmp_path / "svc.sh"
    script.write_text("#!/bin/sh\nsleep 0.3\n")
    script.chmod(0o755)
    child = Child([str(script)], Output(tmp_path / "svc.log"), name="svc")
    called = threading.Event()
    policy = RestartPolicy(max_restarts=1 if failure == "keeps exiting" else 3, base_delay=0.1)
    try:
        with supervised(
            child.start(), "svc", policy=policy, ready_timeout=5, on_give_up=called.set
        ) as supervision:
            if failure == "program vanishes":
                script.unlink()
            assert called.wait(20)
        assert supervision.gave_up and not supervision.thread.is_alive()
    finally:
        child.stop()


def _wait_gone(pids: list[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return all(gone(pid) for pid in pids)


def test_what_a_killed_command_left_running_dies_with_the_reaper(tmp_path: Path) -> None:
    """A step killed with SIGKILL (the OOM killer) left its pool's workers re-parented to the
    reaper, which exited like the step and left them to init, alive for ever. One in a session
    of its own, so no process-group kill reaches it."""
    from asl_recognition import reaper

    command = python("""
        import os, subprocess, sys
        left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                start_new_session=True)
        print(left.pid, flush=True)
        os.kill(os.getpid(), 9)
    """)
    guard = subprocess.run(
        [sys.executable, "-I", "-S", reaper.__file__, str(os.getpid()), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert guard.returncode == -signal.SIGKILL, guard.stderr
    left = int(guard.stdout.split()[0])
    try:
        assert _wait_gone([left]), "the killed command's child outlived the reaper"
    finally:
        if not gone(left):
            os.kill(left, signal.SIGKILL)


def test_a_pools_workers_die_with_a_step_killed_by_sigkill(tmp_path: Path) -> None:
    """Steps on an agent run without the reaper: their spawn pool's workers had lived on."""
    step = subprocess.Popen(python(f"""
            import sys, time
            sys.path.insert(0, {REPO!r})
            from asl_recognition.workers import run_pool
            run_pool(time.sleep, [60] * 8, workers=2, progress=False)  # two chunks of four
        """))
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = [
                p for p in child_pids(step.pid, live_only=True) if b"spawn_main" in _cmdline(p)
            ]
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, workers
        step.kill()
        step.wait(timeout=10)
        assert _wait_gone(workers), "the pool's workers outlived their step"
    finally:
        step.kill()
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_free_ports_are_drawn_below_the_range_outgoing_connections_use(monkeypatch) -> None:
    """An ephemeral port can become a client's source port before a server binds it (a CI
    launcher once failed to start that way); ports below the range only listeners take."""
    from asl_recognition import netutil

    low = netutil.ephemeral_low()
    ports = {free_port() for _ in range(20)}
    assert all(max(1024, low - netutil.PORTS_BELOW_EPHEMERAL) <= p < low for p in ports), ports
    assert len(ports) > 1  # drawn, not one fixed port every worker would share
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        monkeypatch.setattr(netutil, "ephemeral_low", lambda: taken.getsockname()[1] + 1)
        monkeypatch.setattr(netutil, "PORTS_BELOW_EPHEMERAL", 1)  # only the taken one is left
        assert free_port() != taken.getsockname()[1]  # the kernel's choice instead


def test_free_ports_are_distinct_when_draws_repeat(monkeypatch) -> None:
    """Three independent draws had once given gRPC and metrics one port (the bench's Triton
    then refused to start); the draws here are forced to repeat."""
    from asl_recognition import netutil

    draws = iter([20001, 20001, 20001, 20002, 20002, 20003])
    monkeypatch.setattr(netutil, "free_port", lambda host="127.0.0.1": next(draws))
    assert netutil.free_ports(3) == [20001, 20002, 20003]
