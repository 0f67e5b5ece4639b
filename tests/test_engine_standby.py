"""The warm standby (engine/runs/standby.py): a launch is claimed by the waiting standby, which becomes
the run's worker (its pid, its log, its checkpoint), and a fresh standby follows for the next run;
with none (or LIVEPROP_STANDBY=0, or one killed with -9, or one that refuses) launch spawns a plain
worker as before; an idle standby exits by itself, and there is one per store.

Structure only: no test times a start. The speed is bench/bench_dashboard.py's part (a). conftest's
reaper kills every standby of a test's store when the test ends."""

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import _argv, _is_standby, kill_workers, wait_for

import engine
from engine import Store
from engine.runs import standby
from engine.store.files import RunFiles, StandbyFiles

LONG = 10**7  # steps: a run that only ends when told to


@pytest.fixture(autouse=True)
def standbys_on(monkeypatch, tmp_path):
    if StandbyFiles.of(str(tmp_path / "runs" / "liveprop.db")).socket is None:
        pytest.skip("the temp folder's path is too long for a UNIX socket")
    monkeypatch.setenv("LIVEPROP_STANDBY", "1")  # conftest turns them off for the other tests
    monkeypatch.setenv("LIVEPROP_STANDBY_IDLE", "120")  # one a test leaves behind ends by itself too


def long_run(small):
    return small(mode="nn", arch="mlp", dataset="teacher", steps=LONG, telemetry_every=500, flush_seconds=0.05)


def losses(store, run_id):
    s = Store(store)
    try:
        return s.scalars(run_id, "loss")
    finally:
        s.close()


def ended(run_id, store):
    run = engine.get_run(run_id, store)
    return run if run["status"] not in engine.ACTIVE else None


def gone(pid):
    """The process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def standby_pids(store) -> set[int]:
    """Every `python -m engine standby` of this store's folder, waiting or claimed."""
    root = Path(store).parent
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_standby(_argv(int(p.name)), root)}


def ready(store) -> int | None:
    """The pid of the store's standby once it listens (not one that is some run's worker now)."""
    if not StandbyFiles.of(store).socket.exists():
        return None
    workers = {r["pid"] for r in engine.list_runs(store)}
    waiting = [pid for pid in standby_pids(store) - workers if not gone(pid)]
    return waiting[0] if len(waiting) == 1 else None


def is_plain_worker(pid, run_id):
    argv = _argv(pid)
    return b"worker" in argv and run_id.encode() in argv and b"standby" not in argv


def stop_and_wait(run_id, store):
    engine.wait_ack(engine.stop(run_id, store), store, timeout=20)
    return wait_for(lambda: ended(run_id, store), timeout=30, what="the run to stop")


# ---------------------------------------------------------------------------------------------


def test_the_waiting_standby_claims_the_launch_and_a_fresh_one_follows(small, store):
    engine.warm(store)
    first = wait_for(lambda: ready(store), timeout=90, what="a standby listening")

    run_id = engine.launch(long_run(small), store)
    assert engine.get_run(run_id, store)["pid"] == first  # at once, before the run has started
    wait_for(lambda: len(losses(store, run_id)) > 20, timeout=60, what="the claimed run's losses")
    run = engine.get_run(run_id, store)
    assert run["status"] == "running" and run["pid"] == first
    log = str(RunFiles.of(run_id, store).log)
    assert os.readlink(f"/proc/{first}/fd/1") == os.readlink(f"/proc/{first}/fd/2") == log  # the worker's output
    assert os.getpgid(first) == first  # its own process group, as a spawned worker's: kill works alike

    second = wait_for(lambda: ready(store), timeout=90, what="a fresh standby for the next run")
    assert second != first
    run = stop_and_wait(run_id, store)
    assert run["status"] == "stopped", run["error"]
    assert torch.load(run["checkpoint"], weights_only=True)["step"] == run["step"] > 20
    wait_for(lambda: gone(first), timeout=10, what="the claimed standby to exit with its run")

    run_id = engine.launch(small(steps=30), store)
    assert engine.get_run(run_id, store)["pid"] == second
    run = wait_for(lambda: ended(run_id, store), timeout=60, what="the second run to end")
    assert run["status"] == "finished", run["error"]
    assert [s for s, _ in losses(store, run_id)] == list(range(30))
    assert torch.load(run["checkpoint"], weights_only=True)["step"] == 30


def test_kill_and_delete_run_end_a_claimed_standby_as_any_worker(small, store):
    engine.warm(store)
    pid = wait_for(lambda: ready(store), timeout=90, what="a standby listening")
    run_id = engine.launch(long_run(small), store)
    assert engine.get_run(run_id, store)["pid"] == pid
    wait_for(lambda: losses(store, run_id), timeout=60, what="the claimed run's losses")
    engine.kill(run_id, store)
    assert engine.get_run(run_id, store)["error"] == "killed by the user"
    wait_for(lambda: gone(pid), timeout=10, what="the killed standby to exit")

    pid = wait_for(lambda: ready(store), timeout=90, what="the next standby")
    run_id = engine.launch(long_run(small), store)
    assert engine.get_run(run_id, store)["pid"] == pid
    wait_for(lambda: losses(store, run_id), timeout=60, what="the claimed run's losses")
    assert engine.delete_run(run_id, store) is True
    assert engine.get_run(run_id, store) is None and RunFiles.of(run_id, store).existing() == []
    wait_for(lambda: gone(pid), timeout=10, what="the deleted run's standby to exit")


