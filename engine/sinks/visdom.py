"""Stream a run to a Visdom server without ever slowing or blocking training.

What goes where: one env per run (liveprop_<name>-<run id> unless overridden), with stable
window names, so a resumed run or a reloaded page draws into the same windows:
    run                       a text pane: status and config, HTML-escaped (Visdom renders HTML)
    loss                      raw and smoothed (EMA) loss per step
    lr, grad_norm, update_ratio   learning rate; per-layer gradient norms and ||dw|| / ||w||
    hist_weight, hist_grad    the latest histograms, one small plot per layer

How, given design.md's facts about Visdom:
- The training thread only calls on_flush / on_status, which put_nowait onto a bounded queue.
  When it is full the points are counted as dropped; the training thread never waits.
- This sink's thread keeps a mirror of every window, bounded by min-max decimation: above
  `max_points` per window, runs of k steps become their min and their max point, k doubling.
  (The server's cost per append grows with a window's size, and its page slows at about 2,000
  points per trace.) Full resolution stays in the store.
- Every `interval` seconds it syncs: one request per changed window (the new tail with
  update='append'), never one per step. Per-layer windows go at most every 2 intervals, the
  histograms every 3: each request costs some Python, under the training process's GIL.
  It talks to Visdom's HTTP API with requests and a timeout on every request: the visdom
  client posts with none, and swallows errors.
- Server down, refusing or stalled: the mirror is the buffer. A failed request marks its window
  for a full replace, so a timed-out request that the server did apply is not duplicated, and a
  server that restarted empty gets the whole series back. A cheap probe (does the text pane still
  exist?) notices a restart between two syncs. Retries back off up to 5 s. While disconnected,
  and at close if anything is undelivered, the mirror is spilled to a JSON-lines spool file;
  `python -m engine.sinks.visdom SPOOL` (or a later sink for the same run) replays it.
- status(): "connected", "buffering N" or "dropped N" (N points), plus the last error's text.
- The password comes from $LIVEPROP_VISDOM_PASSWORD only. It is never stored, logged or shown.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os
import queue
import re
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from ..telemetry import Hist

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TEXT_WIN = "run"
SCALAR_WINDOWS = {   # telemetry key prefix -> (window title, y axis type)
    "lr": ("learning rate", "log"),
    "grad_norm": ("gradient norm per layer", "log"),
    "update_ratio": ("update / weight ratio per layer", "log"),
}
ENV_VARS = dict(url="LIVEPROP_VISDOM_URL", port="LIVEPROP_VISDOM_PORT", base_url="LIVEPROP_VISDOM_BASE_URL",
                env="LIVEPROP_VISDOM_ENV", username="LIVEPROP_VISDOM_USERNAME")
PASSWORD_VAR = "LIVEPROP_VISDOM_PASSWORD"
SPOOL_EVERY_S = 10.0
PROBE_EVERY_S = 5.0
MAX_BACKOFF_S = 5.0
EMA = 0.95           # loss smoothing


# ---------------------------------------------------------------------------------------------
# settings

@dataclass
class VisdomSettings:
    url: str = "http://127.0.0.1:8097"     # scheme://host[:port]
    port: int = 0                          # 0: the URL's port, else 8097
    base_url: str = ""                     # the server's -base_url, e.g. /visdom
    env: str = "main"
    username: str = ""                     # for a server started with -enable_login
    password: str = field(default="", repr=False)   # never stored, logged or shown
    timeout: float = 5.0                   # seconds, for every request

    @property
    def endpoint(self) -> str:
        """scheme://host:port/base_url, without any user name or password."""
        u = urlsplit(self.url if "://" in self.url else "http://" + self.url)
        host = f"[{u.hostname}]" if ":" in (u.hostname or "") else u.hostname
        base = "/" + self.base_url.strip("/") if self.base_url.strip("/") else ""
        return f"{u.scheme}://{host}:{self.port or u.port or 8097}{base}"


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
    return VisdomSettings(url=url, port=port, base_url=pick(cfg.visdom_base_url, "base_url"),
                          env=pick(cfg.visdom_env, "env") or env_name(cfg.name, run_id),
                          username=pick(cfg.visdom_username, "username"),
                          password=environ.get(PASSWORD_VAR, ""))


