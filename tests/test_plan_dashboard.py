"""Scheduled actions and rules in the dashboard (dashboard/steering.py): the tables' edits folded into entries,
the charts' marks, the sidebar's entries reaching the launched config (or refused beside Start), a paused run's
rule banner, and the Train page's Replace schedule sending set_plan."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import engine
from dashboard import figures
from dashboard.steering import edited
from engine.store.db import Store

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
RUN = "20260101-000000-00a7a7"


def test_a_tables_edits_are_folded_into_its_entries_in_streamlits_order():
    entries = ("1:pause", "2:stop", "3:checkpoint")
    change = {
        "edited_rows": {"1": {"entry": " 20:lr=1e-7 "}},  # edited first, then rows 0 and 2 deleted, then added
        "deleted_rows": [0, 2],
        "added_rows": [{"entry": "40:stop"}, {}, {"entry": "  "}],  # rows left empty are no entries
    }
    assert edited(entries, change) == ("20:lr=1e-7", "40:stop")
    assert edited((), {"added_rows": [{"entry": "5:pause"}]}) == ("5:pause",)
    assert edited(entries, {}) == entries


def test_the_loss_and_lr_charts_mark_scheduled_actions_and_rules():
    series = (np.arange(10), np.linspace(5, 1, 10))
    marks = [
        {"step": 3, "kind": "scheduled", "data": {"action": "3:lr=1e-07"}},
        {"step": 7, "kind": "rule", "data": {"rule": "spike:10:pause", "why": "the gradient norm of w1 is 30"}},
    ]
    for fig in (figures.loss_figure(series, marks=marks), figures.lr_figure(series, marks=marks)):
        (trace,) = [t for t in fig.data if t.name == "scheduled / rule"]
        assert list(trace.x) == [3, 7] and trace.marker.symbol == "diamond"
        assert list(trace.text) == ["scheduled: 3:lr=1e-07", "rule spike:10:pause: the gradient norm of w1 is 30"]
    assert not [t for t in figures.loss_figure(series).data if t.name == "scheduled / rule"]


@pytest.fixture
def app(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.delenv("LIVEPROP_VISDOM_URL", raising=False)
    return AppTest.from_file(APP, default_timeout=60)


def test_the_sidebars_entries_reach_the_launched_config_or_are_refused_beside_start(app, monkeypatch):
    launched = []
    monkeypatch.setattr(engine, "launch", lambda cfg, store=None: launched.append(engine.prepare(cfg).cfg) or RUN)
    app.session_state["cfg_at"] = ("300:lr=1e-7", "20:jump")
    app.session_state["cfg_rule"] = ("spike:10:pause",)
    app.run()
    assert not app.exception, app.exception
    assert any("Cannot start: at: '20:jump'" in e.value.replace("\\", "") for e in app.error)
    app.session_state["cfg_at"] = ("300:lr=1e-7", "500:pause")
    app.run()
    app.button(key="btn_start").click().run()
    assert not app.exception, app.exception
    (cfg,) = launched
    assert (cfg.at, cfg.rule) == (("300:lr=1e-07", "500:pause"), ("spike:10:pause",))


def test_a_run_paused_by_a_rule_says_why_and_its_schedule_is_replaced_from_the_train_page(app, store, monkeypatch):
    s = Store(store)
    s.create_run(RUN, vars(engine.RunConfig(mode="autograd", at=("2:lr=1e-7", "40:stop"))), total_steps=50)
    s.update_run(RUN, step=10)
    s.add_event(RUN, 7, "rule", {"rule": "spike:10:pause", "effect": "pause", "why": "the gradient norm of w1 is 30"})
    s.add_event(RUN, 8, "rule", {"rule": "ratio:0:0.01:2:banner", "effect": "banner", "why": "the update ratio of w2"})
    s.set_status(RUN, "paused", pause_reason="rule")
    s.close()
    sent = []
    monkeypatch.setattr(engine, "set_plan", lambda run_id, entries: sent.append((run_id, entries)) or 1)
    app.query_params["run"] = RUN
    app.run()
    assert not app.exception, app.exception
    said = " ".join(w.value.replace("\\", "") for w in app.warning)
    assert "Paused by rule spike:10:pause at step 7: the gradient norm of w1 is 30" in said
    assert "Rule ratio:0:0.01:2:banner at step 8: the update ratio of w2" in said
    assert app.session_state[f"schedule_edit_{RUN}_entries"] == ("40:stop",)  # after step 10: still to come
    app.session_state[f"schedule_edit_{RUN}_entries"] = ("40:stop", "60:lr=1e-3")
    app.button(key="btn_schedule").click().run()
    assert sent == [(RUN, ("40:stop", "60:lr=1e-3"))]
    s = Store(store)
    s.update_run(RUN, step=45)  # past 40: the table starts again from what is to come
    s.close()
    app.run()
    assert app.session_state[f"schedule_edit_{RUN}_entries"] == ()
