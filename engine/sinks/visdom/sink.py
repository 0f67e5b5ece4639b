"""VisdomSink: streams a run's telemetry to a Visdom server from its own thread; and replay of a spool.

The training thread only calls on_flush / on_status, which put_nowait onto a bounded queue (a full
queue counts the points as dropped). Everything else happens on the sink's thread: the mirror
(windows.py), one request per changed window every `interval` seconds or less often, retries with
backoff, and the spool. The package docstring (__init__.py) says what goes where, and why.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from collections import defaultdict
from pathlib import Path

from engine.loop.telemetry import Hist
from engine.sinks.visdom.client import Client, VisdomSettings, describe
from engine.sinks.visdom.windows import TEXT_WIN, HistWindow, LineWindow, Series, TextPane

SCALAR_WINDOWS = {  # telemetry key prefix -> (window title, y axis type)
    "lr": ("learning rate", "log"),
    "grad_norm": ("gradient norm per layer", "log"),
    "update_ratio": ("update / weight ratio per layer", "log"),
}
SPOOL_VERSION = 2  # 2: each trace as its decimated points and their grid width
SPOOL_EVERY_S = 10.0
PROBE_EVERY_S = 5.0
MAX_BACKOFF_S = 5.0
EMA = 0.95  # loss smoothing


class VisdomSink:
    """Subscribe on_flush and on_status to a Trainer; close() at the end of the run."""

    def __init__(
        self,
        settings: VisdomSettings,
        run_id: str = "",
        config: dict | None = None,
        spool: str | Path | None = None,
        max_points: int = 2000,
        interval: float = 1.0,
        queue_size: int = 1000,
    ):
        self.s, self.run_id = settings, run_id
        self.spool = Path(spool) if spool else None
        self.max_points, self.interval = max_points, interval
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0  # points that never reached the sink's thread
        self.buffered = 0  # points the sink holds that the server has not confirmed
        self.error: str | None = None  # the last request's failure, until one succeeds
        self.fault: str | None = None  # a batch (a bug) or a spool this sink could not read: kept for good
        self.connected = False
        self.text = TextPane(run_id, config or {})
        self.lines = {"loss": LineWindow("loss", "loss (raw and smoothed)", "log")}
        self.lines.update({k: LineWindow(k, t, y) for k, (t, y) in SCALAR_WINDOWS.items()})
        self.hists = {k: HistWindow(k) for k in ("weight", "grad")}
        for w in self._windows():  # seconds between two sends of a window
            w.gap = (
                0
                if w is self.text
                else interval
                if w.win == "loss"
                else 3 * interval
                if isinstance(w, HistWindow)
                else 2 * interval
            )
        self._ema, self._ema_n = 0.0, 0
        self._on_server = False  # the text pane is known to exist there (restart probe)
        self._next, self._backoff, self._spooled, self._probed = 0.0, 0.0, 0.0, 0.0
        self._closing = threading.Event()
        self._lock = threading.Lock()  # the windows, between the sink's thread and a late close()
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
        return {
            "state": state,
            "status": state + (f" {n}" if n is not None else ""),
            "buffered": self.buffered,
            "dropped": self.dropped,
            "error": self.error or self.fault,
            "url": self.s.endpoint,
            "env": self.s.env,
        }

    def status(self) -> str:
        """'connected', 'buffering N' or 'dropped N', then ': <error>' when the last request failed."""
        info = self.status_info()
        return info["status"] + (f": {info['error']}" if info["error"] else "")

    def close(self, status: str | None = None, timeout: float | None = None) -> str:
        """Deliver what is left, spool what is not; return status(). Within `timeout` seconds (default:
        three requests' worth): a server that stalls holds the sink's thread in a request, so then this
        thread writes the spool itself and the run ends on time (the worker gives its sinks 2 s)."""
        self._final_status = status
        self._closing.set()
        try:
            self.q.put_nowait(None)  # wakes the thread
        except queue.Full:
            pass
        timeout = 3 * self.s.timeout + 5 if timeout is None else timeout
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.error = f"{self.s.endpoint} did not take the last points within {timeout:g} s"
            if self.spool:
                self._drain(0.0)  # what is still queued goes into the spool too
                self._save_spool()
                self.error += f"; they wait in {self.spool} (python -m engine.sinks.visdom SPOOL sends them)"
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
                    w.final = True
                if self._final_status:
                    self.text.set_status(self._final_status)
            if self._changed() and (closing or time.monotonic() >= self._next):
                self._sync(final=closing)
            if closing:
                break
            if (
                not self.connected
                and self._changed()
                and self.spool
                and time.monotonic() - self._spooled > SPOOL_EVERY_S
            ):
                self._save_spool()
        if self._changed():
            self._save_spool()

    def _drain(self, wait: float):
        try:
            item = self.q.get(timeout=wait) if wait > 0 else self.q.get_nowait()
            while True:
                if item is not None:
                    try:
                        with self._lock:
                            self._ingest(item)
                    except Exception as e:  # never silent: shown in status() for good
                        self.fault = f"visdom sink: {type(e).__name__}: {e}"
                item = self.q.get_nowait()
        except queue.Empty:
            pass
        self.buffered = sum(w.pending for w in self._windows())

    def _ingest(self, item):
        if isinstance(item, tuple):  # ("status", status)
            self.text.set_status(item[1])
            return
        f = item
        for _step, kind, data in f.events:
            if kind == "lr_change":  # the pane shows the rate the run trains at now
                self.text.set_value("lr", data["new"])
        if f.losses:
            smooth = []
            for v in f.losses:
                if math.isfinite(v):
                    self._ema_n += 1
                    self._ema = EMA * self._ema + (1 - EMA) * v
                smooth.append(self._ema / (1 - EMA**self._ema_n) if self._ema_n else None)
            steps = list(range(f.first_step, f.first_step + len(f.losses)))
            loss = self.lines["loss"]
            loss.add("loss", steps, f.losses, self.max_points)
            loss.add("smoothed", steps, smooth, self.max_points)
            loss.pending -= len(steps)  # count each step once
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
                    for w in self._windows():  # the server restarted empty (or the pane was closed)
                        w.replace = True
            for w in self._windows():
                if not w.changed() or (now - w.sent_at < w.gap and not final):
                    continue
                with self._lock:
                    endpoint, msg = w.message(env)
                try:
                    self._http.post(endpoint, msg)
                except Exception:
                    w.replace = True  # unknown whether it was applied: send it whole next time
                    raise
                with self._lock:
                    w.delivered()
                w.sent_at = now
                self._on_server |= w is self.text
            self.connected, self.error, self._backoff = True, None, 0.0
            self._next = time.monotonic() + self.interval
            if self.spool and self.spool.exists() and not self._changed():
                self.spool.unlink()
        except Exception as e:
            self.connected, self.error = False, describe(e, self.s)
            self._probed = -PROBE_EVERY_S  # after an outage, check for a restarted server first
            self._backoff = min(MAX_BACKOFF_S, max(0.5, 2 * self._backoff))
            self._next = time.monotonic() + self._backoff
        self.buffered = sum(w.pending for w in self._windows())

    # -- the spool: the mirror on disk, JSON lines (never pickle) -----------------------------

    def _save_spool(self):
        self._spooled = time.monotonic()
        if not self.spool:
            return
        with self._lock:  # close() may call this beside a thread stuck in a request
            self._write_spool()

    def _write_spool(self):
        try:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.spool.with_suffix(".tmp")
            with open(tmp, "w") as f:
                f.write(json.dumps({"spool": SPOOL_VERSION, "env": self.s.env, "run": self.run_id}) + "\n")
                for w in self._windows():
                    f.write(json.dumps(w.to_json()) + "\n")
            os.replace(tmp, self.spool)
        except OSError as e:
            self.error = f"cannot write the spool {self.spool}: {e}"

    def _load_spool(self):
        with open(self.spool) as f:
            head = json.loads(f.readline())
            if head.get("spool") != SPOOL_VERSION:  # another version's: reported, never touched
                self.fault = f"visdom sink: {self.spool} has spool format {head.get('spool')}, not {SPOOL_VERSION}"
                self.spool = None
                return
            for line in f:
                d = json.loads(line)
                if "win" in d and d["win"] in self.lines:
                    w = self.lines[d["win"]]
                    w.traces = {n: Series.from_json(t) for n, t in d["traces"].items()}
                    w.replace, w.pending = bool(w.traces), sum(len(t["x"]) for t in d["traces"].values())
                elif "hist" in d and d["hist"] in self.hists:
                    for h in d["latest"]:
                        self.hists[d["hist"]].add(Hist(**h))
                elif "text" in d and not self.text.config:  # a replay: the run's own pane
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
