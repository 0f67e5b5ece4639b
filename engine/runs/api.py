"""The public API for runs, from any process: launch them, drive them, read them, delete them.

    launch(cfg)                        validate, write the run as queued, hand it to the warm standby
                                       or start a detached worker
    resume_run(run_id)                 an ended run goes on from its checkpoint, in place
    fork(run_id, step, changes)        a new run at exactly step k of it, with a new lr or optimizer
    fork_plan(run_id, step)            where such a fork starts from, and how many steps it replays
    pause / resume / stop / set_lr     a control row the worker picks up at its next step boundary
    edit_layer / step                  re-initialise or scale one layer of a paused run; take one step of it
    set_plan(run_id, actions)          a running run's scheduled actions still to come, replaced
    wait_ack(control_id)               wait for the worker's acknowledgement
    get_run / list_runs                the runs, with dead workers marked failed (reaping)
    kill(run_id)                       SIGKILL a worker that does not answer
    delete_run(run_id)                 stop (or kill) it, then remove its rows and its files

`store` is the store's path (default: $LIVEPROP_STORE or runs/liveprop.db) or an open Store,
which a long-lived reader such as the dashboard passes so that no call opens a connection.

A new worker spends seconds importing torch before its first step, so launch first offers the run
to the store's warm standby, a worker process that has done so already (engine/runs/standby.py), and
spawns a plain worker only when no standby takes it. LIVEPROP_STANDBY=0 turns standbys off.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time

from engine.errors import ConfigError, DiskFull, RunStateError
from engine.loop import checkpoint, layer_edit

from engine.loop import distributed

from engine.runs import forking, standby
from engine.build.assemble import Prepared, prepare
from engine.config.fields import KEPT_BY_FORK, RunConfig
from engine.config.load import from_dict, to_dict
from engine.config.steering import canonical, entries_problem
from engine.store.files import RunFiles, alive, remove_stale_tmp
from engine.store.db import ACTIVE, PROJECT, Store, default_path, opened

STALE_S = 15.0  # no heartbeat for this long: the worker is presumed dead even if its pid lives
DISK_STALE_S = 2.0  # no heartbeat for this long and the store's disk full: the worker waits for space
LOW_SPACE = 1 << 20  # bytes free below which the store's disk counts as full


# ---------------------------------------------------------------------------------------------
# launching


RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # new_run_id's shape: 20261127-131500-3fa9c2


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def is_run_id(text) -> bool:
    """Whether text has a run id's shape. Ids from a URL or a command line are checked with it before
    they are looked up or shown."""
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None


def create_run(cfg: RunConfig, store: str | None = None) -> tuple[str, Prepared]:
    """Validate, then write the run as queued. Nothing is written when validation fails."""
    p = prepare(cfg)
    run_id = new_run_id()
    with opened(store) as s:
        s.create_run(run_id, to_dict(p.cfg), name=p.cfg.name, total_steps=p.total_steps)
    return run_id, p


def launch(cfg: RunConfig, store: str | None = None) -> str:
    """Validate cfg, hand the run to the store's standby or start a detached worker for it, and
    return its run id. A standby for the next run is started in the background."""
    store_path = str(store or default_path())
    run_id, _ = create_run(cfg, store_path)
    _start(run_id, store_path)
    return run_id


def resume_run(run_id: str, steps: int | None = None, store: str | None = None) -> int:
    """Continue a stopped, failed, diverged or finished run in place, from its checkpoint: its step count,
    curves, weights, optimizer state, lr, RNG states and data position go on (engine/loop/checkpoint.py).
    What it stored after the checkpoint's step is dropped and trained again. steps: train to this step
    (default: the run's own length). Returns the step it resumes from."""
    store_path = str(store or default_path())
    with opened(store_path) as s:
        run = _reap(s, s.get_run(run_id))
        if run is None:
            raise RunStateError(f"no run {run_id!r} in {s.path}")
        if run["status"] in ACTIVE:
            raise RunStateError(f"run {run_id} is {run['status']}; only an ended run is resumed from its checkpoint")
        path = RunFiles.of(run_id, s.path).checkpoint
        if not path.is_file():
            raise RunStateError(f"run {run_id} has no checkpoint (it ended before its first); start it again instead")
        step = checkpoint.load(path)["step"]
        total = steps or run["total_steps"]
        if total is not None and step >= total:
            raise RunStateError(f"run {run_id} has done its {total} steps; give --steps beyond {step} to train on")
        s.truncate(run_id, step)
        s.update_run(run_id, status="queued", error=None, ended=None, pid=None, total_steps=total, checkpoint=str(path))
        s.add_event(run_id, step, "resumed", {"from": run["status"], "step": step})
    _start(run_id, store_path)
    return step


def fork(run_id: str, step: int, changes: dict, store: str | None = None) -> str:
    """A new run that starts at exactly `step` of run_id, with `changes` (a new lr, optimizer, ...): "what if I
    had lowered the lr here?". Its worker replays the parent's steps from the nearest checkpoint at or before
    `step` (engine/runs/forking.py). It counts its steps on from `step`, records its parent (an event "forked"),
    and is drawn as a branch on the parent's loss chart. Returns its id."""
    store_path = str(store or default_path())
    with opened(store_path) as s:
        parent = _reap(s, s.get_run(run_id))
        if parent is None:
            raise RunStateError(f"no run {run_id!r} in {s.path}")
        fixed = [k for k in changes if k in KEPT_BY_FORK]
        if fixed:
            raise ConfigError(f"a fork keeps the model and the data; {fixed[0]} cannot change (start a new run)")
        how = forking.plan(s, run_id, step)
        cfg = from_dict({**parent["config"], "name": f"fork of {parent['name'] or run_id} at step {step}", **changes})
        p = prepare(cfg)
        if p.total_steps is not None and step >= p.total_steps:
            raise ConfigError(f"the fork starts at step {step}; give it more steps than that (--steps)")
        child = new_run_id()
        s.create_run(child, to_dict(p.cfg), name=p.cfg.name, total_steps=p.total_steps)
        s.update_run(child, checkpoint=str(how.source), step=step)
        s.add_event(child, step, "forked", {"parent": run_id, "step": step, "changes": sorted(changes), **how.record()})
    _start(child, store_path)
    return child


def fork_plan(run_id: str, step: int, store=None) -> forking.Plan:
    """Where a fork of run_id at `step` starts from and how many steps it replays (engine/runs/forking.py); raises
    RunStateError, one line, where fork would refuse the step."""
    with opened(store) as s:
        return forking.plan(s, run_id, step)


def _start(run_id: str, store_path: str) -> None:
    """A worker for a queued run: the store's warm standby, else a new detached one (torchrun's, for a
    run on several processes)."""
    claim = None if _processes(run_id, store_path) > 1 else standby.hand_over(run_id, store_path)
    if claim:
        with opened(store_path) as s:  # at once, as spawn_worker does, so that kill finds it
            s.update_run(run_id, pid=claim.pid, heartbeat=time.time())
    else:
        spawn_worker(run_id, store_path)
    standby.warm_next(store_path, claim)


def _processes(run_id: str, store_path: str) -> int:
    with opened(store_path) as s:
        return from_dict(s.get_run(run_id)["config"]).world


def worker_command(run_id: str, store_path: str) -> list[str]:
    """`python -m engine worker RUN`, or torchrun starting one per process (engine/loop/distributed.py)."""
    if _processes(run_id, store_path) > 1:
        with opened(store_path) as s:
            return distributed.command(run_id, store_path, s.get_run(run_id)["config"])
    return [sys.executable, "-m", "engine", "worker", run_id, "--store", store_path]


def spawn_worker(run_id: str, store: str | None = None) -> int:
    """Start the run's worker (worker_command) in its own session, so a viewer that reloads or dies
    does not take it down. Its output goes to the run's log (engine/store/files.py)."""
    store_path = str(store or default_path())
    log = RunFiles.of(run_id, store_path).log
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = standby.detached(worker_command(run_id, store_path), log)
    with opened(store_path) as s:
        s.update_run(run_id, pid=proc.pid, heartbeat=time.time())
    return proc.pid


# ---------------------------------------------------------------------------------------------
# controlling


def _send(run_id: str, command: str, value=None, store=None) -> int:
    with opened(store) as s:
        run = _reap(s, s.get_run(run_id))
        if run is None:
            raise RunStateError(f"no run {run_id!r} in {s.path}")
        if run["status"] not in ACTIVE:
            raise RunStateError(f"run {run_id} is {run['status']}; it takes no more commands")
        if (command, run["status"]) in (("resume", "running"), ("pause", "paused")):  # the worker would ignore it
            raise RunStateError(f"run {run_id} is already {run['status']}; {command} does nothing")
        return s.send_control(run_id, command, value)


def wait_ack(control_id: int, store=None, timeout: float = 10.0) -> dict | None:
    with opened(store) as s:
        deadline = time.time() + timeout
        while time.time() < deadline:
            c = s.control(control_id)
            if c and c["acked"]:
                return c
            time.sleep(0.05)
        return None


def pause(run_id, store=None):
    return _send(run_id, "pause", store=store)


def resume(run_id, store=None):
    return _send(run_id, "resume", store=store)


def stop(run_id, store=None):
    return _send(run_id, "stop", store=store)


def set_lr(run_id, lr: float, store=None):
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"learning rate must be a positive finite number, got {lr}")
    return _send(run_id, "set_lr", float(lr), store=store)


