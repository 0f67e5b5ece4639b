"""Edit while paused (engine/loop/layer_edit.py): scale or re-initialise one layer, then go on. The edit itself
against the weights computed apart; then through the worker: acknowledged, recorded as an event, checkpointed, and
kept by a resume from that checkpoint and by a fork from its step."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch
from conftest import wait_for

import engine
from engine.build.assemble import build, prepare
from engine.config.load import from_dict
from engine.errors import ConfigError, RunStateError
from engine.loop import checkpoint, layer_edit
from engine.loop.control import Control
from engine.runs import api, worker
from engine.store.db import Store
from engine.store.files import RunFiles


def edit(layer, action, factor=1.0):
    return json.dumps({"layer": layer, "action": action, "factor": factor})


def test_scale_and_reinit_change_exactly_that_layer_as_computed_apart(small):
    for kw, layer, fan_in in ((dict(mode="manual"), "w1", 20), (dict(mode="nn", arch="mlp"), "0.weight", 20)):
        mode, _ = build(prepare(small(**kw)))
        before = {n: t.clone() for n, t in mode.named_params()}
        data = layer_edit.apply(mode, edit(layer, "scale", -0.5), step=7)
        now = dict(mode.named_params())
        assert torch.equal(now[layer], before[layer] * -0.5)
        assert data == {"layer": layer, "action": "scale", "factor": -0.5, "norm_before": pytest.approx(
            float(before[layer].norm())), "norm_after": pytest.approx(0.5 * float(before[layer].norm()))}  # fmt: skip
        assert all(torch.equal(now[n], before[n]) for n in before if n != layer)
        layer_edit.apply(mode, edit(layer, "reinit"), step=7)
        w = dict(mode.named_params())[layer]
        want = torch.empty(w.shape).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in),
                                             generator=torch.Generator().manual_seed(7))  # fmt: skip
        assert torch.equal(w, want)  # nn.Linear's own bound: 1/sqrt(inputs of a unit), 20 here in both layouts
    with pytest.raises(layer_edit.EditRefused, match="no layer 'w9'"):
        layer_edit.apply(mode, edit("w9", "scale", 2.0), step=0)
    with pytest.raises(layer_edit.EditRefused, match="1-D"):
        layer_edit.apply(mode, edit("0.bias", "reinit"), step=0)


def test_an_edit_while_paused_is_recorded_checkpointed_and_kept_by_resume_and_fork(small, store, monkeypatch):
    run_id, _ = api.create_run(small(mode="autograd", dataset="teacher", steps=10**6, pace=100.0), store)
    with pytest.raises(ConfigError):
        engine.edit_layer(run_id, "w1", "rotate", store=store)
    t = threading.Thread(target=worker.run_worker, args=(run_id, store), daemon=True)
    t.start()
    files = RunFiles.of(run_id, store)
    try:
        wait_for(lambda: (engine.get_run(run_id, store)["step"] or 0) > 3, what="steps")
        with pytest.raises(RunStateError, match="paused"):
            engine.edit_layer(run_id, "w1", "scale", 0.5, store=store)
        engine.pause(run_id, store)
        wait_for(lambda: engine.get_run(run_id, store)["status"] == "paused", what="paused")
        step = engine.get_run(run_id, store)["step"]
        paused = wait_for(lambda: (c := checkpoint.load(files.checkpoint))["step"] == step and c, what="checkpoint")
        refused = engine.wait_ack(engine.edit_layer(run_id, "w7", "scale", 0.5, store=store), store)
        assert refused["result"].startswith("ignored: the run has no layer 'w7'")
        assert engine.wait_ack(engine.edit_layer(run_id, "w1", "scale", 0.5, store=store), store)["result"] == "ok"
        edited = wait_for(lambda: (c := checkpoint.load(files.checkpoint))["model"]["w1"].ne(
            paused["model"]["w1"]).any() and c, what="the edited checkpoint")  # fmt: skip
        assert edited["step"] == step and torch.equal(edited["model"]["w1"], paused["model"]["w1"] * 0.5)
        assert torch.equal(edited["model"]["w2"], paused["model"]["w2"])
        s = Store(store)
        events = [e for e in s.events(run_id) if e["kind"] == "layer_edit"]
        s.close()
        assert [(e["step"], e["data"]["layer"], e["data"]["factor"]) for e in events] == [(step, "w1", 0.5)]
    finally:  # the worker is this process (its pid is ours): stopped, never killed
        engine.stop(run_id, store)
        t.join(30)
    assert engine.get_run(run_id, store)["status"] == "stopped"
    monkeypatch.setattr(api, "_start", lambda rid, path: None)  # the new workers are built here, below
    assert engine.resume_run(run_id, steps=10**6, store=store) == step
    child = engine.fork(run_id, step, {"lr": 1e-4}, store)
    for rid in (run_id, child):  # each one's trainer as its worker builds it: the weights it goes on from
        row = engine.get_run(rid, store)
        trainer = worker._trainer(prepare(from_dict(row["config"]), memory=False), row, None, Control())
        assert trainer.step == step
        assert torch.equal(dict(trainer.mode.named_params())["w1"], edited["model"]["w1"])


def test_the_loss_chart_marks_each_edit_on_the_loss_at_its_step():
    from dashboard import figures
    from dashboard.edit_layer import edit_marks

    steps, values = list(range(0, 100)), [100.0 / (1 + s) for s in range(100)]
    data = {"layer": "w1", "action": "scale", "factor": 0.5, "norm_before": 4.0, "norm_after": 2.0}
    reinit = {"layer": "0.weight", "action": "reinit", "norm_before": 4.0, "norm_after": 0.3}
    events = [{"step": 10, "data": data}, {"step": 60, "data": reinit}]
    fig = edit_marks(figures.loss_figure((steps, values)), (steps, values), events)
    [mark] = [t for t in fig.data if t.name == "layer edit"]
    assert list(mark.x) == [10, 60] and list(mark.y) == pytest.approx([100 / 11, 100 / 61])
    assert list(mark.text) == ["w1 scaled by 0.5 (‖w‖ 4 → 2)", "0.weight re-initialised (‖w‖ 4 → 0.3)"]
