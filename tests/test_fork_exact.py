"""A fork starts at exactly the step asked: the parent's steps from its nearest checkpoint are replayed, with the
parent's lr changes on the way, and the fork equals the parent's own training with the change made at that step.

The reference is a Trainer doing just that, in float64 on the CPU, on data drawn through a shuffling DataLoader
(40 samples in batches of 16: the fork's step falls inside an epoch). The parent keeps checkpoints at its start
and its end only, so a fork at step 18 replays 18 steps.
"""

from __future__ import annotations

import pytest
import torch

import engine
from dashboard import fork
from engine.build import assemble
from engine.errors import RunStateError
from engine.loop import checkpoint
from engine.loop.control import Control
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer
from engine.runs import api as runs
from engine.runs import worker
from engine.store.db import Store
from engine.store.files import RunFiles

STEPS, CHANGED_AT, CHANGED_TO, K, FORK_LR = 30, 9, 5e-3, 18, 2e-3


def config(small, **kw):
    return small(
        dtype="float64",
        dataset="teacher",
        n_samples=40,
        batch_size=16,
        steps=STEPS,
        mode="optim",
        optimizer="sgd",
        momentum=0.9,
        lr=1e-2,
        flush_every=4,
        flush_seconds=3600.0,  # flushes after steps 0, 4, 8, ...: the lr change lands at step 9
        checkpoint_seconds=0,  # checkpoints at the start and the end only
        **kw,
    )


@pytest.fixture
def parent(small, store, run_inprocess, monkeypatch):
    """A finished parent whose lr was set to CHANGED_TO at step CHANGED_AT (a command, as a viewer sends it)."""
    made = []
    monkeypatch.setattr(worker, "Control", lambda: made.append(Control()) or made[-1])

    def at_flush(f):
        if f.last_step + 1 == CHANGED_AT:
            made[0].put(None, "set_lr", CHANGED_TO)

    run_id, status = run_inprocess(config(small), store, callbacks={"on_flush": [at_flush]})
    assert status == "finished"
    return run_id


def reference(small):
    """(the trained mode, every step's loss): the parent's training with the fork's lr set at step K."""
    p = assemble.prepare(config(small))
    mode, batches = assemble.build(p)
    t = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), STEPS)
    losses = []
    t.add_callback("on_flush", lambda f: losses.extend(f.losses))
    t.run(max_steps=CHANGED_AT)
    mode.lr = CHANGED_TO
    t.run(max_steps=K - CHANGED_AT)
    mode.lr = FORK_LR
    t.run()
    return mode, losses


def test_a_fork_at_step_k_replays_to_k_and_equals_the_parent_with_its_lr_changed_at_k(
    small, store, parent, monkeypatch
):
    s = Store(store)
    [change] = s.events(parent, kind="lr_change")
    assert change["step"] == CHANGED_AT and change["data"]["new"] == CHANGED_TO
    assert sorted(int(p.stem) for p in RunFiles.of(parent, store).history.glob("*.pt")) == [0, STEPS]
    monkeypatch.setattr(runs, "_start", lambda rid, path: None)  # trained below, in this process
    child = engine.fork(parent, K, {"lr": FORK_LR}, store)
    row = engine.get_run(child, store)
    assert row["step"] == K and row["name"].endswith(f"at step {K}")
    forked = s.last_event(child, "forked")["data"]
    assert (forked["from"], forked["replay"], forked["lr_changes"]) == (0, K, [[CHANGED_AT, CHANGED_TO]])

    assert worker.run_worker(child, store) == "finished"
    mode, want = reference(small)
    got = checkpoint.load(RunFiles.of(child, store).checkpoint)
    for name, w in mode.model.state_dict().items():
        assert torch.equal(got["model"][name], w), name  # bit for bit
    for i, buf in mode.optimizer.state_dict()["state"].items():
        assert torch.equal(got["optimizer"]["state"][i]["momentum_buffer"], buf["momentum_buffer"])
    stored = s.scalars(child, "loss")
    assert [st for st, _ in stored] == list(range(K, STEPS))  # the fork's own steps, from K
    assert [v for _, v in stored] == want[K:]  # bit for bit
    assert [v for _, v in s.scalars(parent, "loss")][:K] == want[:K]  # the parent is the reference up to K
    assert got["step"] == STEPS and got["lr"] == FORK_LR
    assert sorted(int(p.stem) for p in RunFiles.of(child, store).history.glob("*.pt"))[0] == K
    marked = fork.parent_lr_changes(s, s.events(child, kind="forked"))  # on the fork's chart, by its parent's curve
    assert [(e["step"], e["data"]["new"]) for e in marked] == [(CHANGED_AT, CHANGED_TO)]
    assert fork.parent_lr_changes(s, s.events(parent, kind="forked")) == []
    s.close()


def test_a_fork_past_the_parents_last_step_or_across_its_divergence_is_refused_in_one_line(store, parent):
    with pytest.raises(RunStateError, match=f"has reached step {STEPS}; fork at or before it") as e:
        engine.fork(parent, STEPS + 5, {"lr": FORK_LR}, store)
    assert "\n" not in str(e.value)
    s = Store(store)
    s.add_event(parent, 12, "divergence", {"step": 12, "ran_after": 3, "restored": 4, "layer": "w1"})
    with pytest.raises(RunStateError, match="diverged at step 12 on the way from step 0; fork at or before step 4"):
        engine.fork(parent, K, {"lr": FORK_LR}, store)
    assert [r["id"] for r in engine.list_runs(store)] == [parent]  # nothing written
    s.close()
