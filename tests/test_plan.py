"""Scheduled actions (--at STEP:ACTION, engine/loop/plan.py): the grammar refuses in one line, each action
applies at exactly its step, and a run stopped and resumed, or forked before an action, applies it as an
unbroken run does: the same losses and weights, bit for bit in float64."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from conftest import wait_for

import engine
from engine.__main__ import main
from engine.config.load import from_dict
from engine.config.reasons import validate
from engine.errors import ConfigError
from engine.loop import checkpoint
from engine.loop.plan import Plan
from engine.runs import api as runs
from engine.runs import worker
from engine.store.db import opened
from engine.store.files import RunFiles


@pytest.mark.parametrize(
    "entries,says",
    [
        (["x:pause"], "at: 'x:pause' does not start with a step"),
        (["-1:pause"], "at: '-1:pause' does not start with a step"),
        (["5:lr=0"], "lr=X takes a learning rate above 0"),
        (["5:lr=nan"], "lr=X takes a learning rate above 0"),
        (["5:lr=1e7"], "lr=X takes a learning rate above 0, at most 1e6"),
        (["5:jump"], "the action is one of lr=X, pause, stop, checkpoint"),
        (["5:stop=1"], "the action is one of lr=X, pause, stop, checkpoint"),
        (["5:pause", 7], "at: each entry is text, got 7"),
        ("5:pause\n6:stop", "the action is one of"),  # one entry from a file, not two
    ],
)
def test_a_bad_scheduled_action_is_refused_in_one_line_naming_at(entries, says):
    with pytest.raises(ConfigError) as e:
        validate(from_dict({"at": entries}))
    assert says in str(e.value) and str(e.value).startswith("at") and "\n" not in str(e.value), str(e.value)


def test_the_cli_refuses_a_bad_action_with_exit_2_and_writes_nothing(tmp_path, capsys):
    store = tmp_path / "s" / "liveprop.db"
    code = main(["train", "--at", "10:lr=1e-7", "--at", "20:explode", "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("liveprop: error: at: '20:explode'") and err.count("\n") == 1, err
    assert not store.parent.exists()


def test_actions_at_one_step_apply_lr_first_and_a_resumed_plan_has_the_start_behind_it():
    texts = ["9:stop", "5:pause", "5:checkpoint", "5:lr=1e-7", "2:lr=3"]
    plan = Plan(texts)
    assert plan.next == 2 and plan.due(1) == [] and plan.next == 2
    assert [c for c, _, _ in plan.due(2)] == ["set_lr"] and plan.next == 5
    assert plan.due(5) == [
        ("set_lr", 1e-7, {"action": "5:lr=1e-07", "at": 5}),
        ("checkpoint", None, {"action": "5:checkpoint", "at": 5}),
        ("pause", "schedule", {"action": "5:pause", "at": 5}),
    ]
    assert plan.due(20) == [("stop", None, {"action": "9:stop", "at": 9})] and plan.next == float("inf")
    assert Plan(texts, start=5, resumed=True).pending == ["9:stop"]  # a checkpoint at 5 holds 5's actions
    assert Plan(["0:pause"]).pending == ["0:pause"]  # a new run at step 0 has them ahead
    plan = Plan(texts, start=3, resumed=True)
    event = plan.replace(json.dumps(["4:stop", "12:lr=2e-3", "3:pause"]), 3)
    assert event == {"old": ["5:lr=1e-07", "5:checkpoint", "5:pause", "9:stop"], "new": ["4:stop", "12:lr=0.002"],
                     "past": ["3:pause"]}  # fmt: skip
    assert plan.replace("[1, 2", 3)["refused"] and plan.pending == ["4:stop", "12:lr=0.002"]


def config(small, **kw):
    base = dict(mode="optim", optimizer="adam", lr=1e-2, dtype="float64", dataset="teacher", n_samples=40,
                batch_size=16, steps=30, telemetry_every=1, checkpoint_seconds=0)  # fmt: skip
    return small(**{**base, **kw})


PLAN = ["5:lr=2e-3", "8:checkpoint", "8:lr=1e-3", "20:lr=5e-4"]  # at 8 the rate comes first: the checkpoint holds it


def trained(store, run_id):
    """(every stored loss, the lr at each step, the final checkpoint) of a run."""
    with opened(store) as s:
        losses, lrs = s.scalars(run_id, "loss"), s.scalars(run_id, "lr")
    return losses, dict(lrs), checkpoint.load(RunFiles.of(run_id, store).checkpoint)


def same(a, b):
    """Equal, bit for bit: tensors, and dicts and lists of them (a state_dict, an optimizer's state)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    else:
        assert a == b


def test_a_scheduled_run_stopped_and_resumed_or_forked_equals_an_unbroken_one(small, store, run_inprocess, monkeypatch):
    ref, status = run_inprocess(config(small, at=PLAN), store)
    assert status == "finished"
    losses, lrs, final = trained(store, ref)
    # each rate applies from exactly its step: the update of step 4 used the first rate, that of step 5 the next
    assert (lrs[4], lrs[5], lrs[7], lrs[8], lrs[19], lrs[20], lrs[29]) == (1e-2, 2e-3, 2e-3, 1e-3, 1e-3, 5e-4, 5e-4)
    with opened(store) as s:
        events = [(e["step"], e["kind"], e["data"]) for e in s.events(ref) if e["kind"] in ("scheduled", "lr_change")]
    assert events == [
        (5, "scheduled", {"action": "5:lr=0.002", "at": 5}),
        (5, "lr_change", {"old": 1e-2, "new": 2e-3}),
        (8, "scheduled", {"action": "8:lr=0.001", "at": 8}),
        (8, "lr_change", {"old": 2e-3, "new": 1e-3}),
        (8, "scheduled", {"action": "8:checkpoint", "at": 8}),
        (20, "scheduled", {"action": "20:lr=0.0005", "at": 20}),
        (20, "lr_change", {"old": 1e-3, "new": 5e-4}),
    ]
    assert RunFiles.of(ref, store).history_at(8).is_file()  # the scheduled checkpoint, a place to fork from

    # stopped by its own schedule at 12, then resumed to 30: the stop is behind it, the rate at 20 ahead
    broken, status = run_inprocess(config(small, at=[*PLAN, "12:stop"]), store)
    assert status == "stopped" and engine.get_run(broken, store)["step"] == 12
    monkeypatch.setattr(runs, "_start", lambda rid, path: None)  # trained here, below
    assert engine.resume_run(broken, steps=30, store=store) == 12
    assert worker.run_worker(broken, store) == "finished"
    got_losses, got_lrs, got = trained(store, broken)
    assert got_losses == losses and got_lrs == lrs  # bit for bit
    same(got["model"], final["model"])
    same(got["optimizer"], final["optimizer"])

    # a fork from the scheduled checkpoint at 8, before the rate at 20: it applies it there too
    child = engine.fork(ref, 8, {}, store)
    assert worker.run_worker(child, store) == "finished"
    fork_losses, fork_lrs, forked = trained(store, child)
    assert fork_losses == losses[8:] and fork_lrs == {k: v for k, v in lrs.items() if k >= 8}
    same(forked["model"], final["model"])


def test_a_scheduled_pause_waits_and_a_new_schedule_replaces_the_pending_one(small, store):
    run_id, _ = runs.create_run(config(small, steps=200, at=["3:pause", "150:stop"]), store)
    ended = []
    t = threading.Thread(target=lambda: ended.append(worker.run_worker(run_id, store)), daemon=True)
    t.start()
    wait_for(lambda: engine.get_run(run_id, store)["status"] == "paused", 30, what="the scheduled pause")
    assert engine.get_run(run_id, store)["step"] == 3
    with pytest.raises(ConfigError):
        runs.set_plan(run_id, ["6:lr=1e-3", "9:halt"], store)
    cid = runs.set_plan(run_id, ["6:lr=1e-3", "9:stop", "2:lr=1"], store)
    assert runs.wait_ack(cid, store)["result"] == "ok"
    assert runs.wait_ack(runs.resume(run_id, store), store)["result"] == "ok"
    t.join(60)
    assert ended == ["stopped"] and engine.get_run(run_id, store)["step"] == 9
    with opened(store) as s:
        events = [(e["step"], e["kind"], e["data"]) for e in s.events(run_id) if e["kind"] != "environment"]
        lrs = dict(s.scalars(run_id, "lr"))
    assert (3, "pause", {"reason": "schedule"}) in events
    assert (3, "schedule", {"old": ["150:stop"], "new": ["6:lr=0.001", "9:stop"], "past": ["2:lr=1"]}) in events
    assert (lrs[5], lrs[6]) == (1e-2, 1e-3) and (9, "stop", {}) in events
    # the stored config goes on with the new schedule (a resume reads it): the actions done and the new ones ahead
    assert engine.get_run(run_id, store)["config"]["at"] == ["3:pause", "6:lr=0.001", "9:stop"]


@pytest.mark.full
def test_every_rank_applies_the_schedule_at_the_same_step_as_one_process(store):
    """Two processes under torchrun (gloo): each holds the plan and applies it at the step, with no word from
    rank 0, so their weights agree digit for digit and follow one process's trajectory."""
    from test_distributed import LECTURE, agree, checksums, launched, relative_gap, trajectory

    from engine import RunConfig

    kw = dict(mode="autograd", **LECTURE, at=("10:lr=3e-7", "15:checkpoint", "30:stop"))
    assert worker.run_worker(runs.create_run(RunConfig(**kw), store)[0], store) == "stopped"
    two = launched(RunConfig(**kw, nproc=2), store)
    assert two["status"] == "stopped" and two["step"] == 30, two["error"]
    ref = next(r["id"] for r in runs.list_runs(store) if r["id"] != two["id"])
    assert relative_gap(trajectory(two["id"], store), trajectory(ref, store)) < 1e-6
    agree(checksums(two["id"], store), 2)
    assert RunFiles.of(two["id"], store).history_at(15).is_file()
