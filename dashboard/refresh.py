"""When the live panels refresh: each panel is an st.fragment whose run_every is the refresh interval
while its run is queued or running (or a control's effect is awaited), and None once it is paused or
has ended. A panel that finds its run's state changed asks for one full rerun (st.rerun), which
re-creates it with the new interval: no polling loop, no full-page reruns for the updates themselves.

With LIVEPROP_TIMING=FILE each refresh appends one JSON line: the panel, its runs, how long it took
(bench/bench_dashboard.py reads them).
"""

from __future__ import annotations

import json
import os
import time

import streamlit as st

import engine
from engine.store.db import ACTIVE

from . import pages_common, state

FAST = 1.0  # s between refreshes of the status and the loss
SLOW = 3.0  # s between refreshes of the detail panels
WARMING = 0.25  # s between refreshes while a started run has no data yet


def _awaiting(run: dict) -> bool:
    """A control was sent and its effect is not visible yet."""
    want, deadline = st.session_state.get(state.EXPECT, {}).get(run["id"], (None, 0))
    if want is None or time.time() > deadline:
        return False
    reached = (
        run["status"] == want
        or (want == "ended" and run["status"] not in ACTIVE)
        or (want == "running" and run["status"] not in ACTIVE)
    )
    if reached:
        st.session_state[state.EXPECT].pop(run["id"], None)
    return not reached


def interval(runs: list[dict | None], every: float, warm: bool = False) -> float | None:
    """every while any of the runs is queued or running or awaited, else None (static). With
    warm, faster while a live run has no data yet, so its first points show as soon as they exist."""
    live = [r for r in runs if r and (r["status"] in ("queued", "running") or _awaiting(r))]
    if not live:
        return None
    return min(every, WARMING) if warm and any(not r["step"] for r in live) else every


def _runs(ids) -> list[dict | None]:
    return [engine.get_run(i, pages_common.store()) for i in ids]


def fragment(body, ids: list[str], every: float, *args, warm: bool = False):
    """Run body(runs, *args) as a fragment refreshing every `every` s while the runs are live."""
    name = f"{body.__module__.rsplit('.', 1)[-1]}.{body.__name__}"  # live._run_and_loss, details.panel
    run_every = interval(_runs(ids), every, warm)

    def panel():
        t0 = time.perf_counter()
        runs = _runs(ids)
        info = body(runs, *args)
        _log_timing(name, ids, t0, info)
        if interval(runs, every, warm) != run_every:
            st.rerun()  # state changed: re-create with the new interval

    panel.__qualname__ = name
    st.fragment(panel, run_every=run_every)()


def _log_timing(name: str, ids, t0: float, info: dict | None = None):
    """With LIVEPROP_TIMING=FILE, append one JSON line per refresh (the benchmark reads them)."""
    path = os.environ.get("LIVEPROP_TIMING")
    if path:
        with open(path, "a") as f:
            f.write(
                json.dumps(
                    {
                        "panel": name,
                        "runs": list(ids),
                        "ms": (time.perf_counter() - t0) * 1000,
                        "time": time.time(),
                        **(info or {}),
                    }
                )
                + "\n"
            )
