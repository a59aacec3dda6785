"""Headless Debian chromium driven over the DevTools protocol, through a pipe (no websocket
library, no downloaded browser): ``--remote-debugging-pipe`` reads commands on fd 3 and writes
answers on fd 4, one JSON message per NUL-terminated chunk.

The fake camera (``--use-fake-device-for-media-stream --use-file-for-fake-video-capture``) plays
a Y4M file, made by :func:`write_y4m` from real photos, to ``getUserMedia``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image


def find_chromium() -> str | None:
    from asl_recognition.monitoring.tools import find_tool

    return find_tool("chromium") or shutil.which("chromium-browser")


def yuv420(photo: Path, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo squared to ``side`` px as a camera gives it: Y, then Cb and Cr at half size."""
    with Image.open(photo) as img:
        ycbcr = img.convert("RGB").resize((side, side), Image.BILINEAR).convert("YCbCr")
    y, cb, cr = ycbcr.split()
    half = (side // 2, side // 2)
    return np.asarray(y), np.asarray(cb.resize(half)), np.asarray(cr.resize(half))


def camera_view(photo: Path, side: int, out: Path, quality: int = 90) -> Path:
    """What the page sends for ``photo`` played by the fake camera: 4:2:0, then JPEG."""
    y, cb, cr = (Image.fromarray(p) for p in yuv420(photo, side))
    full = [y, cb.resize((side, side)), cr.resize((side, side))]
    Image.merge("YCbCr", full).convert("RGB").save(out, "JPEG", quality=quality)
    return out


def write_y4m(path: Path, photos: list[Path], frames_each: int, fps: int, side: int) -> Path:
    """A 4:2:0 Y4M video showing each photo (squared to ``side`` px) for ``frames_each`` frames."""
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{side} H{side} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for photo in photos:
            planes = yuv420(photo, side)
            out.write((b"FRAME\n" + b"".join(p.tobytes() for p in planes)) * frames_each)
    return path


def _high(fd: int) -> int:
    """``fd`` moved above 9, so that placing the pipes at 3 and 4 overwrites neither."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class CdpError(RuntimeError):
    """The browser answered a command with an error, or stopped answering."""


class Chromium:
    """One headless chromium with one page; ``evaluate`` runs JS in it and returns the value."""

    def __init__(self, profile: Path, *flags: str, width: int = 1280, height: int = 900) -> None:
        browser = find_chromium()
        if not browser:
            raise FileNotFoundError("chromium missing: run scripts/install_system_deps.sh")
        to_r, self._to = (_high(fd) for fd in os.pipe())
        self._from, from_w = (_high(fd) for fd in os.pipe())

        def fds() -> None:  # chromium's fd 3: commands in, fd 4: answers out
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)

        self.process = subprocess.Popen(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "--use-fake-ui-for-media-stream",
                "--autoplay-policy=no-user-gesture-required", *flags, "about:blank",
            ],
            preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        self._buffer, self._next, self.session = b"", 0, None
        target = self.command("Target.createTarget", url="about:blank")["targetId"]
        attached = self.command("Target.attachToTarget", targetId=target, flatten=True)
        self.session = attached["sessionId"]
        self.command("Page.enable")
        self.command("Runtime.enable")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise CdpError("chromium stopped answering")
            chunk = os.read(self._from, 1 << 16)
            if not chunk:
                raise CdpError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def command(self, method: str, timeout: float = 30, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise CdpError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str, timeout: float = 30):
        """The JSON value of ``expression`` (promises awaited); a JS exception raises."""
        result = self.command(
            "Runtime.evaluate", timeout=timeout, expression=expression,
            awaitPromise=True, returnByValue=True,
        )  # fmt: skip
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.command("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout=20)

    def wait_for(self, expression: str, timeout: float = 30, period: float = 0.1):
        """Poll ``expression`` until truthy; its value, or AssertionError with the last one."""
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(period)
        raise AssertionError(f"not true within {timeout} s: {expression} (last {value!r})")

    def set_files(self, selector: str, *paths: Path) -> None:
        """What the file chooser does: the files go into the <input type=file>, then change."""
        root = self.command("DOM.getDocument")["root"]["nodeId"]
        node = self.command("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.command("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def screenshot(self, path: Path) -> Path:
        data = self.command("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.command("Browser.close", timeout=5)
        except (CdpError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to)
        os.close(self._from)
