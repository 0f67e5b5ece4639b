"""Settings for a Visdom server, and a client for its HTTP API with a timeout on every request.

The visdom package's own client posts with no timeout, and with raise_exceptions unset it prints a
traceback and drops the data; this one raises, and `describe` turns the failure into one line.
The password comes from the environment only, never from the config: $LIVEPROP_VISDOM_PASSWORD, or
$LIVEPROP_VISDOM_PASSWORD_SHA256, its digest, which is all Visdom's login needs (python -m dashboard
gives its runs that one). Neither is ever stored, logged or shown.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ENV_VARS = dict(
    url="LIVEPROP_VISDOM_URL",
    port="LIVEPROP_VISDOM_PORT",
    base_url="LIVEPROP_VISDOM_BASE_URL",
    env="LIVEPROP_VISDOM_ENV",
    username="LIVEPROP_VISDOM_USERNAME",
    timeout="LIVEPROP_VISDOM_TIMEOUT",
)
PASSWORD_VAR = "LIVEPROP_VISDOM_PASSWORD"
DIGEST_VAR = "LIVEPROP_VISDOM_PASSWORD_SHA256"


@dataclass
class VisdomSettings:
    url: str = "http://127.0.0.1:8097"  # scheme://host[:port]
    port: int = 0  # 0: the URL's port, else 8097
    base_url: str = ""  # the server's -base_url, e.g. /visdom
    env: str = "main"
    username: str = ""  # for a server started with -enable_login
    password: str = field(default="", repr=False)  # never stored, logged or shown
    password_sha256: str = field(default="", repr=False)  # password_digest(password), given instead of it
    timeout: float = 5.0  # seconds, for every request (RunConfig.visdom_timeout's 0)

    @property
    def endpoint(self) -> str:
        """scheme://host:port/base_url, without any user name or password."""
        u = urlsplit(self.url if "://" in self.url else "http://" + self.url)
        host = f"[{u.hostname}]" if ":" in (u.hostname or "") else u.hostname
        base = "/" + self.base_url.strip("/") if self.base_url.strip("/") else ""
        return f"{u.scheme}://{host}:{self.port or u.port or 8097}{base}"


def password_digest(password: str) -> str:
    """What Visdom's login takes: the password's SHA-256 in hex (its server hashes that once more)."""
    return hashlib.sha256(password.encode()).hexdigest()


def env_name(name: str, run_id: str) -> str:
    label = re.sub(r"[^\w.-]+", "-", name or "").strip("-")[:40]
    return f"liveprop_{label + '-' if label else ''}{run_id}"


def settings_for(cfg, run_id: str, environ=None) -> VisdomSettings | None:
    """The run's settings: config fields (CLI flags, config file, dashboard) first, then
    environment variables. None when Visdom is off: no URL, or visdom = "off" (--no-visdom)."""
    environ = os.environ if environ is None else environ

    def pick(value, key):
        return value or environ.get(ENV_VARS[key], "")

    url = pick(cfg.visdom, "url")
    if not url or url.lower() == "off":
        return None
    port = pick(cfg.visdom_port, "port") or 0
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"{ENV_VARS['port']}: {port!r} is not a port number") from None
    raw = pick(cfg.visdom_timeout, "timeout")
    try:
        timeout = float(raw or VisdomSettings.timeout)
    except ValueError:
        timeout = math.nan
    if not 0 < timeout < math.inf:  # validate() has checked the config's: this one is the environment's
        raise ValueError(f"{ENV_VARS['timeout']}: {raw!r} is not a number of seconds above 0")
    return VisdomSettings(
        url=url,
        port=port,
        base_url=pick(cfg.visdom_base_url, "base_url"),
        env=pick(cfg.visdom_env, "env") or env_name(cfg.name, run_id),
        username=pick(cfg.visdom_username, "username"),
        timeout=timeout,
        password=environ.get(PASSWORD_VAR, ""),
        password_sha256=environ.get(DIGEST_VAR, ""),
    )


# ---------------------------------------------------------------------------------------------
# Visdom's HTTP API, with timeouts


class VisdomError(Exception):
    """The server answered, but not with success. The message is meant for a person."""


class Client:
    """POST JSON to Visdom's endpoints (events, update, win_exists, win_data) with requests."""

    def __init__(self, s: VisdomSettings):
        self.s, self.base = s, s.endpoint
        self.session = requests.Session()
        self.session.trust_env = urlsplit(self.base).hostname not in LOOPBACK  # no proxy for loopback
        self.timeout = (min(s.timeout, 3.0), s.timeout)  # (connect, read)
        self._logged_in = False

    def post(self, endpoint: str, msg: dict) -> str:
        if self.s.username and not self._logged_in:
            self._login()
        body = json.dumps(msg, allow_nan=False)
        r = self.session.post(f"{self.base}/{endpoint}", data=body, timeout=self.timeout)
        if r.status_code == 400 and self.s.username:  # the cookie expired or the server restarted
            self._logged_in = False
            self._login()
            r = self.session.post(f"{self.base}/{endpoint}", data=body, timeout=self.timeout)
        if r.status_code != 200:
            hint = (
                " (this server requires a login: set the Visdom username and $LIVEPROP_VISDOM_PASSWORD)"
                if r.status_code == 400 and not self.s.username
                else ""
            )
            raise VisdomError(f"{self.base}/{endpoint} answered HTTP {r.status_code}{hint}")
        return r.text

    def _login(self):
        digest = self.s.password_sha256 or password_digest(self.s.password)
        r = self.session.post(
            self.base + "/", json={"username": self.s.username, "password": digest}, timeout=self.timeout
        )
        if r.status_code == 400:
            raise VisdomError(f"login refused for user {self.s.username!r}: wrong user name or password")
        if r.status_code != 200:
            raise VisdomError(
                f"login failed: {self.base}/ answered HTTP {r.status_code} (was the server started with -enable_login?)"
            )
        self._logged_in = True


def describe(e: Exception, s: VisdomSettings) -> str:
    """One line about a failed request, without a traceback (and without any secret)."""
    if isinstance(e, requests.ConnectTimeout):
        return f"no connection to {s.endpoint} within {min(s.timeout, 3.0):g} s"
    if isinstance(e, requests.ReadTimeout):
        return f"{s.endpoint} accepted the connection but did not answer within {s.timeout:g} s"
    if isinstance(e, requests.ConnectionError):
        if "refused" in str(e).lower():
            return f"{s.endpoint} refused the connection (is the Visdom server running?)"
        return f"cannot reach {s.endpoint}: {type(e).__name__}"
    if isinstance(e, VisdomError):
        return str(e)
    return f"{type(e).__name__}: {e}"
