"""Start a local Visdom server that works offline and listens on loopback only.

Why not just `python -m visdom.server`:
- It downloads its browser assets from CDNs at first start and dies without internet. We run
  visdom's `run_server.main()`, which skips the download, and serve the assets fetched once
  from npm by `python scripts/visdom_assets.py` (into .cache/visdom).
- visdom 0.2.4's page template asks for `static_url("../user/style.css")`, outside the static
  root, which tornado >= 6.5 answers with 403 (visdom issues 897 and 938). Rather than pin an
  old tornado (6.5 fixed DoS advisories), we serve the page from a corrected copy of the
  template. visdom's installed files stay untouched.
- It binds every interface unless started with -bind_local; we pass it for loopback hosts.
- It answers any site's page: a text/plain POST needs no CORS preflight, and its WebSockets accept
  every origin, so a page the user visits could leave a window of raw HTML (stored XSS) or read
  the runs. Ours refuses (403) every browser request whose Origin is not the server's own; Python
  clients send no Origin.

Each server is a child process in its own process group, with a private temp dir holding its
web root (visdom's static files + the npm assets + the fixed template), its log and, with
login, its cookie secret (visdom would otherwise write that to ~/.visdom/COOKIE_SECRET).

    with start(port=0) as server:            # port 0: pick a free port
        viz = visdom.Visdom(server="http://127.0.0.1", port=server.port)

    python -m engine.sinks.visdom.server [--port N] [--host H]     # foreground, until Ctrl-C

From the command line, --host 0.0.0.0 needs $LIVEPROP_VISDOM_PASSWORD (the variable the runs' Visdom
sink logs in with) and turns the login on, user $LIVEPROP_VISDOM_USERNAME or "liveprop"; the
password set on loopback turns it on there too.
"""

import argparse
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from engine.sinks.visdom.client import PASSWORD_VAR

log = logging.getLogger(__name__)

DEFAULT_ASSETS = Path(__file__).resolve().parents[3] / ".cache" / "visdom"
DEFAULT_ENV_PATH = Path.home() / ".visdom"  # visdom's own default
LOOPBACK = ("127.0.0.1", "localhost")
ALL_INTERFACES = ("0.0.0.0", "")

# The page template's out-of-root stylesheet link, and what we serve instead (same handler).
BAD_CSS_LINK = '{{ static_url("../user/style.css") }}'
GOOD_CSS_LINK = '"{{ handler.application.base_url }}/user/style.css"'

# Runs in the child: point visdom at our web root and private dir, refuse other sites' browsers, then
# start its server. visdom reads the settings dict and DEFAULT_ENV_PATH (for COOKIE_SECRET) from module
# globals. The login's password arrives on stdin: set in this process's os.environ only, it is in
# no environment that /proc/PID/environ shows or a child inherits.
_CHILD = """
import json, os, sys
from urllib.parse import urlsplit
import tornado.web
import visdom.server.app as app, visdom.server.run_server as run, visdom.utils.server_utils as su
private = os.environ.pop("LIVEPROP_VISDOM_DIR")
root = os.path.join(private, "static")
app.tornado_settings.update(static_path=root, template_path=root, autoreload=False)
app.DEFAULT_ENV_PATH = run.DEFAULT_ENV_PATH = su.DEFAULT_ENV_PATH = private + os.sep
if "-enable_login" in sys.argv:
    os.environ["VISDOM_PASSWORD"] = json.loads(sys.stdin.readline())
LOOPBACK_ONLY = "-bind_local" in sys.argv


class Refused(tornado.web.RequestHandler):
    def prepare(self):
        self.set_status(403)
        self.finish("another site's page may not use this Visdom server")


class SameOrigin(app.Application):
    # The Origin must name the Host asked for, and on loopback the Host must be a loopback name: a
    # DNS-rebound name (evil.example resolving to 127.0.0.1) sends an Origin and a Host that agree.
    def find_handler(self, request, **kwargs):
        origin = request.headers.get("Origin")
        if origin is not None and (
            urlsplit(origin).netloc.lower() != request.host.lower()
            or (LOOPBACK_ONLY and request.host_name not in ("127.0.0.1", "localhost", "[::1]"))
        ):
            return self.get_handler_delegate(request, Refused)
        return super().find_handler(request, **kwargs)


run.Application = SameOrigin
run.main()
"""


