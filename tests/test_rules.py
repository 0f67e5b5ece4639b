"""Rules (--rule, engine/loop/rules.py): judged against hand-built flushes, where every number is known, then
in a tiny run, where a rule's lr change is recorded as a viewer's set_lr is and a spike pauses the run."""

from __future__ import annotations

import threading

import pytest
from conftest import wait_for

import engine
from engine.config.load import from_dict
from engine.config.reasons import validate
from engine.errors import ConfigError
from engine.loop.control import Control
from engine.loop.rules import MIN_SEEN, Rules
from engine.loop.telemetry import Flush
from engine.runs import api as runs
from engine.runs import worker
from engine.store.db import opened


def flush(first: int, losses=(), **scalars) -> Flush:
    """A flush of these losses from step `first`, and scalars given as key=[(step, value), ...] ("/" as "__")."""
    rows = [(step, key.replace("__", "/"), v) for key, points in scalars.items() for step, v in points]
    return Flush(first, list(losses), scalars=rows)


@pytest.mark.parametrize(
    "text,says",
    [
        ("plateau:5", "is not plateau:K:EFFECT"),
        ("plateau:0:pause", "K is a whole number of flushes"),
        ("spike:1:pause", "k is a multiple of the running median, above 1"),
        ("spike:10:halve", "the effect is lr*F (F above 0), pause or banner"),
        ("spike:10:lr*0", "the effect is lr*F"),
        ("ratio:1e-2:1e-4:3:banner", "needs 0 <= A < B"),
        ("cliff:3:pause", "is none of plateau:K:EFFECT, spike:k:EFFECT, ratio:A:B:K:EFFECT"),
    ],
)
def test_a_bad_rule_is_refused_in_one_line_naming_rule(text, says):
    with pytest.raises(ConfigError) as e:
        validate(from_dict({"rule": [text]}))
    assert says in str(e.value) and str(e.value).startswith("rule: ") and "\n" not in str(e.value), str(e.value)


def test_rules_are_written_back_as_the_grammar_writes_them():
    cfg = validate(from_dict({"rule": ["plateau:5:lr*0.5", " spike : 10 : pause ", "ratio:1e-4:0.01:3:banner"]}))
    assert cfg.rule == ("plateau:5:lr*0.5", "spike:10:pause", "ratio:0.0001:0.01:3:banner")


def test_plateau_fires_after_k_flushes_without_a_new_lowest_and_counts_again():
    rules = Rules(["plateau:2:lr*0.5"])
    fired = [rules.check(flush(4 * i, losses), lr=0.1) for i, losses in enumerate([[5, 3], [4, 4], [9], [2], [3], [2]])]
    assert [len(f) for f in fired] == [0, 0, 1, 0, 0, 1]  # 4 and 9 are no lower than 4; 2 is; then 3 and 2 are not
    command, value, (step, kind, data) = fired[2][0]
    assert (command, value, step, kind) == ("set_lr", 0.05, 8, "rule")
    assert data["rule"] == "plateau:2:lr*0.5" and (data["old"], data["new"]) == (0.1, 0.05)
    assert (data["loss"], data["lowest"], data["flushes"]) == (9, 4, 2)
    assert "has not fallen below 4 for 2 flushes (now 9)" in data["why"]
    assert rules.check(flush(30, [float("nan")]), lr=0.1) == []  # non-finite losses are the guard's


def test_spike_compares_each_layer_with_its_own_running_median():
    rules = Rules(["spike:10:pause"])
    calm = [(s, 1.0 + 0.01 * s) for s in range(MIN_SEEN)]
    assert rules.check(flush(0, grad_norm__w1=calm, grad_norm__w2=[(s, 100.0) for s in range(MIN_SEEN)]), 1e-3) == []
    # w2's 150 is big but its own median is 100; w1's 30 is over 10 x its median of 1.02
    fired = rules.check(flush(5, grad_norm__w1=[(7, 30.0)], grad_norm__w2=[(7, 150.0)]), 1e-3)
    assert len(fired) == 1
    command, value, (step, kind, data) = fired[0]
    assert (command, value, step, data["layer"], data["norm"], data["median"]) == ("pause", "rule", 7, "w1", 30.0, 1.02)
    assert data["why"].startswith("the gradient norm of w1 is 30, 29.4 x its running median 1.02")