def edit_layer(run_id, layer: str, action: str, factor: float = 1.0, store=None):
    """Re-initialise ("reinit") or scale by factor ("scale") one layer of a paused run (engine/loop/layer_edit.py);
    the edit goes to the worker as JSON text in the control's value."""
    if action not in layer_edit.ACTIONS:
        raise ConfigError(f"an edit is one of {', '.join(layer_edit.ACTIONS)}, not {action!r}")
    if not (isinstance(factor, (int, float)) and math.isfinite(factor)):
        raise ConfigError(f"the scale factor must be a finite number, got {factor}")
    run = get_run(run_id, store)
    if run is not None and run["status"] != "paused":
        raise RunStateError(f"run {run_id} is {run['status']}; a layer is edited while the run is paused")
    return _send(run_id, "edit_layer", json.dumps({"layer": str(layer), "action": action, "factor": factor}), store)


def step(run_id, store=None):
    """One step of a paused run, the lecture's tensors of it recorded as the event "step_trace" (engine/modes/trace.py)."""
    run = get_run(run_id, store)
    if run is not None and run["status"] != "paused":
        raise RunStateError(f"run {run_id} is {run['status']}; Step takes one step of a paused run")
    return _send(run_id, "step", store=store)
def set_plan(run_id, actions, store=None):
    """Replace the scheduled actions still to come of a running or paused run (engine/loop/plan.py Plan.replace):
    the worker takes those after its step. The run's config keeps the actions up to its stored step and the new
    ones after it, which a resume and a fork go on with."""
    problem = entries_problem("at", list(actions))
    if problem:
        raise ConfigError(problem)
    texts = list(canonical("at", actions))
    with opened(store) as s:
        run = s.get_run(run_id)
        if run is not None and run["config"].get("nproc", 1) * run["config"].get("nnodes", 1) > 1:
            raise RunStateError(f"run {run_id} trains on several processes, which keep the schedule it started with")
        cid = _send(run_id, "set_plan", json.dumps(texts), store=s)
        stored = run["step"] or 0  # its last flush's: the actions up to it are done
        done = [a for a in run["config"].get("at", ()) if int(a.split(":", 1)[0]) <= stored]
        ahead = [a for a in texts if int(a.split(":", 1)[0]) > stored]
        s.update_run(run_id, config=json.dumps({**run["config"], "at": done + ahead}))
    return cid


