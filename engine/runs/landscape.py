"""The loss landscape of a paused or ended run, as a background job (engine/tools/landscape.py computes it):

    start(run_id, grid)     check the run, then start `python -m engine landscape RUN` detached, on the run's device
    status(run_id)          the job's state ("running", "done", "failed"), its points done of total, its ETA, and the
                            result so far (None: no landscape was asked for)
    run_job(run_id, grid)   the job itself (that command, in the foreground): the run's latest checkpoint built into
                            its mode, the batch its next step takes, the path from its stored checkpoints; the state
                            written after the line and after each row of the plane

It never runs inside a training step: the run is paused (its worker waits between two steps, and wrote its weights as
a checkpoint when it paused: engine/runs/worker.py) or has ended. Its cost is bounded: POINTS_1D + grid * grid
forward passes of one batch, and at most TIME_LIMIT_S (engine/tools/landscape.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.build.assemble import build, prepare
from engine.config.load import from_dict
from engine.errors import ConfigError, RunStateError
from engine.loop import checkpoint
from engine.runs import api, standby
from engine.store.db import PROJECT, opened
from engine.store.files import RunFiles, alive
from engine.tools import landscape as ls

CHECKPOINT_WAIT_S = 10.0  # how long a paused run's checkpoint of its pause is waited for


def _refusal(run: dict | None, run_id: str, files: RunFiles) -> str | None:
    if run is None:
        return f"no run {run_id!r}"
    if run["status"] in ("queued", "running"):
        return f"run {run_id} is {run['status']}; pause it or let it end first (a landscape never runs inside a step)"
    if not files.checkpoint.is_file():
        return f"run {run_id} has no checkpoint (it ended before its first)"
    return None


def _check_grid(grid) -> None:
    if not (isinstance(grid, int) and 3 <= grid <= ls.MAX_GRID):
        raise ConfigError(f"the landscape's grid is 3 to {ls.MAX_GRID} points a side, got {grid!r}")


def start(run_id: str, grid: int = ls.GRID, store=None) -> int:
    """Start the landscape job of a paused or ended run; returns its pid. RunStateError when the run cannot have one
    now (running, no checkpoint, a job of it still computing), ConfigError for a grid out of range."""
    _check_grid(grid)
    with opened(store) as s:
        files = RunFiles.of(run_id, s.path)
        why = _refusal(api.get_run(run_id, s), run_id, files)
        if why:
            raise RunStateError(why)
        if (status(run_id, s) or {}).get("state") == "running":
            raise RunStateError(f"the landscape of run {run_id} is being computed already")
        path = s.path
    files.log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "engine", "landscape", run_id, "--grid", str(grid), "--store", str(path)]
    proc = standby.detached(argv, files.log)
    _write(files.landscape, _state("running", proc.pid, 0, ls.POINTS_1D + grid * grid))
    return proc.pid


def _state(state: str, pid: int, done: int, total: int, **more) -> dict:
    return {"state": state, "pid": pid, "done": done, "total": total, "started": time.time(), "updated": time.time(),
            **more}  # fmt: skip


def _write(path: Path, doc: dict) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, allow_nan=False))
    os.replace(tmp, path)


def status(run_id: str, store=None) -> dict | None:
    """The job's last word, with "eta" (seconds left, None before the first row); a "running" job whose process is
    gone reads "failed". None when the run has no landscape."""
    with opened(store) as s:
        path = RunFiles.of(run_id, s.path).landscape
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if doc["state"] == "running" and not alive(doc["pid"]):
        doc.update(state="failed", error=f"the landscape job (process {doc['pid']}) ended without a result; see the run's log")
    elapsed = doc["updated"] - doc["started"]
    doc["eta"] = elapsed * (doc["total"] - doc["done"]) / doc["done"] if doc["done"] and doc["state"] == "running" else None
    return doc


def _latest_checkpoint(files: RunFiles, run: dict) -> dict:
    """The run's latest checkpoint; for a paused run, the one its worker wrote when it paused (waited for)."""
    deadline = time.monotonic() + CHECKPOINT_WAIT_S
    while True:
        ckpt = checkpoint.load(files.checkpoint)
        if run["status"] != "paused" or ckpt["step"] >= (run["step"] or 0) or time.monotonic() > deadline:
            return ckpt
        time.sleep(0.2)


def _path(files: RunFiles, names, like: dict) -> list[tuple[int, dict]]:
    """(step, weights) of every stored checkpoint of the run, oldest first, on the device and dtype of `like`."""
    out = []
    for f in sorted(files.history.glob("*.pt")):
        if f.stem.isdigit():
            model = checkpoint.load(f)["model"]
            out.append((int(f.stem), {n: model[n].to(like[n]) for n in names}))
    return out


def run_job(run_id: str, grid: int = ls.GRID, store=None, time_limit: float = ls.TIME_LIMIT_S) -> dict:
    """Compute the landscape of run_id here, writing its state as it goes; returns the final state."""
    _check_grid(grid)
    with opened(store) as s:
        run = api.get_run(run_id, s)
        files = RunFiles.of(run_id, s.path)
    why = _refusal(run, run_id, files)
    if why:
        raise RunStateError(why)
    total = ls.POINTS_1D + grid * grid
    state = _state("running", os.getpid(), 0, total)
    _write(files.landscape, state)
    try:
        ckpt = _latest_checkpoint(files, run)
        p = prepare(from_dict(ckpt["config"]), memory=False)
        mode, batches = build(p)
        step = checkpoint.restore(ckpt, mode, batches, p.cfg)
        x, y = next(batches)  # the batch of the run's next step
        w = ls.weights_of(mode)
        state.update(step=step, batch=len(x), device=p.device_note, grid=grid)

        def progress(done, _total, result):
            state.update(done=done, updated=time.time(), result=result)
            _write(files.landscape, state)

        result = ls.landscape(mode, x, y, _path(files, w, w), grid, progress=progress, time_limit=time_limit)
        state.update(state="done", done=total if result["rows_done"] == grid else state["done"], result=result)
        state.update(updated=time.time(), complete=result["rows_done"] == grid)
    except Exception as e:  # one line for the viewer; the traceback goes to the run's log
        state.update(state="failed", error=f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}")
        _write(files.landscape, state)
        raise
    _write(files.landscape, state)
    return state
