"""Step through backprop (engine/modes/trace.py): every named tensor of the lecture's step against the lecture's own
cell run word for word, and every gradient's autograd counterpart against torch.autograd.grad, in float64; then the
Step command on a paused run: one step taken, its tensors recorded, its loss stored."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import wait_for

import engine
from engine.build.assemble import build, prepare
from engine.errors import RunStateError
from engine.modes import trace
from engine.runs import api, worker
from engine.store.db import Store


def lecture_cell(x, y, w1, w2):
    """The lecture's In [16], word for word (one iteration, before the update)."""
    h = x.mm(w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(w2)
    loss = (y_pred - y).pow(2).sum()
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = x.t().mm(grad_h)
    return dict(h=h, h_relu=h_relu, y_pred=y_pred, loss=loss, grad_y_pred=grad_y_pred, grad_w2=grad_w2,
                grad_h_relu=grad_h_relu, grad_h=grad_h, grad_w1=grad_w1, mask=h < 0)  # fmt: skip


def test_each_named_tensor_is_the_lecture_cells_and_each_gradient_has_autograds_beside_it():
    g = torch.Generator().manual_seed(3)
    x, y, w1, w2 = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((8, 5), (8, 3), (5, 6), (6, 3)))
    t, auto = trace.tensors({"w1": w1, "w2": w2}, x, y, "sse")
    want = lecture_cell(x, y, w1, w2)
    assert torch.equal(t.pop("h < 0"), want.pop("mask"))
    assert t.keys() == want.keys()
    for name, v in want.items():
        assert torch.equal(t[name], v), name
    # autograd, apart: the loss of the same forward, differentiated by the weights and the intermediate tensors
    w1g, w2g = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    h = x.mm(w1g)
    h_relu = torch.where(h < 0, 0.0, h)  # the lecture's derivative at h == 0
    y_pred = h_relu.mm(w2g)
    grads = torch.autograd.grad((y_pred - y).pow(2).sum(), [y_pred, w2g, h_relu, h, w1g])
    names = ["grad_y_pred", "grad_w2", "grad_h_relu", "grad_h", "grad_w1"]
    assert auto.keys() == set(names)
    for name, grad in zip(names, grads):
        torch.testing.assert_close(auto[name], grad, rtol=0, atol=0)
        torch.testing.assert_close(t[name], grad, rtol=1e-12, atol=1e-12)


def test_the_summary_shows_shapes_first_values_norms_and_the_mask_share(small):
    mode, batches = build(prepare(small(mode="manual", dtype="float64")))
    x, y = next(batches)
    s = trace.lecture_step(mode, x, y)
    t, _ = trace.tensors(dict(mode.named_params()), x, y, "sse")
    assert s["h"]["shape"] == [16, 8] and s["grad_w1"]["shape"] == [20, 8] and s["loss"]["shape"] == []
    assert s["h_relu"]["first"] == t["h_relu"].flatten()[:4].tolist()
    assert s["grad_h"]["norm"] == pytest.approx(float(t["grad_h"].norm()), rel=1e-15)
    assert s["h < 0"]["share"] == pytest.approx(float((t["h"] < 0).double().mean()))
    assert s["grad_w1"]["autograd"]["norm"] == pytest.approx(s["grad_w1"]["norm"]) and s["grad_w1"]["rel_diff"] < 1e-14
    assert "autograd" not in s["h"]
    nn, _ = build(prepare(small(mode="nn")))
    with pytest.raises(trace.NotTraceable):
        trace.lecture_step(nn, x, y)


def test_step_on_a_paused_run_takes_one_step_and_records_its_tensors(small, store):
    run_id, _ = api.create_run(small(mode="manual", dataset="teacher", steps=10**6, pace=100.0), store)
    t = threading.Thread(target=worker.run_worker, args=(run_id, store), daemon=True)
    t.start()
    try:
        wait_for(lambda: (engine.get_run(run_id, store)["step"] or 0) > 3, what="steps")
        with pytest.raises(RunStateError, match="paused"):
            engine.step(run_id, store)
        engine.pause(run_id, store)
        wait_for(lambda: engine.get_run(run_id, store)["status"] == "paused", what="paused")
        k = engine.get_run(run_id, store)["step"]
        assert engine.wait_ack(engine.step(run_id, store), store)["result"] == "ok"
        wait_for(lambda: engine.get_run(run_id, store)["step"] == k + 1, what="one step more")
        s = Store(store)
        [event] = [e for e in s.events(run_id) if e["kind"] == "step_trace"]
        loss = dict(s.scalars(run_id, "loss"))
        s.close()
        assert event["step"] == k and event["data"]["loss"]["first"][0] == pytest.approx(loss[k], rel=1e-6)
        lecture = [
            "h",
            "h_relu",
            "y_pred",
            "loss",
            "grad_y_pred",
            "grad_w2",
            "grad_h_relu",
            "h < 0",
            "grad_h",
            "grad_w1",
        ]
        assert list(event["data"])[:10] == lecture  # then the biases' gradients, when the net has biases
        assert all("autograd" in v for n, v in event["data"].items() if n.startswith("grad_"))
        assert engine.get_run(run_id, store)["status"] == "paused"
    finally:  # the worker is this process (its pid is ours): stopped, never killed
        engine.stop(run_id, store)
        t.join(30)


def test_the_code_tab_puts_each_tensor_beside_the_lecture_line_that_computes_it(small):
    from dashboard.lecture_cells import CELLS
    from dashboard.step_trace import annotate, rows

    mode, batches = build(prepare(small(mode="manual", dtype="float64", bias=False)))
    s = trace.lecture_step(mode, *next(batches))
    lines = annotate(CELLS["manual"][1], s).splitlines()

    def line(code):
        [found] = [x for x in lines if x.strip().startswith(code)]
        return found

    assert f"← h: (16, 8) ‖·‖ {s['h']['norm']:.4g} [" in line("h = x.mm(w1)")
    assert f"← loss: scalar ‖·‖ {s['loss']['norm']:.4g}" in line("loss = (y_pred-y)")
    assert f"{100 * s['h < 0']['share']:.0f}% True" in line("grad_h[h<0] = 0")
    assert "←" not in line("grad_h = grad_h_relu.clone()")  # grad_h is shown once masked, on the next line
    assert line(f"# ← grad_h: (16, 8) ‖·‖ {s['grad_h']['norm']:.4g}") == lines[lines.index(line("grad_h[h<0]")) + 1]
    assert f"autograd ‖·‖ {s['grad_w1']['autograd']['norm']:.4g}" in line("grad_w1 = x.t().mm(grad_h)")
    assert "←" not in line("w1 -= learning_rate * grad_w1")
    backward = annotate(CELLS["autograd"][1], s).split("loss.backward()")[1].splitlines()
    assert backward[1].strip().startswith("# ← w1.grad: (20, 8)") and "w2.grad" in backward[2]
    assert [r["tensor"] for r in rows(s)] == list(s) and rows(s)[9][
        "‖diff‖ / ‖autograd‖"
    ] == f"{s['grad_w1']['rel_diff']:.1e}"
