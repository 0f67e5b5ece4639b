"""Background workers through the public API: launch, read while it writes, pause/resume/set_lr/stop
(each acknowledged and recorded), atomic checkpoints, kill -9 noticed within 5 s, and divergence.

Each launched worker is a real `python -m engine worker RUN` process; conftest kills any still alive
when a test ends."""

import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import wait_for

import engine
from engine import ConfigError, RunStateError, Store

LONG = 10**7  # steps: a run that only ends when told to
CONTROL_EVENTS = ("pause", "resume", "lr_change", "stop", "divergence", "error")  # not the sinks' status


def status_is(run_id, store, *wanted):
    def check():
        run = engine.get_run(run_id, store)
        return run if run["status"] in wanted else None

    return check


def read(store, fn):
    s = Store(store)
    try:
        return fn(s)
    finally:
        s.close()


def losses(store, run_id, after_step=-1):
    return read(store, lambda s: s.scalars(run_id, "loss", after_step=after_step))


def events(store, run_id):
    return read(store, lambda s: s.events(run_id))


def acked(cid, store):
    ack = engine.wait_ack(cid, store, timeout=20)
    assert ack is not None, "the worker did not acknowledge the command within 20 s"
    assert ack["acked"] is not None
    return ack


def long_run(small, **kw):
    return small(
        mode="nn",
        arch="mlp",
        dataset="teacher",
        steps=LONG,
        telemetry_every=500,
        flush_every=5000,
        flush_seconds=0.05,
        lr=1e-3,
        **kw,
    )


def gone(pid):
    """The process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def no_tmp_files(store):
    return [p.name for p in (Path(store).parent / "checkpoints").iterdir() if ".tmp" in p.name]


# ---------------------------------------------------------------------------------------------


def test_launch_finishes_with_a_checkpoint(small, store):
    run_id = engine.launch(small(mode="optim", arch="mlp", steps=30, flush_every=7), store=store)
    assert isinstance(run_id, str) and run_id
    run = wait_for(status_is(run_id, store, "finished", "failed", "stopped"), timeout=60, what="the run to end")
    assert run["status"] == "finished", run["error"]
    assert run["step"] == 30 and run["pid"] and run["ended"] >= run["started"]
    assert [s for s, _ in losses(store, run_id)] == list(range(30))
    state = torch.load(run["checkpoint"], weights_only=True)
    assert state["step"] == 30 and state["config"]["mode"] == "optim" and state["optimizer"]["state"]
    assert no_tmp_files(store) == []
    assert (Path(store).parent / "logs" / f"{run_id}.log").exists()
    # a finished run takes no more commands
    with pytest.raises(RunStateError, match="finished; it takes no more commands"):
        engine.pause(run_id, store)


def test_controls_are_acknowledged_and_recorded_while_a_reader_follows(small, store):
    run_id = engine.launch(long_run(small), store=store)

    # a reader follows the run incrementally while the worker writes
    seen, polls_with_news = [], 0
    deadline = time.monotonic() + 60
    while polls_with_news < 4 or len(seen) < 200:
        assert time.monotonic() < deadline, f"the worker wrote too little: {len(seen)} losses"
        new = losses(store, run_id, after_step=seen[-1][0] if seen else -1)
        polls_with_news += bool(new)
        seen += new
        time.sleep(0.05)
    assert [s for s, _ in seen] == list(range(len(seen)))  # incremental: no gap, no repeat
    run = engine.get_run(run_id, store)
    assert run["status"] == "running" and time.time() - run["heartbeat"] < 5

    # pause: acknowledged, status paused, the step stops moving
    assert acked(engine.pause(run_id, store), store)["result"] == "ok"
    wait_for(status_is(run_id, store, "paused"), what="status paused")
    time.sleep(0.3)
    frozen = engine.get_run(run_id, store)["step"]
    time.sleep(0.6)
    assert engine.get_run(run_id, store)["step"] == frozen

    # set_lr while paused: the store knows the new rate before the run resumes; then resume
    assert acked(engine.set_lr(run_id, 5e-4, store), store)["result"] == "ok"
    wait_for(lambda: read(store, lambda s: engine.current_lr(run_id, s)) == 5e-4, what="the new lr while paused")
    assert acked(engine.resume(run_id, store), store)["result"] == "ok"
    wait_for(status_is(run_id, store, "running"), what="status running again")
    wait_for(lambda: engine.get_run(run_id, store)["step"] > frozen + 100, what="steps after resume")

    # set_lr while running, and a resume that makes no sense now is refused before it is sent
    assert acked(engine.set_lr(run_id, 2e-4, store), store)["result"] == "ok"
    with pytest.raises(RunStateError, match="already running"):
        engine.resume(run_id, store)

    # stop: a final checkpoint, written atomically
    assert acked(engine.stop(run_id, store), store)["result"] == "ok"
    run = wait_for(status_is(run_id, store, "stopped", "failed", "finished"), timeout=30, what="the stop")
    assert run["status"] == "stopped", run["error"]
    state = torch.load(run["checkpoint"], weights_only=True)
    assert state["step"] == run["step"] > frozen and state["model"]
    assert no_tmp_files(store) == []

    kinds = [(e["kind"], e["data"]) for e in events(store, run_id) if e["kind"] in CONTROL_EVENTS]
    assert [k for k, _ in kinds] == ["pause", "lr_change", "resume", "lr_change", "stop"], kinds
    lr_changes = [d for k, d in kinds if k == "lr_change"]
    assert lr_changes == [{"old": 1e-3, "new": 5e-4}, {"old": 5e-4, "new": 2e-4}]
    pending = read(store, lambda s: s.pending_control(run_id))
    assert pending == []
    lrs = read(store, lambda s: s.scalars(run_id, "lr"))
    assert lrs[0][1] == pytest.approx(1e-3) and lrs[-1][1] == pytest.approx(2e-4)


def test_a_checkpoint_is_replaced_atomically(small, tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous checkpoint whole: the new one is written to a
    temporary file, then os.replace'd over the old."""
    from engine.build import assemble as build
    from engine.loop import checkpoint

    p = build.prepare(small(mode="optim", arch="mlp"))
    mode, batches = build.build(p)
    path = str(tmp_path / "checkpoints" / "run.pt")
    checkpoint.write(path, checkpoint.snapshot(mode, 1, p.cfg, batches))
    before = open(path, "rb").read()
    real_save = torch.save

    def dies_half_way(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        f.flush()
        f.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError):
        checkpoint.write(path, checkpoint.snapshot(mode, 2, p.cfg, batches))
    assert open(path, "rb").read() == before
    assert torch.load(path, weights_only=True)["step"] == 1
    assert os.listdir(tmp_path / "checkpoints") == ["run.pt"]  # the half-written temporary is gone
    monkeypatch.setattr(torch, "save", real_save)
    checkpoint.write(path, checkpoint.snapshot(mode, 3, p.cfg, batches))
    assert checkpoint.load(path)["step"] == 3