class VisdomServer:
    """A running Visdom server child process. Stop it with .stop() or a `with` block."""

    def __init__(self, proc, url, port, private_dir):
        self._proc = proc
        self.url = url
        self.port = port
        self.pid = proc.pid
        self._private = private_dir
        self.log_path = private_dir / "server.log"  # removed by stop()

    def running(self):
        return self._proc.poll() is None

    def wait(self):
        """Block until the server exits; return its exit code."""
        return self._proc.wait()

    def log_tail(self, lines=20):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout=5.0):
        """Terminate the server's process group, kill it after `timeout` s; remove its files."""
        if self.running():
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait()
        shutil.rmtree(self._private, ignore_errors=True)

    def _signal(self, sig):
        try:
            os.killpg(self.pid, sig)  # the child leads its own process group
        except ProcessLookupError:
            pass

    def _wait_ready(self, timeout):
        """Poll the HTTP server until it answers; fail with the log tail if it dies or hangs."""
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise RuntimeError(
                    f"Visdom server exited with code {self._proc.returncode} "
                    f"while starting. Its log ends with:\n{self.log_tail()}"
                )
            try:
                no_proxy.open(self.url + "/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer means the server is up
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Visdom server at {self.url} did not answer within "
                    f"{timeout:.0f} s. Its log ends with:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(port=8097, host="127.0.0.1", env_path=None, assets_dir=None, login=None, timeout=30.0):
    """Start a Visdom server child process and return once its HTTP API answers.

    port: 0 picks a free port. host: a loopback name binds 127.0.0.1 only; "0.0.0.0" binds
    every interface (visdom cannot bind one other address). env_path: where visdom saves
    environments (default ~/.visdom). assets_dir: output of scripts/visdom_assets.py
    (default .cache/visdom). login: (username, password) to require a login; neither is on the
    child's command line, and the password is in no environment (it goes through a pipe).
    """
    if host not in LOOPBACK + ALL_INTERFACES:
        raise ValueError(f"host must be one of {LOOPBACK + ALL_INTERFACES}, not {host!r}")
    port = _check_port(port)
    private = Path(tempfile.mkdtemp(prefix="liveprop-visdom-"))  # mode 0700
    try:
        _build_web_root(private / "static", Path(assets_dir or DEFAULT_ASSETS))
        args = ["-port", str(port), "-env_path", str(env_path or DEFAULT_ENV_PATH), "-logging_level", "WARNING"]
        if host in LOOPBACK:
            args.append("-bind_local")
        env = dict(os.environ, LIVEPROP_VISDOM_DIR=str(private), PYTHONUNBUFFERED="1")
        for var in (PASSWORD_VAR, "VISDOM_PASSWORD"):  # a password only ever reaches it through `login`
            env.pop(var, None)
        if login:
            args.append("-enable_login")
            env.update(VISDOM_USE_ENV_CREDENTIALS="1", VISDOM_USERNAME=login[0], VISDOM_COOKIE=secrets.token_hex(32))
        with open(private / "server.log", "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, *args],
                env=env,
                stdin=subprocess.PIPE if login else subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if login:
            try:
                with proc.stdin:
                    proc.stdin.write(json.dumps(login[1]).encode() + b"\n")
            except BrokenPipeError:  # the child has died already: _wait_ready reports its log
                pass
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    server = VisdomServer(proc, f"http://127.0.0.1:{port}", port, private)
    try:
        server._wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _check_port(port):
    """Return `port`, or a free port for 0. Fail early if it is taken: another server on it
    would answer our readiness check."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tornado does
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise RuntimeError(f"cannot start Visdom on port {port}: {e.strerror}") from None
        return s.getsockname()[1]


def _build_web_root(root, assets_dir):
    """visdom's static files + our npm assets + the page template with the 403 fixed."""
    spec = importlib.util.find_spec("visdom")  # finds the package without importing it
    if spec is None:
        raise RuntimeError("visdom is not installed")
    shutil.copytree(Path(spec.origin).parent / "static", root, copy_function=_link_or_copy)
    if (assets_dir / "COMPLETE").is_file():
        shutil.copytree(assets_dir / "static", root, dirs_exist_ok=True, copy_function=_link_or_copy)
    else:
        log.warning(
            "Visdom's page assets are missing from %s, so its page will be blank "
            "(the data API works); fetch them with: python scripts/visdom_assets.py",
            assets_dir,
        )
    page = root / "index.html"
    html = page.read_text()
    page.unlink()  # it may be a hard link to visdom's own file: never write through it
    page.write_text(html.replace(BAD_CSS_LINK, GOOD_CSS_LINK))


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)  # free when on the same filesystem
    except OSError:
        shutil.copy2(src, dst)


def _cli_login(host):
    """(user, password) for the command line's server, or None; exits 2 with one line when a server
    on every interface would have no password."""
    password = os.environ.get(PASSWORD_VAR, "")
    if host not in LOOPBACK and not password:
        print(
            f"liveprop: error: listening on {host} needs a password: set {PASSWORD_VAR} in the environment",
            file=sys.stderr,
        )
        sys.exit(2)
    return (os.environ.get("LIVEPROP_VISDOM_USERNAME") or "liveprop", password) if password else None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run a local, offline Visdom server.")
    parser.add_argument("--port", type=int, default=8097, help="0 picks a free port")
    parser.add_argument(
        "--host", default="127.0.0.1", choices=(*LOOPBACK, "0.0.0.0"), help="0.0.0.0: every interface, with a login"
    )
    parser.add_argument("--env-path", help="where visdom saves environments")
    cli = parser.parse_args()
    login = _cli_login(cli.host)
    logging.basicConfig(format="%(levelname)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on kill, too
    with start(port=cli.port, host=cli.host, env_path=cli.env_path, login=login) as server:
        print(f"Visdom server at {server.url} (pid {server.pid}); Ctrl-C stops it", flush=True)
        try:
            code = server.wait()
            sys.exit(f"Visdom server exited with code {code}:\n{server.log_tail()}")
        except KeyboardInterrupt:
            pass