# ---------------------------------------------------------------------------------------------
# Visdom's HTTP API, with timeouts

class VisdomError(Exception):
    """The server answered, but not with success. The message is meant for a person."""


class Client:
    """POST JSON to Visdom's endpoints (events, update, win_exists, win_data) with requests."""

    def __init__(self, s: VisdomSettings):
        self.s, self.base = s, s.endpoint
        self.session = requests.Session()
        self.session.trust_env = urlsplit(self.base).hostname not in LOOPBACK   # no proxy for loopback
        self.timeout = (min(s.timeout, 3.0), s.timeout)                       # (connect, read)
        self._logged_in = False

    def post(self, endpoint: str, msg: dict) -> str:
        if self.s.username and not self._logged_in:
            self._login()
        body = json.dumps(msg, allow_nan=False)
        r = self.session.post(f"{self.base}/{endpoint}", data=body, timeout=self.timeout)
        if r.status_code == 400 and self.s.username:        # the cookie expired or the server restarted
            self._logged_in = False
            self._login()
            r = self.session.post(f"{self.base}/{endpoint}", data=body, timeout=self.timeout)
        if r.status_code != 200:
            hint = (" (this server requires a login: set the Visdom username and $LIVEPROP_VISDOM_PASSWORD)"
                    if r.status_code == 400 and not self.s.username else "")
            raise VisdomError(f"{self.base}/{endpoint} answered HTTP {r.status_code}{hint}")
        return r.text

    def _login(self):
        # Visdom's client sends sha256(password); the server hashes it once more and compares.
        digest = hashlib.sha256(self.s.password.encode()).hexdigest()
        r = self.session.post(self.base + "/", json={"username": self.s.username, "password": digest},
                              timeout=self.timeout)
        if r.status_code == 400:
            raise VisdomError(f"login refused for user {self.s.username!r}: wrong user name or password")
        if r.status_code != 200:
            raise VisdomError(f"login failed: {self.base}/ answered HTTP {r.status_code} "
                              f"(was the server started with -enable_login?)")
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


# ---------------------------------------------------------------------------------------------
# the mirror: what each window shows, bounded

def minmax(xs: list, ys: list, buckets: int) -> tuple[list, list]:
    """At most 2 * buckets points: each run of consecutive points becomes its min and its max,
    in order, so spikes survive. None (a non-finite value) is skipped, or kept alone as a gap."""
    n, ox, oy = len(xs), [], []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        idx = [i for i in range(lo, hi) if ys[i] is not None]
        keep = sorted({min(idx, key=ys.__getitem__), max(idx, key=ys.__getitem__)}) if idx else [lo][:hi - lo]
        ox += [xs[i] for i in keep]
        oy += [ys[i] for i in keep]
    return ox, oy


def _finite(ys: list) -> list:
    """None for each non-finite value: JSON has no NaN."""
    try:
        if all(map(math.isfinite, ys)):
            return list(ys)
    except TypeError:                  # a None already
        pass
    return [v if v is not None and math.isfinite(v) else None for v in ys]


