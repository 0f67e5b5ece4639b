"""Fault campaign, issue 9: the Visdom server killed mid-run, and a Visdom server that stalls.

Each trial is a real run (the worker's own body, in this process) streaming to a real Visdom server
on loopback, or to a socket that accepts and never answers. What counts is what reaches Visdom,
compared step by step with the store's loss series (the full record): the points lost. Each test
records its trials in the fault table (conftest.py): trials(1, 3), the full number under make fault.

The runs stay below the sink's decimation bound, so every step must arrive as itself: the loss window
holds two traces (raw, smoothed) of at most max_points / 4 buckets each (windows.py), and a bucket
holds one step until a trace outgrows its buckets.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest
import requests
from conftest import trials
from test_visdom_sink import StalledServer

from engine.sinks import CLOSE_S
from engine.sinks import visdom as vsink
from engine.store.db import Store
from engine.store.files import RunFiles

STEPS, PACE = 450, 120  # a run of about 4 s
assert STEPS <= 2000 // 4, "the default max_points (2000) keeps every step of the loss trace"
EXIT_BOUND_S = 6.0  # CLOSE_S (2 s) with slack for a small, shared machine
REQUEST_TIMEOUT_S = 30.0  # far above the bound: only the 2 s cap can meet it
LOOPBACK = requests.Session()
LOOPBACK.trust_env = False  # no proxy for the test's own servers


def stored_loss(store: str, run_id: str) -> dict[int, float]:
    s = Store(store)
    try:
        return dict(s.scalars(run_id, "loss"))
    finally:
        s.close()


def visdom_loss(server, env: str) -> dict[int, float]:
    """{step: loss} of the raw loss trace the server holds for env, read through Visdom's HTTP API
    (what visdom.Visdom.get_window_data posts); {} when it has no such window (it answers HTTP 500)."""
    r = LOOPBACK.post(f"{server.url}/win_data", json={"eid": env, "win": "loss"}, timeout=10)
    if r.status_code != 200:
        return {}
    trace = next(t for t in r.json()["content"]["data"] if t["name"] == "loss")
    return dict(zip(trace["x"], trace["y"]))


def lost_and_wrong(expected: dict[int, float], got: dict[int, float]) -> tuple[int, int]:
    """(steps missing from got, steps whose value differs)."""
    lost = len(expected.keys() - got.keys())
    wrong = sum(got[s] != v for s, v in expected.items() if s in got)
    return lost, wrong


def visdom_events(store: str, run_id: str) -> list[dict]:
    s = Store(store)
    try:
        return [e["data"] for e in s.events(run_id, kind="visdom")]
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# the server killed mid-run, and started again on the same port


def killed_mid_run(small, store, run_inprocess, servers, kill_at: int, env: str) -> dict:
    """One trial: SIGKILL the server once the run has flushed step kill_at and the server holds some
    of its loss points (the sink sends the loss once a second), then start a new one on the same port
    (it comes back empty: Visdom saves an env only when asked). Starting a server takes
    1.5 s or more here, so the run waits near its end for the restart if it has not happened yet:
    this case is a restart during the run (a run that ends while the server is down is the spool's
    case, below)."""
    server = servers()
    kill_now, restarted, restart = threading.Event(), threading.Event(), {}

    def kill_and_restart():
        kill_now.wait(60)
        try:
            deadline = time.monotonic() + 30
            while not restart.get("held") and time.monotonic() < deadline:
                restart["held"] = len(visdom_loss(server, env))
                time.sleep(0.05)
            os.killpg(server.pid, signal.SIGKILL)
            server.stop()
            restart["server"] = servers(server.port)
        except Exception as e:
            restart["error"] = e
        finally:
            restarted.set()

    def on_flush(flush):
        if flush.last_step >= kill_at:
            kill_now.set()
        if flush.last_step >= STEPS - 30 and not restarted.is_set():
            restart["waited"] = True
            restarted.wait(60)

    killer = threading.Thread(target=kill_and_restart, daemon=True)
    killer.start()
    cfg = small(steps=STEPS, pace=PACE, flush_every=10, telemetry_every=10, visdom=server.url, visdom_env=env)
    run_id, status = run_inprocess(cfg, store, callbacks={"on_flush": [on_flush]})
    kill_now.set()  # a run that failed early
    killer.join(60)
    assert "error" not in restart, f"the restart failed: {restart.get('error')}"

    events = visdom_events(store, run_id)
    lost, wrong = lost_and_wrong(stored_loss(store, run_id), visdom_loss(restart["server"], env))
    return {
        "status": status,
        "lost": lost,
        "wrong": wrong,
        "waited": restart.get("waited", False),
        "held": restart["held"],
        "saw_outage": any(e["state"] == "buffering" and e["error"] for e in events),
        "final": events[-1]["status"] if events else None,
    }


@pytest.mark.fault("visdom server killed mid-run")
def test_visdom_server_killed_mid_run(small, tmp_path, run_inprocess, servers, fault_table):
    n = trials(1, 3)
    results = []
    for trial in range(n):
        kill_at = random.Random(trial).randrange(STEPS // 5, STEPS // 3)  # 0.8 to 1.3 s into the run
        store = str(tmp_path / f"trial{trial}" / "runs" / "liveprop.db")
        env = f"fault-killed-{trial}-{time.time_ns()}"
        results.append({"kill_at": kill_at, **killed_mid_run(small, store, run_inprocess, servers, kill_at, env)})
    failures = sum(r["status"] != "finished" or r["lost"] + r["wrong"] > 0 for r in results)
    waited = sum(r["waited"] for r in results)
    note = (
        f"killed at step {', '.join(str(r['kill_at']) for r in results)} of {STEPS}, the server holding"
        f" {', '.join(str(r['held']) for r in results)} loss points"
        + (f"; the run waited for the restart in {waited}" if waited else "")
    )
    fault_table.add("visdom server killed mid-run", n, failures, sum(r["lost"] for r in results), note)

    for r in results:
        assert r["held"], f"the server held none of the run's loss points when it was killed: {r}"
        assert r["saw_outage"], f"the kill at step {r['kill_at']} landed after the run: {r}"
    assert failures == 0, results
    assert all(r["final"] == "connected" for r in results), results


# ---------------------------------------------------------------------------------------------
# a server that accepts and never answers: the worker's exit, then the spool and its replay


def stalled(small, store, run_inprocess, replay_server) -> dict:
    """One trial: a run against a stalled server; how long after its final status run_worker returns;
    then the points in the spool, and what replaying it into a real server delivers."""
    before = set(threading.enumerate())
    stall = StalledServer()
    try:
        cfg = small(steps=200, flush_every=10, telemetry_every=10, visdom=stall.url, visdom_timeout=REQUEST_TIMEOUT_S)
        run_id, status = run_inprocess(cfg, store)
        returned = time.time()
        # the run's sink's thread, still in its first request: the run did not wait for it
        held = [t for t in threading.enumerate() if t.name == "liveprop-visdom" and t not in before]
    finally:
        stall.close()  # the held request ends now; the sink's thread spools once more and exits
    for thread in held:
        thread.join(30)

    s = Store(store)
    exit_s = returned - s.get_run(run_id)["ended"]  # ended: written with the final status
    s.close()
    spool = RunFiles.of(run_id, store).spool
    loss = stored_loss(store, run_id)
    spooled = next(d for d in map(json.loads, spool.read_text().splitlines()) if d.get("win") == "loss")
    in_spool = dict(zip(spooled["traces"]["loss"]["x"], spooled["traces"]["loss"]["y"]))
    replayed = vsink.replay(str(spool), vsink.VisdomSettings(url=replay_server.url))
    lost, wrong = lost_and_wrong(loss, visdom_loss(replay_server, vsink.env_name("", run_id)))
    return {
        "status": status,
        "exit_s": exit_s,
        "held": bool(held),
        "spool_lost": lost_and_wrong(loss, in_spool),
        "replayed": replayed,
        "lost": lost,
        "wrong": wrong,
        "final": visdom_events(store, run_id)[-1],
        "spool": str(spool),
    }


# Issue 9, defect 8: the worker waited for the sink's thread to give up on a stalled server before it
# returned: 19 s after the run's final status with the default 5 s request timeout (against a 10 s
# goal). With this 30 s timeout, a close without the budget returned 60 s after the status (the held
# request, then the final one, each timed out), and this test failed. Now engine.sinks.close gives
# every sink CLOSE_S (2 s) together, and what is undelivered waits in the spool.
@pytest.mark.fault("visdom server stalled")
def test_visdom_server_stalled_exit_is_bounded_and_the_spool_replays(
    small, tmp_path, run_inprocess, servers, fault_table
):
    n = trials(1, 3)
    replay_server = servers()
    results = []
    for trial in range(n):
        store = str(tmp_path / f"trial{trial}" / "runs" / "liveprop.db")
        results.append(stalled(small, store, run_inprocess, replay_server))
    failures = sum(
        r["status"] != "finished"
        or r["exit_s"] >= EXIT_BOUND_S
        or r["lost"] + r["wrong"] > 0
        or r["spool_lost"] != (0, 0)
        for r in results
    )
    note = f"exit {max(r['exit_s'] for r in results):.1f} s after the status (worst of {n}; cap {CLOSE_S:g} s)"
    fault_table.add("visdom server stalled", n, failures, sum(r["lost"] for r in results), note)

    for r in results:
        assert r["status"] == "finished"
        assert r["exit_s"] < EXIT_BOUND_S, f"run_worker returned {r['exit_s']:.1f} s after the final status"
        assert r["held"], "the sink's request ended before the run did: the exit bound proves nothing"
        assert r["spool_lost"] == (0, 0), "the spool lacks steps of the store's loss series (lost, wrong)"
        assert r["final"]["state"] == "buffering" and r["spool"] in r["final"]["error"], r["final"]
        assert r["replayed"] == "connected" and (r["lost"], r["wrong"]) == (0, 0), r
