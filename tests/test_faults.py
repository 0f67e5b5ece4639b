"""The fault campaign: what a run survives, with figures for the fault table (tests/conftest.py).

    make fault    every case with the campaign's full number of trials (LIVEPROP_FAULT_FULL=1)
    make test     the same cases, one or two trials each

Every case checks the same promises: the run ends in a status that says what happened, the store
passes SQLite's integrity check, and the loss series is contiguous: every step the run's row
claims is stored. Points lost = steps claimed (or acknowledged) but not stored.
The Visdom cases are in test_faults_visdom.py; hostile input in test_hostile_files.py,
test_config_fuzz.py and test_dashboard_injection.py.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SMALL, cli_cmd, trials, wait_for

import engine
from engine.errors import DiskFull
from engine.loop.control import Control
from engine.loop.telemetry import Flush
from engine.runs import api as runs
from engine.sinks import store as store_sink
from engine.store.db import Store
from engine.store.files import RunFiles


def series(store: str, run_id: str) -> tuple[dict, int]:
    """(run row, points lost): the store must be intact and hold every step 0..step-1 of the loss."""
    db = sqlite3.connect(store)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    s = Store(store)
    try:
        run = runs._reap(s, s.get_run(run_id))
        steps = [st for st, _ in s.scalars(run_id, "loss")]
    finally:
        s.close()
    claimed = run["step"]
    assert steps == list(range(len(steps))), f"holes in the series: {len(steps)} rows, last {steps[-1:]}"
    return run, max(0, claimed - len(steps))


def temporaries(files: RunFiles) -> list[Path]:
    """A checkpoint being written: RUN/STEP.pt.tmp-PID (the write), RUN.pt.tmp-PID (the link to it)."""
    return [*files.checkpoint.parent.glob(f"{files.run_id}.pt.tmp-*"), *files.history.glob("*.tmp-*")]


def whole(checkpoint: Path) -> bool:
    """No checkpoint (killed before the rename), or one that loads: never half a file. The kill may
    land just after the rename, before the status is written: a whole checkpoint of a failed run."""
    if not checkpoint.exists():
        return True
    try:
        torch.load(checkpoint, weights_only=True)
        return True
    except Exception:
        return False


def killed(pid: int):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------
# kill -9


@pytest.mark.fault("kill -9 at a random moment")
def test_kill_9_at_random_moments_is_marked_failed_with_the_series_intact(store, small, fault_table):
    """A worker SIGKILLed anywhere (importing torch, training, flushing) is marked failed within 5 s
    by the next reader, and what it stored is contiguous."""
    rng, n, failures, lost, slowest = random.Random(9), trials(2, 30), 0, 0, 0.0
    for _ in range(n):
        run_id = engine.launch(small(until_stopped=True, pace=400, steps=0), store)
        pid = wait_for(lambda: engine.get_run(run_id, store)["pid"], what="the worker's pid")  # noqa: B023
        time.sleep(rng.uniform(0.0, 5.0))  # before, at or after the first step: torch takes ~3 s to import
        killed(pid)
        t0 = time.monotonic()
        try:
            wait_for(lambda: engine.get_run(run_id, store)["status"] == "failed", timeout=5.0, what="failed")  # noqa: B023
            run, points = series(store, run_id)
            slowest = max(slowest, time.monotonic() - t0)
            lost += points
            assert "died" in run["error"], run["error"]
        except (AssertionError, pytest.fail.Exception):
            failures += 1
    fault_table.add("kill -9 at a random moment", n, failures, lost, f"marked failed within {slowest:.1f} s")
    assert failures == 0 and lost == 0


@pytest.mark.fault("SIGKILL during a checkpoint write")
def test_sigkill_during_the_checkpoint_write_leaves_no_temp_file(store, small, fault_table):
    """Killed while torch.save writes RUN.pt.tmp-PID: the reaper removes the half file, no RUN.pt is
    half written, and the next worker of the store also sweeps any dead writer's temporaries."""
    n, failures, caught = trials(1, 5), 0, 0
    for _ in range(n):
        run_id = engine.launch(small(mode="nn", d_in=1500, hidden=1500, steps=40, telemetry_every=1000), store)
        files = RunFiles.of(run_id, store)
        pid = wait_for(lambda: engine.get_run(run_id, store)["pid"], what="the worker's pid")  # noqa: B023
        deadline, polls = time.monotonic() + 60, 0
        while time.monotonic() < deadline:
            if temporaries(files):
                killed(pid)
                caught += 1
                break
            polls += 1
            if polls % 200 == 0 and engine.get_run(run_id, store)["status"] not in engine.ACTIVE:
                break  # the save was quicker than this loop: no kill this time
            time.sleep(0.001)
        run = wait_for(
            lambda: (r := engine.get_run(run_id, store))["status"] not in engine.ACTIVE and r,  # noqa: B023
            what="the run's end",
        )
        leftovers = temporaries(files)
        if leftovers or run["status"] not in ("failed", "finished") or not whole(files.checkpoint):
            failures += 1
            print("failed trial:", run["status"], run["error"], leftovers, files.checkpoint.exists())
    stale = Path(store).parent / "checkpoints" / "20260101-000000-abcdef.pt.tmp-999999999"
    stale.write_bytes(b"half")  # a dead writer's (no such pid); the next worker's start removes it
    engine.launch(small(steps=2), store)
    wait_for(lambda: not stale.exists(), what="the stale temporary removed")
    fault_table.add("SIGKILL during a checkpoint write", n, failures, 0, f"{caught} of {n} killed mid-write")
    assert failures == 0


