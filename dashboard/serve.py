"""Start and stop the Streamlit server for the dashboard (used by python -m dashboard, the tests
and the benchmark).

Streamlit binds every interface unless told otherwise, so the address is always passed
(--server.address, Streamlit's documented setting). The server runs in its own process group;
stop() ends the group: SIGTERM, then SIGKILL after a grace period. Training workers are not in
that group (the engine starts them in their own sessions) and keep running: a dashboard restart
loses nothing.

With a password (any host: python -m dashboard requires one off loopback), app.py asks for it
before anything else (dashboard/gate.py); the server gets a salted hash of it for that, not the text.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import gate

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
# Debian's Chromium, as the tests and the benchmark drive it headless through Playwright: no GPU, no
# sandbox (containers), and none of its own requests to the network, so every request is the page's
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",  # no Deploy button: nothing here is deployed from the page
        "minimal",
        "--server.enableStaticServing",  # dashboard/static/: the code views' CJK font (dashboard/fonts.py)
        "true",
    ]


class Dashboard:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path | None):
        self.proc, self.url, self.log = proc, url, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log else ""
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0):
        if self.running():
            _killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _killpg(pid: int, sig):
    try:
        os.killpg(pid, sig)  # the server leads its own process group
    except ProcessLookupError:
        pass


def start(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    env: dict | None = None,
    log: Path | None = None,
    timeout: float = 60.0,
    password: str | None = None,
) -> Dashboard:
    """Start Streamlit on host:port and return once its health endpoint answers. A password, if
    given, must be entered on the page before anything else shows, whatever the host."""
    env = {**os.environ, **(env or {})}
    env.pop(gate.PASSWORD_VAR, None)  # the gate is on exactly when a password is passed here
    env.pop(gate.HASH_VAR, None)
    if password:
        env[gate.HASH_VAR] = gate.hash_password(password)
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            command(host, port),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    dash = Dashboard(proc, f"http://{shown}:{port}", log)
    try:
        _wait_ready(dash, timeout)
    except BaseException:
        dash.stop()
        raise
    return dash


def _wait_ready(dash: Dashboard, timeout: float):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        if not dash.running():
            raise RuntimeError(f"Streamlit exited with code {dash.proc.returncode}:\n{dash.log_tail()}")
        try:
            with opener.open(dash.url + "/_stcore/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Streamlit did not answer at {dash.url} within {timeout:.0f} s:\n{dash.log_tail()}")
        time.sleep(0.2)