class Series:
    """One trace: every point up to `cap`, then min-max decimated (k raw points -> 2 shown)."""

    def __init__(self, x=(), y=(), k=1):
        self.x, self.y, self.k = list(x), list(y), k
        self._bx, self._by = [], []    # the bucket being filled, when k > 1
        self.sent = 0                  # how many of x the server has

    def extend(self, xs, ys, cap: int) -> bool:
        """Add points; True when the series was compacted (the window must then be replaced)."""
        ys = _finite(ys)
        if self.k == 1:
            self.x += xs
            self.y += ys
        else:
            self._bx += xs
            self._by += ys
            while len(self._bx) >= self.k:
                x, y = minmax(self._bx[:self.k], self._by[:self.k], 1)
                self.x += x
                self.y += y
                del self._bx[:self.k], self._by[:self.k]
        compacted = False
        while len(self.x) > cap:
            self.x, self.y = minmax(self.x, self.y, max(1, cap // 4))
            self.k, compacted = max(4, 2 * self.k), True
        return compacted

    def close_bucket(self):
        """Show the partly filled bucket (at the end of a run)."""
        if self._bx:
            x, y = minmax(self._bx, self._by, 1)
            self.x += x
            self.y += y
            self._bx, self._by = [], []


def _trace(name, x, y):
    return {"x": x, "y": y, "name": name, "type": "scatter", "mode": "lines"}


class LineWindow:
    """A line plot with one trace per name (a layer, or raw/smoothed loss)."""

    def __init__(self, win: str, title: str, ytype: str = "linear"):
        self.win, self.title, self.ytype = win, title, ytype
        self.gap, self.sent_at = 0.0, 0.0      # seconds between two sends; the last send
        self.traces: dict[str, Series] = {}
        self.replace = False           # the server's copy is stale or unknown: send it whole
        self.pending = 0               # telemetry points not yet delivered

    def add(self, name: str, xs: list, ys: list, max_points: int):
        if name not in self.traces:
            self.replace |= any(s.sent for s in self.traces.values())   # the server's window lacks it
            self.traces[name] = Series()
        cap = max(100, max_points // len(self.traces))
        self.replace |= self.traces[name].extend(xs, ys, cap)
        self.pending += len(xs)

    def changed(self) -> bool:                      # an empty window is never sent
        return bool(self.traces) and (self.replace or any(len(s.x) > s.sent for s in self.traces.values()))

    def message(self, env: str) -> tuple[str, dict]:
        layout = {"showlegend": True, "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
                  "xaxis": {"title": {"text": "step"}}, "yaxis": {"type": self.ytype}}
        msg = {"win": self.win, "eid": env, "layout": layout, "opts": {"title": self.title}}
        if self.replace:
            msg["data"] = [_trace(n, s.x, s.y) for n, s in self.traces.items()]
            return "events", msg
        # one trace entry per existing trace, in order; an empty one leaves that trace as it is
        msg["data"] = [_trace(n, s.x[s.sent:], s.y[s.sent:]) for n, s in self.traces.items()]
        return "update", {**msg, "append": True, "name": None}

    def delivered(self):
        for s in self.traces.values():
            s.sent = len(s.x)
        self.replace, self.pending = False, 0

    def to_json(self) -> dict:
        return {"win": self.win, "traces": {n: {"x": s.x, "y": s.y, "k": s.k} for n, s in self.traces.items()}}


class HistWindow:
    """The latest histogram of each layer, one small bar plot per layer in a grid."""

    def __init__(self, kind: str):
        self.kind, self.win = kind, f"hist_{kind}"
        self.gap, self.sent_at = 0.0, 0.0
        self.latest: dict[str, Hist] = {}
        self.replace = False

    def add(self, h: Hist):
        if h.layer not in self.latest or h.step >= self.latest[h.layer].step:
            self.latest[h.layer] = h
            self.replace = True

    @property
    def pending(self):
        return len(self.latest) if self.changed() else 0

    def changed(self) -> bool:
        return self.replace and bool(self.latest)

    def message(self, env: str) -> tuple[str, dict]:
        cols = min(3, len(self.latest))
        rows = math.ceil(len(self.latest) / cols)
        data, notes = [], []
        for i, (layer, h) in enumerate(self.latest.items()):
            ax = "" if i == 0 else str(i + 1)
            e = h.edges
            data.append({"type": "bar", "name": layer, "xaxis": "x" + ax, "yaxis": "y" + ax,
                         "x": [(a + b) / 2 for a, b in zip(e, e[1:])], "y": h.counts,
                         "width": (h.hi - h.lo) / len(h.counts) or None, "marker": {"line": {"width": 0}}})
            label = layer + (f" ({h.nonfinite} non-finite)" if h.nonfinite else "")
            notes.append({"text": html.escape(label), "showarrow": False, "font": {"size": 11},
                          "xref": f"x{ax} domain", "yref": f"y{ax} domain", "x": 0.5, "y": 1.0,
                          "xanchor": "center", "yanchor": "bottom"})
        step = max(h.step for h in self.latest.values())
        layout = {"grid": {"rows": rows, "columns": cols, "pattern": "independent"}, "showlegend": False,
                  "annotations": notes, "bargap": 0, "margin": {"l": 40, "r": 10, "t": 30, "b": 30}}
        opts = {"title": f"{self.kind} histograms, step {step}", "width": 180 + 170 * cols, "height": 90 + 150 * rows}
        return "events", {"data": data, "win": self.win, "eid": env, "layout": layout, "opts": opts}

    def delivered(self):
        self.replace = False

    def to_json(self) -> dict:
        return {"hist": self.kind, "latest": [asdict(h) for h in self.latest.values()]}


class TextPane:
    """The run's status and config. Every value is HTML-escaped; no secret is ever in it."""

    def __init__(self, run_id: str, config: dict):
        self.win, self.run_id = TEXT_WIN, run_id
        self.gap, self.sent_at = 0.0, 0.0
        self.config = {k: v for k, v in config.items() if not re.search("password|secret|token", k, re.I)}
        self.status, self.replace, self.pending = "starting", True, 0

    def set_status(self, status: str):
        if status != self.status:
            self.status, self.replace = status, True

    def changed(self) -> bool:
        return self.replace

    def message(self, env: str) -> tuple[str, dict]:
        esc = lambda v: html.escape(str(v), quote=True)          # noqa: E731
        rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in self.config.items())
        content = (f"<b>run</b> {esc(self.run_id)} &nbsp; <b>status</b> {esc(self.status)}"
                   f"<table style='font-size:12px'>{rows}</table>")
        return "events", {"data": [{"content": content, "type": "text"}], "win": self.win, "eid": env,
                          "opts": {"title": "run"}}

    def delivered(self):
        self.replace = False

    def to_json(self) -> dict:
        return {"text": {"run": self.run_id, "config": self.config, "status": self.status}}


# ---------------------------------------------------------------------------------------------
# the sink

class VisdomSink:
    def __init__(self, settings: VisdomSettings, run_id: str = "", config: dict | None = None,
                 spool: str | Path | None = None, max_points: int = 2000, interval: float = 1.0,
                 queue_size: int = 1000):
        self.s, self.run_id = settings, run_id
        self.spool = Path(spool) if spool else None
        self.max_points, self.interval = max_points, interval
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0                   # points that never reached the sink's thread
        self.buffered = 0                  # points the sink holds that the server has not confirmed
        self.error: str | None = None      # the last request's failure, until one succeeds
        self.fault: str | None = None      # a batch this sink could not read (a bug): kept for good
        self.connected = False
        self.text = TextPane(run_id, config or {})
        self.lines = {"loss": LineWindow("loss", "loss (raw and smoothed)", "log")}
        self.lines.update({k: LineWindow(k, t, y) for k, (t, y) in SCALAR_WINDOWS.items()})
        self.hists = {k: HistWindow(k) for k in ("weight", "grad")}
        for w in self._windows():            # seconds between two sends of a window
            w.gap = (0 if w is self.text else interval if w.win == "loss"
                     else 3 * interval if isinstance(w, HistWindow) else 2 * interval)
        self._ema, self._ema_n = 0.0, 0
        self._on_server = False            # the text pane is known to exist there (restart probe)
        self._next, self._backoff, self._spooled, self._probed = 0.0, 0.0, 0.0, 0.0
        self._closing = threading.Event()
        self._final_status = None
        self._http = Client(settings)
        if self.spool and self.spool.exists():
            self._load_spool()
        self._thread = threading.Thread(target=self._loop, name="liveprop-visdom", daemon=True)
        self._thread.start()

    # -- the training thread's side: never blocks -------------------------------------------

    def on_flush(self, flush):
        try:
            self.q.put_nowait(flush)
        except queue.Full:
            self.dropped += len(flush.losses) + len(flush.scalars)

    def on_status(self, status, info=None):
        try:
            self.q.put_nowait(("status", status))
        except queue.Full:
            pass

    def status_info(self) -> dict:
        state = "dropped" if self.dropped else "connected" if self.connected else "buffering"
        n = {"dropped": self.dropped, "buffering": self.buffered}.get(state)
        return {"state": state, "status": state + (f" {n}" if n is not None else ""),
                "buffered": self.buffered, "dropped": self.dropped, "error": self.error or self.fault,
                "url": self.s.endpoint, "env": self.s.env}

    def status(self) -> str:
        """'connected', 'buffering N' or 'dropped N', then ': <error>' when the last request failed."""
        info = self.status_info()
        return info["status"] + (f": {info['error']}" if info["error"] else "")

    def close(self, status: str | None = None) -> str:
        """Deliver what is left (bounded by the request timeout), spool what is not; return status()."""
        self._final_status = status
        self._closing.set()
        try:
            self.q.put_nowait(None)        # wakes the thread
        except queue.Full:
            pass
        self._thread.join(3 * self.s.timeout + 5)
        return self.status()

    # -- the sink's thread -------------------------------------------------------------------

    def _windows(self):
        return [self.text, *self.lines.values(), *self.hists.values()]

    def _changed(self):
        return any(w.changed() for w in self._windows())

    def _loop(self):
        while True:
            closing = self._closing.is_set()
            wait = 0.0 if closing else max(0.0, self._next - time.monotonic()) if self._changed() else 1.0
            self._drain(wait)
            closing = self._closing.is_set()
            if closing:
                self._drain(0.0)
                for w in self.lines.values():
                    for s in w.traces.values():
                        s.close_bucket()
                if self._final_status:
                    self.text.set_status(self._final_status)
            if self._changed() and (closing or time.monotonic() >= self._next):
                self._sync(final=closing)
            if closing:
                break
            if (not self.connected and self._changed() and self.spool
                    and time.monotonic() - self._spooled > SPOOL_EVERY_S):
                self._save_spool()
        if self._changed():
            self._save_spool()

    def _drain(self, wait: float):
        try:
            item = self.q.get(timeout=wait) if wait > 0 else self.q.get_nowait()
            while True:
                if item is not None:
                    try:
                        self._ingest(item)
                    except Exception as e:         # never silent: shown in status() for good
                        self.fault = f"visdom sink: {type(e).__name__}: {e}"
                item = self.q.get_nowait()
        except queue.Empty:
            pass
        self.buffered = sum(w.pending for w in self._windows())

    def _ingest(self, item):
        if isinstance(item, tuple):              # ("status", status)
            self.text.set_status(item[1])
            return
        f = item
        if f.losses:
            smooth = []
            for v in f.losses:
                if math.isfinite(v):
                    self._ema_n += 1
                    self._ema = EMA * self._ema + (1 - EMA) * v
                smooth.append(self._ema / (1 - EMA ** self._ema_n) if self._ema_n else None)
            steps = list(range(f.first_step, f.first_step + len(f.losses)))
            loss = self.lines["loss"]
            loss.add("loss", steps, f.losses, self.max_points)
            loss.add("smoothed", steps, smooth, self.max_points)
            loss.pending -= len(steps)           # count each step once
        series = defaultdict(lambda: ([], []))
        for step, key, v in f.scalars:
            prefix, _, layer = key.partition("/")
            if prefix in SCALAR_WINDOWS:
                xs, ys = series[prefix, layer or prefix]
                xs.append(step)
                ys.append(v)
        for (prefix, name), (xs, ys) in series.items():
            self.lines[prefix].add(name, xs, ys, self.max_points)
        for h in f.hists:
            if h.kind in self.hists:
                self.hists[h.kind].add(h)

    def _sync(self, final=False):
        """One request per changed window that is due; stop at the first failure and back off."""
        env, now = self.s.env, time.monotonic()
        try:
            if self._on_server and now - self._probed >= PROBE_EVERY_S:
                self._probed = now
                if self._http.post("win_exists", {"win": TEXT_WIN, "eid": env}) == "false":
                    for w in self._windows():    # the server restarted empty (or the pane was closed)
                        w.replace = True
            for w in self._windows():
                if not w.changed() or (now - w.sent_at < w.gap and not final):
                    continue
                endpoint, msg = w.message(env)
                try:
                    self._http.post(endpoint, msg)
                except Exception:
                    w.replace = True         # unknown whether it was applied: send it whole next time
                    raise
                w.delivered()
                w.sent_at = now
                self._on_server |= w is self.text
            self.connected, self.error, self._backoff = True, None, 0.0
            self._next = time.monotonic() + self.interval
            if self.spool and self.spool.exists() and not self._changed():
                self.spool.unlink()
        except Exception as e:
            self.connected, self.error = False, describe(e, self.s)
            self._probed = -PROBE_EVERY_S           # after an outage, check for a restarted server first
            self._backoff = min(MAX_BACKOFF_S, max(0.5, 2 * self._backoff))
            self._next = time.monotonic() + self._backoff
        self.buffered = sum(w.pending for w in self._windows())

    # -- the spool: the mirror on disk, JSON lines (never pickle) -----------------------------

    def _save_spool(self):
        self._spooled = time.monotonic()
        if not self.spool:
            return
        try:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.spool.with_suffix(".tmp")
            with open(tmp, "w") as f:
                f.write(json.dumps({"spool": 1, "env": self.s.env, "run": self.run_id}) + "\n")
                for w in self._windows():
                    f.write(json.dumps(w.to_json()) + "\n")
            os.replace(tmp, self.spool)
        except OSError as e:
            self.error = f"cannot write the spool {self.spool}: {e}"

    def _load_spool(self):
        with open(self.spool) as f:
            for line in f:
                d = json.loads(line)
                if "win" in d and d["win"] in self.lines:
                    w = self.lines[d["win"]]
                    w.traces = {n: Series(t["x"], t["y"], t["k"]) for n, t in d["traces"].items()}
                    w.replace, w.pending = bool(w.traces), sum(len(t["x"]) for t in d["traces"].values())
                elif "hist" in d and d["hist"] in self.hists:
                    for h in d["latest"]:
                        self.hists[d["hist"]].add(Hist(**h))
                elif "text" in d and not self.text.config:      # a replay: the run's own pane
                    self.text = TextPane(d["text"]["run"], d["text"]["config"])
                    self.text.status = d["text"]["status"]
        self.buffered = sum(w.pending for w in self._windows())


def replay(spool: str, settings: VisdomSettings) -> str:
    """Send a spooled run's windows (for a run that ended while its server was unreachable)."""
    with open(spool) as f:
        head = json.loads(f.readline())
    settings.env = settings.env if settings.env != "main" else head["env"]
    sink = VisdomSink(settings, head["run"], spool=spool)
    return sink.close()


if __name__ == "__main__":
    import argparse
    import sys
    ap = argparse.ArgumentParser(description=replay.__doc__)
    ap.add_argument("spool", help="runs/visdom/RUN.jsonl")
    ap.add_argument("--visdom", default=os.environ.get(ENV_VARS["url"], "http://127.0.0.1:8097"), metavar="URL")
    ap.add_argument("--env", default="main", help="default: the run's env")
    a = ap.parse_args()
    st = VisdomSettings(url=a.visdom, env=a.env, base_url=os.environ.get(ENV_VARS["base_url"], ""),
                        username=os.environ.get(ENV_VARS["username"], ""),
                        password=os.environ.get(PASSWORD_VAR, ""))
    result = replay(a.spool, st)
    print(f"visdom: {result}")
    sys.exit(0 if result == "connected" else 1)