# ---------------------------------------------------------------------------------------------
# many writers, many readers


@pytest.mark.fault("4 runs x 3 readers")
def test_four_runs_and_three_polling_readers_see_no_lock_error(store, small, fault_table):
    ids = [engine.launch(small(steps=400, pace=200, telemetry_every=20), store) for _ in range(4)]
    errors, done = [], threading.Event()

    def read():
        s = Store(store)
        try:
            while not done.is_set():
                for run in engine.list_runs(s):
                    s.scalars(run["id"], "loss", after_step=max(0, run["step"] - 50))
                    s.bucketed(run["id"], "loss", 100)
                    s.events(run["id"])
                time.sleep(0.02)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            s.close()

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        wait_for(
            lambda: all(engine.get_run(i, store)["status"] not in engine.ACTIVE for i in ids),
            timeout=120,
            what="4 runs to end",
        )
    finally:
        done.set()
        for t in readers:
            t.join()
    results = [series(store, i) for i in ids]
    lost = sum(points for _, points in results)
    failures = len(errors) + sum(run["status"] != "finished" for run, _ in results)
    fault_table.add("4 runs x 3 readers", 4, failures, lost, f"{len(errors)} reader errors")
    assert not errors and failures == 0 and lost == 0, errors


# ---------------------------------------------------------------------------------------------
# divergence and CUDA memory


@pytest.mark.fault("divergence")
def test_a_diverging_run_keeps_every_step(store, small, run_inprocess, fault_table):
    run_id, status = run_inprocess(small(lr=50.0, steps=200, on_divergence="stop"), store)
    run, lost = series(store, run_id)
    fault_table.add("divergence", 1, status != "diverged", lost)
    assert status == "diverged" and lost == 0


@pytest.mark.fault("out of memory on CUDA")
def test_cuda_out_of_memory_fails_the_run_in_one_line(store, small, fault_table):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; bench/gpu_check.sh runs this on the GPU machine")
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(int(free * 0.97), dtype=torch.uint8, device="cuda")  # the run passes its check, then finds none
    try:
        run_id = engine.launch(small(device="cuda", steps=50, d_in=4096, hidden=4096, batch_size=4096), store)
        run = wait_for(
            lambda: (r := engine.get_run(run_id, store))["status"] not in engine.ACTIVE and r, timeout=120, what="end"
        )
    finally:
        del hog
    fault_table.add("out of memory on CUDA", 1, run["status"] != "failed", 0)
    assert run["status"] == "failed" and "out of memory" in run["error"].lower() and "\n" not in run["error"]


# ---------------------------------------------------------------------------------------------
# a full disk: the sink alone (everywhere), then a real worker on a small filesystem (where one mounts)


class FlakyStore(Store):
    """A store whose disk is full for the flushes numbered in `full`."""

    full: set = set()
    calls = 0

    def write_flush(self, run_id, flush):
        FlakyStore.calls += 1
        if FlakyStore.calls in FlakyStore.full:
            raise DiskFull("the disk holding the run store is full")
        return super().write_flush(run_id, flush)