def test_sigterm_stops_gracefully_with_a_checkpoint(small, store):
    run_id = engine.launch(long_run(small), store=store)
    wait_for(lambda: len(losses(store, run_id)) > 50, timeout=60, what="some losses")
    os.kill(engine.get_run(run_id, store)["pid"], signal.SIGTERM)
    run = wait_for(status_is(run_id, store, "stopped", "failed", "finished"), timeout=30, what="the stop")
    assert run["status"] == "stopped", run["error"]
    assert torch.load(run["checkpoint"], weights_only=True)["step"] == run["step"]
    assert no_tmp_files(store) == []


def test_kill_9_is_marked_failed_within_5_s_with_metrics_intact(small, store):
    run_id = engine.launch(long_run(small), store=store)
    wait_for(lambda: len(losses(store, run_id)) > 300, timeout=60, what="some losses")
    pid = engine.get_run(run_id, store)["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    run = wait_for(status_is(run_id, store, "failed"), timeout=5, interval=0.1, what="status failed")
    assert time.monotonic() - killed < 5
    assert "died" in run["error"] and str(pid) in run["error"]
    assert [r["status"] for r in engine.list_runs(store) if r["id"] == run_id] == ["failed"]
    assert [e["kind"] for e in events(store, run_id) if e["kind"] in CONTROL_EVENTS][-1] == "error"
    # every step up to the last flush is there, in order, finite
    kept = losses(store, run_id)
    assert len(kept) > 300
    assert [s for s, _ in kept] == list(range(len(kept)))
    assert all(v is not None and math.isfinite(v) for _, v in kept)
    assert run["step"] == len(kept)
    with pytest.raises(RunStateError, match="failed"):
        engine.stop(run_id, store)


def test_kill_ends_a_worker_and_marks_it_failed(small, store):
    run_id = engine.launch(long_run(small), store=store)
    wait_for(lambda: len(losses(store, run_id)) > 50, timeout=60, what="some losses")
    pid = engine.get_run(run_id, store)["pid"]
    engine.kill(run_id, store)
    run = engine.get_run(run_id, store)
    assert run["status"] == "failed" and run["error"] == "killed by the user"
    wait_for(lambda: gone(pid), timeout=5, what="the worker process to end")


def test_a_dead_pid_or_a_silent_worker_is_marked_failed(store):
    dead = subprocess.Popen(["true"])
    dead.wait()
    s = Store(store)
    s.create_run("dead-pid", {"mode": "nn"})
    s.update_run("dead-pid", status="running", pid=dead.pid, heartbeat=time.time())
    s.create_run("silent", {"mode": "nn"})
    s.update_run("silent", status="running", pid=None, heartbeat=time.time() - 3600, created=time.time() - 3600)
    s.close()
    assert "died" in engine.get_run("dead-pid", store)["error"]
    by_id = {r["id"]: r for r in engine.list_runs(store)}
    assert by_id["dead-pid"]["status"] == by_id["silent"]["status"] == "failed"
    assert "no heartbeat" in by_id["silent"]["error"]


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf")])
def test_set_lr_refuses_a_bad_rate_before_sending(store, lr):
    Store(store).create_run("r1", {})
    with pytest.raises(ConfigError, match="positive finite"):
        engine.set_lr("r1", lr, store)
    assert read(store, lambda s: s.pending_control("r1")) == []


def test_controls_of_an_unknown_run_say_so(store):
    with pytest.raises(RunStateError, match="no run 'nope'"):
        engine.pause("nope", store)


# ---------------------------------------------------------------------------------------------
# divergence


def diverging(small, lr=10.0, flush_every=4, **kw):
    """The lecture's raw two-layer net with a learning rate far too large: the loss overflows
    (at step 2 with lr 10, inside the first flush; at step 5 with lr 3e-3, after two finite flushes)."""
    return small(
        mode="manual",
        arch="two_layer",
        dataset="random",
        init="randn",  # randn weights with zero biases (b1, b2), which these rates and steps were tuned on
        lr=lr,
        telemetry_every=3,
        flush_every=flush_every,
        flush_seconds=100.0,
        **kw,
    )


@pytest.mark.parametrize(
    "when,lr,flush_every", [("before the first flush", 10.0, 4), ("after finite flushes", 3e-3, 2)]
)
def test_divergence_stops_with_the_step_and_layer_and_finite_histograms(
    small, run_inprocess, store, when, lr, flush_every
):
    run_id, status = run_inprocess(
        diverging(small, lr=lr, flush_every=flush_every, steps=60, on_divergence="stop"), store
    )
    assert status == "diverged"
    run = engine.get_run(run_id, store)
    assert run["status"] == "diverged" and run["step"] < 60
    stored = losses(store, run_id)
    first_bad = next(s for s, v in stored if v is None or not math.isfinite(v))
    [event] = [e for e in events(store, run_id) if e["kind"] == "divergence"]
    assert event["data"]["step"] == event["step"] == first_bad
    assert event["data"]["layer"] in ("w1", "w2", "b1", "b2")

    last = read(store, lambda s: s.histograms(run_id))
    last_step = max(h["step"] for h in last)
    final = [h for h in last if h["step"] == last_step]
    assert {h["layer"] for h in final if h["kind"] == "weight"} == {"w1", "b1", "w2", "b2"}
    for h in final:
        assert h["nonfinite"] == 0 and all(map(math.isfinite, h["edges"] + h["counts"])), h
        assert sum(h["counts"]) > 0
    state = torch.load(run["checkpoint"], weights_only=True)  # the last finite weights are kept
    assert all(torch.isfinite(t).all() for t in state["model"].values())


@pytest.mark.parametrize("mode,kw", [("manual", {}), ("autograd", {}), ("optim", {"optimizer": "sgd"})])
def test_divergence_is_noticed_within_5_steps_of_the_first_nonfinite_loss(small, run_inprocess, store, mode, kw):
    """lr 1e3 with the default flushes (every 2000 steps or 0.5 s): a flush alone let hundreds of
    non-finite steps run first; the look at the device's "all finite" flag (every 4 steps on the
    CPU) stops the run a few steps after the first non-finite loss, and says how many ran after it."""
    cfg = small(
        mode=mode,
        arch="two_layer",
        dataset="random",
        lr=1e3,
        flush_every=2000,
        flush_seconds=0.5,
        steps=20_000,
        on_divergence="stop",
        **kw,
    )
    run_id, status = run_inprocess(cfg, store)
    assert status == "diverged"
    stored = losses(store, run_id)
    first_bad = next(s for s, v in stored if v is None or not math.isfinite(v))
    [event] = [e for e in events(store, run_id) if e["kind"] == "divergence"]
    assert event["step"] == event["data"]["step"] == first_bad
    ran_after = stored[-1][0] - first_bad  # steps stored after the first non-finite one
    assert event["data"]["ran_after"] == ran_after <= 5, (first_bad, stored[-1][0])


def test_divergence_ignored_runs_to_the_end(small, run_inprocess, store):
    run_id, status = run_inprocess(diverging(small, steps=20, on_divergence="ignore"), store)
    assert status == "finished"
    assert len(losses(store, run_id)) == 20
    assert not [e for e in events(store, run_id) if e["kind"] == "divergence"]


def test_divergence_pauses_and_resumes_after_set_lr(small, store):
    run_id = engine.launch(diverging(small, steps=300, on_divergence="pause"), store=store)
    wait_for(status_is(run_id, store, "paused", "failed", "finished"), timeout=60, what="the divergence pause")
    paused = engine.get_run(run_id, store)
    assert paused["status"] == "paused" and paused["pause_reason"] == "divergence", paused
    [event] = [e for e in events(store, run_id) if e["kind"] == "divergence"]
    assert event["data"]["layer"] in ("w1", "w2", "b1", "b2")
    stored = losses(store, run_id)  # every step up to the pause
    first_bad = next(s for s, v in stored if v is None or not math.isfinite(v))
    assert event["step"] == event["data"]["step"] == first_bad
    ran_after = stored[-1][0] - first_bad  # steps stored after the first non-finite one
    assert event["data"]["ran_after"] == ran_after <= 5, (first_bad, stored[-1][0])

    acked(engine.set_lr(run_id, 1e-7, store), store)
    acked(engine.resume(run_id, store), store)
    run = wait_for(
        status_is(run_id, store, "finished", "failed", "diverged", "stopped"), timeout=60, what="the run to finish"
    )
    assert run["status"] == "finished", run["error"]
    stored = losses(store, run_id)
    assert len(stored) >= 300 and stored[-1][0] == 299
    assert math.isfinite(stored[-1][1])
    kinds = [e["kind"] for e in events(store, run_id) if e["kind"] in CONTROL_EVENTS]
    assert kinds == ["divergence", "lr_change", "resume"]


def test_delete_run_stops_a_live_worker_and_removes_every_file_of_that_run_only(small, store):
    """engine.delete_run: a running worker is stopped (its pid gone), then the run's rows and every
    file engine/store/files.py knows of (checkpoint, log, spool, a checkpoint's leftover temp file) are
    removed, while another run's stay."""
    from engine.store.files import RunFiles

    keep = engine.launch(small(steps=5), store)
    wait_for(status_is(keep, store, "finished", "failed"), timeout=60)
    assert engine.get_run(keep, store)["status"] == "finished", engine.get_run(keep, store)["error"]
    live = engine.launch(long_run(small), store)
    wait_for(lambda: losses(store, live), timeout=60, what="the live run's first losses")
    pid = engine.get_run(live, store)["pid"]
    files = RunFiles.of(live, store)
    for path in (files.spool, Path(f"{files.checkpoint}.tmp-999")):  # as a sink and a crash leave them
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert files.log.is_file()
    kept = RunFiles.of(keep, store).existing()
    assert RunFiles.of(keep, store).checkpoint in kept

    assert engine.delete_run(live, store) is True
    assert engine.get_run(live, store) is None
    assert files.existing() == []
    wait_for(lambda: gone(pid), timeout=10, what="the deleted run's worker to exit")
    assert RunFiles.of(keep, store).existing() == kept and engine.get_run(keep, store)["status"] == "finished"
    assert read(store, lambda s: s.scalars(live, "loss")) == [] and read(store, lambda s: s.events(live)) == []
    assert engine.delete_run(live, store) is False  # already gone: nothing to do