def kill(run_id, store=None):
    """Stop a worker that does not answer: SIGKILL its process group."""
    with opened(store) as s:
        run = s.get_run(run_id)
        if run and run["pid"] and run["status"] in ACTIVE:
            try:  # a launched worker leads its own process group; a foreground `train` does not
                if os.getpgid(run["pid"]) == run["pid"]:
                    os.killpg(run["pid"], signal.SIGKILL)
                else:
                    os.kill(run["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            s.set_status(run_id, "failed", "killed by the user")


def delete_run(run_id: str, store=None, timeout: float = 5.0) -> bool:
    """Stop the run if it is active (kill it if it does not end within timeout), then remove its
    rows and its files (engine/store/files.py). False when there was no such run."""
    with opened(store) as s:
        run = _reap(s, s.get_run(run_id))
        if run is None:
            return False
        if run["status"] in ACTIVE:
            with contextlib.suppress(ConfigError):  # it may have ended in the meantime
                _send(run_id, "stop", store=s)
            deadline = time.time() + timeout
            while time.time() < deadline and (_reap(s, s.get_run(run_id)) or {}).get("status") in ACTIVE:
                time.sleep(0.1)
            kill(run_id, s)
        s.delete_run(run_id)
        RunFiles.of(run_id, s.path).remove()
        return True


# ---------------------------------------------------------------------------------------------
# reading, with dead workers reaped


def _reap(s: Store, run: dict | None) -> dict | None:
    """Mark an active run whose worker is gone as failed, with the reason. A run whose worker lives
    but cannot write (its store's disk is full) reads as paused, reason "disk full", without a write."""
    if run is None or run["status"] not in ACTIVE:
        return run
    now = time.time()
    beat = run["heartbeat"] or run["created"]
    reason = None
    if run["pid"] and not alive(run["pid"]):
        reason = f"worker process {run['pid']} died (last heartbeat {now - beat:.1f} s ago)"
    elif now - beat > DISK_STALE_S and run["pid"] and _disk_full(s.path):
        error = f"disk full: {disk_full_text(s.path)}; the run waits for space"
        return {**run, "status": "paused", "pause_reason": "disk_full", "error": error}
    elif now - beat > STALE_S and (run["pid"] or now - run["created"] > STALE_S):
        reason = f"no heartbeat from the worker for {now - beat:.0f} s"
    if reason:
        remove_stale_tmp(RunFiles.of(run["id"], s.path).root, run["id"])  # its half-written checkpoint
        try:
            s.set_status(run["id"], "failed", reason)
            s.add_event(run["id"], run["step"], "error", {"message": reason})
        except DiskFull:  # shown as failed all the same; written by the next reader once there is space
            return {**run, "status": "failed", "error": reason}
        run = s.get_run(run["id"])
    return run


def _disk_full(store_path: str) -> bool:
    return shutil.disk_usage(os.path.dirname(os.path.abspath(store_path))).free < LOW_SPACE


def disk_full_text(store_path: str) -> str:
    """'the disk holding runs/ has 12 KiB free' (for the one-line messages of readers)."""
    folder = os.path.dirname(os.path.abspath(store_path))
    return f"the disk holding {folder} has {shutil.disk_usage(folder).free // 1024} KiB free"


def current_lr(run_id: str, store=None) -> float | None:
    """The run's learning rate now: the last lr_change event's new rate, else its config's (None: no run)."""
    with opened(store) as s:
        change = s.last_event(run_id, "lr_change")
        run = s.get_run(run_id) if change is None else None
    return change["data"]["new"] if change else run["config"]["lr"] if run else None


def forks_of(run_id: str, store=None) -> list[tuple[str, int]]:
    """(child run, the step it forked at) for every fork of run_id that still exists, oldest first."""
    with opened(store) as s:
        return [(e["run"], e["step"]) for e in s.events_naming("forked", "parent", run_id)]


def get_run(run_id: str, store=None) -> dict | None:
    with opened(store) as s:
        return _reap(s, s.get_run(run_id))


def list_runs(store=None) -> list[dict]:
    with opened(store) as s:
        return [_reap(s, r) for r in s.list_runs()]
