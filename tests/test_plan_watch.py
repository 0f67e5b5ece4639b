"""Scheduled actions and rules in a loop of the user's own (liveprop.watch(at=, rules=)): the same grammar, the
same events, each action at its step, as the engine's trainer applies them (tests/test_plan.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import liveprop
from engine import Store


def test_a_watched_loop_applies_its_schedule_at_the_step_and_its_rules_at_the_flushes(store):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    x, y = torch.randn(16, 6), torch.randn(16, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rates = []  # the rate each step's update used
    plan, rules = ["3:lr=0.01", "4:checkpoint", "6:stop"], ["ratio:0:1e-12:1:banner"]
    with liveprop.watch(model, opt, store=store, at=plan, rules=rules, telemetry_every=1) as run:
        for _ in range(20):
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            run.step(loss)
    assert rates == [0.1] * 3 + [0.01] * 3  # the stop at 6 ends the loop after step 5
    s = Store(store)
    try:
        row, events = s.get_run(run.id), [(e["step"], e["kind"], e["data"]) for e in s.events(run.id)]
    finally:
        s.close()
    assert (row["status"], row["step"], row["config"]["at"]) == ("stopped", 6, ["3:lr=0.01", "4:checkpoint", "6:stop"])
    assert [e for e in events if e[1] in ("scheduled", "lr_change", "stop")] == [
        (3, "scheduled", {"action": "3:lr=0.01", "at": 3}),
        (3, "lr_change", {"old": 0.1, "new": 0.01}),
        (4, "scheduled", {"action": "4:checkpoint", "at": 4, "left_out": "a watched loop keeps no checkpoints"}),
        (6, "scheduled", {"action": "6:stop", "at": 6}),
        (6, "stop", {}),
    ]
    fired = [d for _, kind, d in events if kind == "rule"]
    assert fired and fired[0]["rule"] == "ratio:0:1e-12:1:banner" and fired[0]["effect"] == "banner"
    assert fired[0]["ratio"] > 1e-12 and "outside [0, 1e-12] for 1 flushes" in fired[0]["why"]


def test_watch_refuses_a_bad_entry_in_one_line(store):
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"^liveprop.watch: at: '3:lr=-1': lr=X takes a learning rate above 0"):
        liveprop.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), store=store, at=["3:lr=-1"])
    with pytest.raises(ValueError, match=r"^liveprop.watch: rule: 'spike:2' is not spike:k:EFFECT$"):
        liveprop.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), store=store, rules=["spike:2"])
