"""The CLI's progress line on stderr: a bar, the loss, steps/s and the ETA.

Progress(total)      fed by the trainer's on_flush events, for a run trained in this process
watch(run_id, ...)   a run on several processes (torchrun): started, and followed through the store
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

from engine.runs import api as runs
from engine.errors import ConfigError
from engine.store.db import opened
from engine.loop.telemetry import Flush


def eta_text(seconds: float) -> str:
    """The progress line's time left: "12:34" below an hour, "1:02:03" past it, "--:--" when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A one-line progress bar on stderr, fed by the trainer's on_flush events."""

    def __init__(self, total: int | None):  # None: until stopped
        self.total, self.t0, self.rate = total, time.time(), 0.0
        self.sinks = {}  # "visdom" -> "connected" | "buffering N" | "dropped N"

    def __call__(self, flush):
        self.sinks.update((kind, d["status"]) for _, kind, d in flush.events if kind in ("visdom", "tensorboard"))
        if not flush.losses:
            return
        done = flush.last_step + 1
        rates = [v for s, k, v in flush.scalars if k == "steps_per_s"]
        self.rate = rates[-1] if rates else self.rate
        if self.total is None:
            where = f"step {done} (until stopped: Ctrl-C stops, with a checkpoint)"
        else:
            eta = (self.total - done) / self.rate if self.rate else math.inf
            where = f"[{'#' * int(30 * done / self.total):<30}] {done}/{self.total}"
        sys.stderr.write(
            f"\r{where} loss {flush.losses[-1]:.4g} {self.rate:,.0f} steps/s"
            + ("" if self.total is None else f" ETA {eta_text(eta)}")
            + " "
            + "".join(f"| {k} {v} " for k, v in self.sinks.items())
        )
        sys.stderr.flush()


def watch(run_id: str, store, progress: Progress) -> str:
    """A run on several processes, in the foreground: torchrun starts them in their own session (its
    output goes to the run's log), and this process shows the progress from the store. Ctrl-C asks the
    run to stop, with its checkpoint; a second Ctrl-C kills it."""
    runs.spawn_worker(run_id, store)
    shown, asked = -1, False
    while True:
        try:
            run = runs.get_run(run_id, store)
            if run["status"] not in ("queued", "running", "paused"):
                return run["status"]
            with opened(store) as s:
                step, loss = s.last_value(run_id, "loss")
                rate = s.last_value(run_id, "steps_per_s")[1]
            if step is not None and step > shown:
                progress(Flush(step, [loss], scalars=[(step, "steps_per_s", rate)] if rate else []))
                shown = step
            time.sleep(0.5)
        except KeyboardInterrupt:
            if asked:
                runs.kill(run_id, store)
                raise
            asked = True
            with contextlib.suppress(ConfigError):
                runs.stop(run_id, store)
