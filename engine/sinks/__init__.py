"""Sinks: the run store (store.py, the worker's record), Visdom (visdom/) and TensorBoard (tensorboard.py).

Each is a subscriber of the trainer's events with its own thread and a bounded queue; none can
slow or stop training. The worker calls attach() before it subscribes the store, and close()
at the end. A sink's status reaches the store as an event of kind "visdom" or "tensorboard"
(data: state, status, error, ...), added to the flush whenever it changes (at most every 2 s
unless the state word changes) and once more at close. The dashboard and the CLI read the
latest such event: `last_status(run_id, store_path)`.
"""

from __future__ import annotations

import time
from pathlib import Path

STATUS_EVERY_S = 2.0
CLOSE_S = 2.0  # the sinks' share of a worker's exit, after the run's status is written


class StatusEvents:
    """on_flush subscriber that adds a sink's status to the flush as an event when it changes."""

    def __init__(self, kind, sink):
        self.kind, self.sink = kind, sink
        self._last, self._state, self._time = None, None, 0.0

    def __call__(self, flush):
        info = self.sink.status_info()
        key = (info["status"], info["error"])
        now = time.monotonic()
        if key != self._last and (info["state"] != self._state or now - self._time >= STATUS_EVERY_S):
            step = flush.last_step if flush.losses else flush.first_step
            flush.events.append((step, self.kind, info))
            self._last, self._state, self._time = key, info["state"], now


def attach(trainer, cfg, run_id: str, store_path: str, environ=None, shown: dict | None = None) -> list:
    """Start the sinks cfg asks for, subscribe them to trainer; returns [(kind, sink)].
    Call it before the store sink subscribes, so the status events reach the store. shown: the configuration
    Visdom's text pane shows (default: the fields of cfg that apply)."""
    from engine.sinks import visdom
    from engine.store.files import RunFiles

    sinks = []
    settings = visdom.settings_for(cfg, run_id, environ)
    if settings:
        from engine.config.reasons import applying

        spool = RunFiles.of(run_id, store_path).spool
        config = applying(cfg) if shown is None else shown
        sinks.append(("visdom", visdom.VisdomSink(settings, run_id, config, spool=spool)))
    if cfg.tensorboard_dir:
        from engine.sinks.tensorboard import TensorBoardSink

        sinks.append(("tensorboard", TensorBoardSink(Path(cfg.tensorboard_dir) / visdom.env_name(cfg.name, run_id))))
    for kind, sink in sinks:
        trainer.add_callback("on_flush", StatusEvents(kind, sink))
    for _kind, sink in sinks:
        trainer.add_callback("on_flush", sink.on_flush)
        if hasattr(sink, "on_status"):
            trainer.add_callback("on_status", sink.on_status)
    return sinks


def close(sinks: list, status: str, budget: float = CLOSE_S) -> list[tuple[str, dict]]:
    """Close every sink, all of them within `budget` seconds; returns [(kind, final status info)].
    The worker writes the run's status before, so a stalled server delays nothing a viewer waits for."""
    out, deadline = [], time.monotonic() + budget
    for kind, sink in sinks:
        try:
            sink.close(status, timeout=max(0.1, deadline - time.monotonic()))
            out.append((kind, sink.status_info()))
        except Exception as e:  # a sink's failure never changes the run's outcome
            out.append((kind, {"state": "error", "status": "error", "error": f"{type(e).__name__}: {e}"}))
    return out


def last_status(run_id: str, store_path: str | None = None) -> dict[str, dict]:
    """{kind: data} of the latest status event of each sink of a run."""
    from engine.store.db import opened

    found = {}
    with opened(store_path) as store:
        for e in store.events(run_id):
            if e["kind"] in ("visdom", "tensorboard"):
                found[e["kind"]] = e["data"]
    return found


def describe(kind: str, info: dict) -> str:
    """One line for people: 'visdom: connected (env E at URL)', with the error when there is one."""
    where = (
        f" (env {info['env']} at {info['url']})"
        if kind == "visdom" and "env" in info
        else f" ({info['logdir']})"
        if "logdir" in info
        else ""
    )
    return f"{kind}: {info['status']}{where}" + (f": {info['error']}" if info.get("error") else "")