def test_with_no_standby_launch_spawns_a_worker_and_readies_a_standby(small, store):
    run_id = engine.launch(long_run(small), store)
    assert is_plain_worker(engine.get_run(run_id, store)["pid"], run_id)
    pid = wait_for(lambda: ready(store), timeout=90, what="a standby for the next run")
    assert pid != engine.get_run(run_id, store)["pid"]
    assert stop_and_wait(run_id, store)["status"] == "stopped"


def test_standbys_off_is_the_plain_worker_alone(small, store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STANDBY", "0")
    started = []
    monkeypatch.setattr(standby, "warm", started.append)
    run_id = engine.launch(long_run(small), store)
    assert is_plain_worker(engine.get_run(run_id, store)["pid"], run_id)
    assert stop_and_wait(run_id, store)["status"] == "stopped"
    assert started == [] and standby_pids(store) == set()
    assert not StandbyFiles.of(store).lock.exists()


def test_a_standby_killed_before_its_claim_leaves_launch_to_a_plain_worker(small, store):
    engine.warm(store)
    dead = wait_for(lambda: ready(store), timeout=90, what="a standby listening")
    os.kill(dead, signal.SIGKILL)
    wait_for(lambda: gone(dead), timeout=10, what="the standby to die")
    assert StandbyFiles.of(store).socket.exists()  # its socket is left behind: nobody answers on it

    run_id = engine.launch(long_run(small), store)
    assert is_plain_worker(engine.get_run(run_id, store)["pid"], run_id)
    wait_for(lambda: losses(store, run_id), timeout=60, what="the plain worker's losses")
    fresh = wait_for(lambda: ready(store), timeout=90, what="a new standby (the dead one's lock is free)")
    assert fresh != dead
    assert stop_and_wait(run_id, store)["status"] == "stopped"


def test_a_standby_refuses_a_run_a_fresh_worker_would_start_differently_and_makes_way(small, store, monkeypatch):
    engine.warm(store)
    stale = wait_for(lambda: ready(store), timeout=90, what="a standby listening")
    code_now = standby._code_stamp
    monkeypatch.setattr(standby, "_code_stamp", lambda: code_now() + 1)  # as if a mode file was edited since

    refused = engine.launch(long_run(small), store)
    assert is_plain_worker(engine.get_run(refused, store)["pid"], refused)
    assert "the engine's source changed" in StandbyFiles.of(store).log.read_text()
    wait_for(lambda: gone(stale), timeout=10, what="the stale standby to exit")

    monkeypatch.setattr(standby, "_code_stamp", code_now)
    fresh = wait_for(lambda: ready(store), timeout=90, what="a standby that fits, in its place")
    assert fresh != stale
    run_id = engine.launch(small(steps=5), store)
    assert engine.get_run(run_id, store)["pid"] == fresh
    assert wait_for(lambda: ended(run_id, store), timeout=60)["status"] == "finished"
    assert stop_and_wait(refused, store)["status"] == "stopped"


def test_what_a_standby_refuses(store):
    """Variables read at start-up must match; the others (the Visdom URL, ...) it takes over."""
    path = os.path.abspath(store)
    env = standby.worker_env()
    offer = {"run": "r", "store": path, "python": sys.executable, "code": 7, "env": env}
    assert standby._refusal(offer, path, 7) == ""
    assert standby._refusal({**offer, "env": {**env, "LIVEPROP_VISDOM_URL": "http://h:1"}}, path, 7) == ""
    assert standby._refusal({**offer, "env": {**env, "OMP_NUM_THREADS": "7"}}, path, 7).endswith("OMP_NUM_THREADS")
    assert "PYTHONPATH" in standby._refusal({**offer, "env": {**env, "PYTHONPATH": "/x"}}, path, 7)
    assert standby._refusal(offer, path, 8) == "the engine's source changed since the standby started"
    assert standby._refusal({**offer, "store": path + "2"}, path, 7) == "another store"
    assert standby._refusal({**offer, "python": "/usr/bin/python9"}, path, 7) == "another Python"
    assert standby._refusal({**offer, "run": None}, path, 7) == "no run id"


def test_a_store_too_deep_for_a_socket_has_no_standby(small, tmp_path):
    deep = tmp_path.joinpath(*["d" * 20] * 5) / "liveprop.db"
    assert StandbyFiles.of(str(deep)).socket is None
    engine.warm(str(deep))  # nothing started, nothing raised
    assert standby.hand_over("any-run", str(deep)) is None
    assert standby_pids(str(deep)) == set()


def test_one_standby_per_store_and_the_reaper_ends_them(store, cli):
    engine.warm(store)
    pid = wait_for(lambda: ready(store), timeout=90, what="a standby listening")
    second = cli("standby", "--store", store, timeout=120)  # cannot take the lock: exits at once, quietly
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    assert ready(store) == pid

    kill_workers(Path(store).parent.parent)  # what conftest does when a test ends
    wait_for(lambda: gone(pid), timeout=10, what="the reaper to end the standby")


def test_an_idle_standby_exits_by_itself_and_a_retired_one_at_once(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STANDBY_IDLE", "1")
    engine.warm(store)
    pid = wait_for(lambda: standby_pids(store), timeout=30, what="a standby process").pop()
    wait_for(lambda: gone(pid), timeout=90, what="the idle standby to exit")
    assert not StandbyFiles.of(store).socket.exists()  # it cleaned up after itself

    monkeypatch.setenv("LIVEPROP_STANDBY_IDLE", "120")
    engine.warm(store)
    pid = wait_for(lambda: ready(store), timeout=90, what="a standby listening")
    assert standby.retire(store) is True
    wait_for(lambda: gone(pid), timeout=10, what="the retired standby to exit")
    assert standby.retire(store) is False  # none left to retire
