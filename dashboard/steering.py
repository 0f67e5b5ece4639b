"""Scheduled actions and rules in the dashboard: two small tables for the next run's RunConfig.at and RunConfig.rule
(kept with the sidebar's values, state.CFG + the field), the Train page's editor of a running run's schedule, the
rules' banner, and the events the loss and lr charts mark (dashboard/figures.py). The grammar and its refusals are
the engine's (engine/config/steering.py): a bad entry is refused by the config's check and shown beside Start.

A table holds one entry a row. Its edits come back as Streamlit's edit record ({"edited_rows", "added_rows",
"deleted_rows"}); `edited` folds them into the entries, and the table is drawn again from those.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.config.fields import help_for

from . import actions, state
from .feed import RunFeed
from .pages_common import plain
from .state import CFG as K

COLUMN = "entry"
MAX_MARKS = 200  # scheduled actions and rules drawn on a chart: the latest
LABELS = {"at": "step:action", "rule": "rule"}  # a column's title
TITLES = {"at": "Scheduled actions", "rule": "Rules"}
PLACEHOLDERS = {"at": "300:lr=1e-7", "rule": "spike:10:pause"}


def edited(entries, change: dict) -> tuple[str, ...]:
    """The entries after a table's edit record: edited rows, then deleted ones, then added ones (the order
    Streamlit applies them in); empty rows are left out."""
    rows = list(entries)
    for i, cols in change.get("edited_rows", {}).items():
        rows[int(i)] = cols.get(COLUMN, rows[int(i)])
    gone = {int(i) for i in change.get("deleted_rows", [])}
    rows = [r for i, r in enumerate(rows) if i not in gone] + [r.get(COLUMN) for r in change.get("added_rows", [])]
    return tuple(str(r).strip() for r in rows if r is not None and str(r).strip())


def _table(name: str, entries, key: str, on_change, args, disabled: bool = False):
    st.data_editor(
        pd.DataFrame({COLUMN: pd.Series(list(entries), dtype="string")}),
        key=key,
        num_rows="dynamic",
        hide_index=True,
        width="stretch",
        disabled=disabled,
        on_change=on_change,
        args=args,
        column_config={COLUMN: st.column_config.TextColumn(LABELS[name], help=help_for(name), width="large")},
    )


def _next_changed(name: str):
    st.session_state[K + name] = edited(st.session_state[K + name], st.session_state[state.STEER_TABLE + name])


def next_run_tables():
    """The next run's scheduled actions and rules, one table each, on the Train page under Start. They are not
    in the sidebar: there the table's grid, loaded by the browser on first use, remounted the sidebar's other
    widgets, which then came back at their lowest values (seen in Chromium: steps 0, lr 0)."""
    with st.expander("Schedule and rules for the next run"):  # a label that stays: a new one would close it
        st.caption(_count(K + "at", K + "rule"))
        c1, c2 = st.columns(2)
        for where, name in ((c1, "at"), (c2, "rule")):
            with where:
                st.caption(TITLES[name])
                _table(name, st.session_state[K + name], state.STEER_TABLE + name, _next_changed, (name,))
        st.caption(
            f"e.g. {PLACEHOLDERS['at']} (the lr from step 300), 500:pause; rules: {PLACEHOLDERS['rule']}, "
            "plateau:5:lr*0.5, ratio:1e-4:1e-2:3:banner. Hover a column's title for the grammar."
        )


def _count(at_key: str, rule_key: str) -> str:
    n, m = len(st.session_state.get(at_key, ())), len(st.session_state.get(rule_key, ()))
    return f"{n} scheduled action(s), {m} rule(s)"


# ---------------------------------------------------------------------------------------------
# a running run's schedule (the Train page)


def pending(run: dict) -> tuple[str, ...]:
    """The run's scheduled actions after its step: those still to come (the stored config, which set_plan keeps)."""
    step = run.get("step") or 0
    return tuple(a for a in run["config"].get("at", ()) if int(a.split(":", 1)[0]) > step)


def _edit_changed(run_id: str):
    key = state.SCHEDULE_EDIT + run_id
    st.session_state[key + "_entries"] = edited(st.session_state[key + "_entries"], st.session_state[key])


def schedule_editor(run: dict):
    """The schedule of a running or paused run: its actions still to come, editable, and Replace schedule, which
    sends them (engine set_plan) in place of the pending ones. Drawn outside the live fragments, so that an edit
    is not redrawn away; the rows start again from what is to come whenever that changed (the run went past an
    action, a schedule was sent)."""
    if run is None or run["status"] not in ("running", "paused") or run["config"].get("mode") is None:
        return
    key = state.SCHEDULE_EDIT + run["id"]
    with st.expander(f"Schedule: {len(pending(run))} action(s) to come", expanded=False):
        if st.session_state.get(key + "_seed") != pending(run):  # what is to come changed: the table shows it anew
            st.session_state[key + "_seed"] = st.session_state[key + "_entries"] = pending(run)
        _table("at", st.session_state[key + "_entries"], key, _edit_changed, (run["id"],))
        st.button(
            "Replace schedule",
            key="btn_schedule",
            on_click=lambda: actions.set_plan(run["id"], st.session_state[key + "_entries"]),
            help="The actions above take the place of every action still to come (those at or before the run's "
            "step are past, and left out). Recorded as the event 'schedule'.",
        )


# ---------------------------------------------------------------------------------------------
# the charts' marks and the rules' banner


def marks(f: RunFeed) -> list[dict]:
    """The events the loss and lr charts mark: scheduled actions and rules that fired, the latest MAX_MARKS."""
    return [e for e in f.events if e["kind"] in ("scheduled", "rule")][-MAX_MARKS:]


def banner(run: dict, f: RunFeed):
    """The last rule with the effect banner that fired, and why a rule paused the run (while it is paused)."""
    fired = f.events_of("rule")
    said = next((e for e in reversed(fired) if e["data"].get("effect") == "banner"), None)
    if said:
        st.warning(plain(f"Rule {said['data'].get('rule')} at step {said['step']}: {said['data'].get('why')}"))
    paused = next((e for e in reversed(fired) if e["data"].get("effect") == "pause"), None)
    if paused and run["status"] == "paused" and run.get("pause_reason") == "rule":
        st.warning(
            plain(
                f"Paused by rule {paused['data'].get('rule')} at step {paused['step']}: {paused['data'].get('why')}. "
                "Resume goes on; Set lr first to go on more gently."
            )
        )