def test_a_flush_the_full_disk_refused_is_retried_in_order_and_the_run_paused_and_resumed(store, monkeypatch):
    """Defect: a failed flush was dropped while later ones committed (holes, and runs.step ahead)."""
    s = Store(store)
    s.create_run("r", {})
    monkeypatch.setattr(store_sink, "Store", FlakyStore)
    monkeypatch.setattr(store_sink, "RETRY_S", 0.05)
    monkeypatch.setattr(store_sink, "PAUSE_AFTER_S", 0.2)
    FlakyStore.calls, FlakyStore.full = 0, set(range(3, 30))  # flush 3 and its retries fail for a while
    control = Control()
    sink = store_sink.StoreSink(store, "r", control)
    for i in range(6):
        sink.on_flush(Flush(10 * i, [1.0] * 10))
    commands = wait_for(lambda: control.take(), what="a command from the sink")
    assert commands == [(None, "pause", "disk_full")]
    wait_for(lambda: s.get_run("r")["error"], what="the reason written")
    paused = s.get_run("r")
    assert paused["status"] == "paused" and paused["pause_reason"] == "disk_full"
    assert paused["error"].startswith("disk full")
    assert commands + wait_for(lambda: control.take(), what="resume") == [
        (None, "pause", "disk_full"),
        (None, "resume", None),
    ]
    sink.close()
    assert [st for st, _ in s.scalars("r", "loss")] == list(range(60))  # every step, in order
    assert s.get_run("r")["step"] == 60 and s.get_run("r")["error"] is None and sink.error is None


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only): skips with the reason elsewhere."""
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {r.stderr.strip()[:80]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.fault("disk full")
def test_a_full_disk_pauses_the_run_and_it_resumes_when_space_returns(small_disk, fault_table):
    """The store on a small filesystem, filled with ballast to 600 KiB free; a foreground run of 30,000
    steps fills it, pauses with the reason "disk full" (readers and `engine runs` say so, without a
    traceback), and goes on when the ballast is deleted. The series is contiguous."""
    store = str(small_disk / "liveprop.db")
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "ballast").write_bytes(bytes(free - 600 * 1024))
    cfg = dict(SMALL, steps=30000, pace=3000, telemetry_every=0, flush_every=2000)
    flags = ["--no-visdom", *[x for k, v in cfg.items() for x in (f"--{k.replace('_', '-')}", v)]]
    proc = subprocess.Popen(
        cli_cmd("train", "--store", store, *flags), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        run = wait_for(
            lambda: (rs := engine.list_runs(store)) and rs[0]["status"] == "paused" and rs[0], timeout=60, what="pause"
        )
        listing = subprocess.run(
            cli_cmd("runs", "--store", store), cwd=REPO, capture_output=True, text=True, timeout=60
        )
        (small_disk / "ballast").unlink()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    final, lost = series(store, run["id"])
    s = Store(store)
    reasons = [e["data"].get("reason") for e in s.events(run["id"], kind="pause")]
    resumed = len(s.events(run["id"], kind="resume"))
    s.close()
    ok = proc.returncode == 0 and final["status"] == "finished" and final["step"] == 30000 and resumed == 1
    fault_table.add("disk full", 1, int(not ok), lost, f"paused at step {run['step']}, resumed")
    assert run["pause_reason"] == "disk_full" and run["error"].startswith("disk full"), run["error"]
    assert listing.returncode == 0 and "paused" in listing.stdout and "Traceback" not in listing.stderr
    assert "Traceback" not in err and "the disk holding the run store is full" in err
    assert reasons == ["disk_full"] and ok and lost == 0, (final, err[-500:])


def test_readers_of_a_full_disk_show_the_run_paused_without_writing(store, small, monkeypatch):
    """A worker alive but unable to write (its heartbeat stale) reads as paused, "disk full"; a dead
    worker's run reads as failed even when that cannot be written. Neither raises."""
    s = Store(store)
    s.create_run("r", {})
    s.update_run("r", status="running", pid=os.getpid(), heartbeat=time.time() - 5)
    monkeypatch.setattr(runs, "_disk_full", lambda path: True)
    monkeypatch.setattr(runs, "disk_full_text", lambda path: "the disk holding runs/ has 0 KiB free")
    run = engine.get_run("r", s)
    assert run["status"] == "paused" and run["error"].startswith("disk full")
    assert s.get_run("r")["status"] == "running"  # nothing written

    def full(*a, **k):
        raise DiskFull("the disk holding the run store is full")

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    s.update_run("r", pid=dead.pid)
    monkeypatch.setattr(Store, "set_status", full)
    assert engine.get_run("r", s)["status"] == "failed"


def test_the_train_page_says_a_run_waits_for_disk_space(store, monkeypatch):
    """What a learner sees of a run the full disk paused: one warning with the reason, not a bare 'paused'."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LIVEPROP_STORE", store)
    s = Store(store)
    run_id = runs.new_run_id()
    s.create_run(run_id, vars(engine.RunConfig(device="cpu")), total_steps=100)
    reason = "disk full: 3 flush(es) (steps 2000-4511) wait for space"
    s.update_run(
        run_id, status="paused", pause_reason="disk_full", error=reason, pid=os.getpid(), heartbeat=time.time() + 60
    )
    s.close()
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    [warning] = [w.value for w in at.warning if "disk full" in w.value]
    assert "resumes by itself" in warning and "2000" in warning