def test_a_spike_needs_a_history_and_never_judges_a_non_finite_norm():
    rules = Rules(["spike:3:lr*0.1"])
    assert rules.check(flush(0, grad_norm__w1=[(0, 1.0), (1, 50.0)]), 1.0) == []  # 2 norms: no median yet
    rules = Rules(["spike:3:lr*0.1"])
    rules.check(flush(0, grad_norm__w1=[(s, 1.0) for s in range(MIN_SEEN)]), 1.0)
    assert rules.check(flush(9, grad_norm__w1=[(9, float("inf"))]), 1.0) == []


def test_ratio_banner_after_k_flushes_outside_and_two_lr_rules_compound():
    rules = Rules(["ratio:1e-4:1e-2:2:banner"])
    ok, high = [(0, 1e-3)], [(0, 0.5)]
    outcomes = [rules.check(flush(0, update_ratio__w1=r, update_ratio__w2=ok), 1.0) for r in (high, ok, high, high)]
    assert [len(o) for o in outcomes] == [0, 0, 0, 1]  # the good flush between starts the count again
    command, _, (_, _, data) = outcomes[3][0]
    assert command is None and data["effect"] == "banner" and data["layers"] == ["w1"]
    assert data["why"] == "the update ratio of w1 is 0.5, outside [0.0001, 0.01] for 2 flushes"
    assert rules.check(flush(0, [1.0]), 1.0) == []  # a flush with no ratio counts neither way

    both = Rules(["plateau:1:lr*0.5", "ratio:0:1:1:lr*0.1"])
    both.check(flush(0, [1.0]), 1.0)
    fired = both.check(flush(1, [2.0], update_ratio__w=[(1, 3.0)]), 1.0)
    assert [(c, v) for c, v, _ in fired] == [("set_lr", 0.5), ("set_lr", 0.05)]


def test_apply_puts_the_commands_to_control_and_the_events_in_the_flush():
    control, f = Control(), flush(0, [1.0])
    rules = Rules(["plateau:1:pause", "plateau:1:banner"])
    rules.apply(flush(0, [0.5]), 1.0, control)
    rules.apply(f, 1.0, control)
    assert control.take() == [(None, "pause", "rule")]  # the banner sends nothing
    assert [(e[0], e[1], e[2]["rule"]) for e in f.events] == [
        (0, "rule", "plateau:1:pause"),
        (0, "rule", "plateau:1:banner"),
    ]


def test_in_a_run_a_rule_changes_the_lr_as_set_lr_does_and_a_spike_pauses(small, store):
    """lr 1e-30 keeps the loss where it is, so plateau:2 fires at the 3rd flush (steps 5-8; the first holds step 0)
    and every 2nd after; the scheduled rate 1e-2 at step 30 makes the gradients spike at step 31 (70 x their
    median), and the spike rule pauses the run at the next boundary, before the loss goes non-finite."""
    cfg = small(steps=60, telemetry_every=1, flush_every=4, flush_seconds=3600, lr=1e-30,
                rule=["plateau:2:lr*0.5", "spike:5:pause"], at=["30:lr=1e-2"])  # fmt: skip
    run_id, _ = runs.create_run(cfg, store)
    ended = []
    t = threading.Thread(target=lambda: ended.append(worker.run_worker(run_id, store)), daemon=True)
    t.start()
    wait_for(lambda: engine.get_run(run_id, store)["status"] in ("paused", "finished"), 60, what="the spike's pause")
    with opened(store) as s:
        events = [(e["step"], e["kind"], e["data"]) for e in s.events(run_id) if e["kind"] != "environment"]
        lrs = dict(s.scalars(run_id, "lr"))
    plateau = [(step, d) for step, kind, d in events if kind == "rule" and d["rule"] == "plateau:2:lr*0.5"]
    assert plateau[0][0] == 8 and (plateau[0][1]["old"], plateau[0][1]["new"]) == (1e-30, 5e-31)
    # recorded as a viewer's set_lr is, at the next step boundary, and applied to that step
    assert (9, "lr_change", {"old": 1e-30, "new": 5e-31}) in events and (lrs[8], lrs[9]) == (1e-30, 5e-31)
    spikes = [(step, d) for step, kind, d in events if kind == "rule" and d["rule"] == "spike:5:pause"]
    assert len(spikes) == 1 and spikes[0][0] == 31 and spikes[0][1]["norm"] > 5 * spikes[0][1]["median"]
    assert engine.get_run(run_id, store)["status"] == "paused"
    assert [(step, d) for step, k, d in events if k == "pause"] == [(33, {"reason": "rule"})]
    assert runs.wait_ack(runs.stop(run_id, store), store)["result"] == "ok"
    t.join(30)
    assert ended == ["stopped"]
