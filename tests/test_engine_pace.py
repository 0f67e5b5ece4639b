"""A run a class can watch: a pace (at most P steps a second) and a length of "until stopped"."""

import time

import pytest
from conftest import run_in_process, wait_for

import engine
from engine import ConfigError, RunConfig, validate


def test_a_paced_run_takes_at_least_steps_over_pace_and_computes_the_same(small, store):
    """The bound is the behaviour (a lower bound: a loaded machine only makes it slower)."""
    t = time.perf_counter()
    paced, status = run_in_process(small(steps=30, pace=100.0, seed=3), store)
    took = time.perf_counter() - t
    assert status == "finished" and took >= 29 / 100
    free, _ = run_in_process(small(steps=30, seed=3), store)
    s = engine.Store(store)
    try:
        assert s.scalars(paced, "loss") == s.scalars(free, "loss")  # the pace changes when, not what
    finally:
        s.close()


def test_the_pace_keeps_to_its_rate_after_a_slow_step_instead_of_bursting(monkeypatch):
    """Behind by more than a second, the pace counts from now: no burst of catch-up steps."""
    from engine.loop.trainer import Trainer

    sleeps = []
    monkeypatch.setattr("engine.loop.trainer.time.sleep", sleeps.append)
    clock = iter([100.0, 105.0, 105.0])  # step 1 early (it sleeps); step 2 five seconds late
    monkeypatch.setattr("engine.loop.trainer.time.perf_counter", lambda: next(clock))
    tr = Trainer(mode=None, batches=None, telemetry=None, total_steps=10, pace=10.0)
    tr._pace_origin = (100.0, 0)
    tr.step = 1
    tr._keep_pace()  # due at 100.1, now 100.0: sleeps 0.1
    tr.step = 2
    tr._keep_pace()  # due at 100.2, now 105.0: late, the origin moves to (105.0, 2)
    assert sleeps == [pytest.approx(0.1)] and tr._pace_origin == (105.0, 2)


@pytest.mark.parametrize("pace", [-1.0, float("inf"), float("nan"), 1e7])
def test_a_pace_out_of_bounds_is_refused(pace):
    with pytest.raises(ConfigError, match="pace must be between 0"):
        validate(RunConfig(pace=pace))


def test_until_stopped_runs_past_any_length_and_ends_on_stop(small, store):
    cfg = small(mode="nn", arch="mlp", dataset="teacher", until_stopped=True, steps=0, epochs=0, flush_seconds=0.05)
    p = engine.prepare(cfg)
    assert p.total_steps is None
    run_id = engine.launch(cfg, store)
    wait_for(lambda: (engine.get_run(run_id, store)["step"] or 0) > 600, timeout=60, what="600 steps")
    run = engine.get_run(run_id, store)
    assert run["status"] == "running" and run["total_steps"] is None
    engine.wait_ack(engine.stop(run_id, store), store, timeout=20)
    run = wait_for(lambda: (r := engine.get_run(run_id, store))["status"] not in engine.ACTIVE and r, timeout=30)
    assert run["status"] == "stopped" and run["checkpoint"]
