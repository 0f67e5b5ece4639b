"""NaN forensics: the divergence replay names the first operation that produced a non-finite value, in the
backward (autograd's node, with the forward line that made it) or in the forward, and the dashboard's banner
says it. The modes here inject the inf on purpose: a batch whose row is all zeros makes sqrt(h * h)'s backward
divide by zero (inf), one scaled by 1e200 makes h * h overflow in the forward (float64).
"""

from __future__ import annotations

import math

import pytest
import torch

from dashboard import explain
from engine.build import assemble
from engine.loop.guard import DivergenceGuard, FirstNonFinite
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer

POISON = 3  # the batch that makes the first non-finite value


class InjectedInf:
    """Steps (engine/modes/protocol.py) with the lecture's names: y_pred = sqrt(h * h) . w2, h = x . w1, SGD."""

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.w1 = torch.randn(4, 8, dtype=torch.float64, generator=gen, requires_grad=True)
        self.w2 = torch.randn(8, 1, dtype=torch.float64, generator=gen, requires_grad=True)
        self.optimizer = None

    def forward_backward(self, x, y):
        h = x.mm(self.w1)
        h_abs = torch.sqrt(h * h)  # the backward of sqrt at 0 is inf
        loss = (h_abs.mm(self.w2) - y).pow(2).sum()
        loss.backward()
        return loss.detach()

    def update(self):
        with torch.no_grad():
            for w in (self.w1, self.w2):
                w -= 1e-3 * w.grad

    def zero_grad(self):
        for w in (self.w1, self.w2):
            w.grad = None

    def named_params(self):
        return [("w1", self.w1.detach()), ("w2", self.w2.detach())]

    def named_grads(self):
        return [("w1", self.w1.grad), ("w2", self.w2.grad)]


def batches(poison):
    gen = torch.Generator().manual_seed(1)
    out = [
        (torch.randn(5, 4, dtype=torch.float64, generator=gen), torch.randn(5, 1, dtype=torch.float64))
        for _ in range(6)
    ]
    x, _ = out[POISON]
    x[0] = poison(x[0])
    return out


@pytest.mark.parametrize(
    "poison, phase, op, produced, line",
    [
        (torch.zeros_like, "backward", "SqrtBackward0", "inf", "h_abs = torch.sqrt(h * h)"),
        (lambda row: row * 1e200, "forward", "mul", "inf", "h_abs = torch.sqrt(h * h)"),
    ],
    ids=["backward", "forward"],
)
def test_the_replay_names_the_first_operation_that_made_a_non_finite_value(poison, phase, op, produced, line):
    steps = InjectedInf()
    guard = DivergenceGuard(steps)
    guard.save(0)
    assert not torch.is_anomaly_enabled()
    layer = guard.replay(iter(batches(poison)))
    assert not torch.is_anomaly_enabled()  # on for the replay only
    assert layer == "w1"  # w2's gradient, h_abs . grad, stays finite
    c = guard.culprit
    assert (c.phase, c.op, c.produced, c.index) == (phase, op, produced, POISON)
    assert "test_forensics.py" in c.where and line in c.where  # the forward line that made it
    text = explain.culprit({"layer": layer, **c.info(10)})
    layer = " in layer `w1`" if phase == "backward" else ""  # the backward's node leads to it
    assert text.startswith(f"the {phase} of `{op}`{layer} produced {produced} at step {10 + POISON} (")


def test_an_operation_in_place_that_overflows_is_the_one_named_not_the_finite_ones_before_it():
    big = torch.tensor([1e308, 1.0], dtype=torch.float64)
    with FirstNonFinite() as watch:
        big.add_(1.0)
        big.mul_(10.0)  # its input was finite before it ran
        big.add_(1.0)  # passes the inf on
    assert (watch.found.op, watch.found.produced, watch.found.phase) == ("mul_", "inf", "forward")
    assert "big.mul_(10.0)" in watch.found.where


def test_a_replay_without_a_non_finite_value_names_no_operation():
    guard = DivergenceGuard(InjectedInf())
    guard.save(0)
    assert guard.replay(iter(batches(lambda row: row))) is None and guard.culprit is None


def test_an_engine_run_that_diverges_records_the_operation_and_the_banner_says_it(small):
    p = assemble.prepare(small(mode="autograd", dtype="float64", lr=1e6, steps=40, on_divergence="stop"))
    mode, data = assemble.build(p)
    t = Trainer(mode, data, Telemetry.from_config(p.cfg, p.device), 40, on_divergence="stop")
    t.run()
    d = t.divergence
    assert d is not None and d["op"] and d["phase"] in ("forward", "backward", "update")
    assert d["restored"] <= d["op_step"] <= d["step"] and d["produced"] in ("nan", "inf")
    what, _ = explain.divergence_banner(d, "diverged", t.step, 1e6, "stop")
    assert f"First: the {d['phase']} of `{d['op']}`" in what and f"at step {d['op_step']}" in what
    assert math.isfinite(float(mode.named_params()[0][1].sum()))  # the finite weights are back
