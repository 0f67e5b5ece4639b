"""Forks from the Train page: a click on a point of the loss chart opens the fork dialog at that step, and the
divergence banner's "Step back and retry at lr/10" forks from the last finite step. A fork starts at exactly its
step (engine/runs/forking.py); the dialog says how many of the parent's steps it replays to get there.

    clickable(fig)                the loss figure with points to click on its smoothed line
    chart_clicked(run_id)         the loss chart's on_select callback: remembers the step clicked
    open_if_asked(run_id)         opens the dialog at that step, once
    parent_lr_changes(db, forked) the parent's lr changes on the way to a fork's step, marked on its chart
    retry_button(run, d, lr)      beside the divergence banner d
"""

from __future__ import annotations

import streamlit as st

import engine
from engine.config.fields import OPTIMIZERS
from engine.errors import LivepropError

from . import actions, pages_common, state

CHART = "loss_chart"  # the loss chart's key (dashboard/live.py)


def clickable(fig):
    """The loss figure with its smoothed line clickable: plotly selects points of markers only, so the line gets
    invisible ones (a line drawn with visible markers, a short one, keeps them)."""
    for trace in fig.data:
        if trace.name == "loss" and trace.mode == "lines":
            trace.update(mode="lines+markers", marker=dict(size=8, opacity=0))
    return fig


def chart_clicked(run_id: str):
    """The loss chart's selection changed: the step of the point clicked (every trace's x is the step)."""
    points = (st.session_state.get(CHART) or {}).get("selection", {}).get("points") or []
    if points:
        st.session_state[state.FORK_ASKED] = (run_id, int(round(float(points[0]["x"]))))


def open_if_asked(run_id: str):
    asked = st.session_state.pop(state.FORK_ASKED, None)
    if asked and asked[0] == run_id:
        dialog(run_id, asked[1])


def parent_lr_changes(db, forked: list[dict]) -> list[dict]:
    """A fork's chart marks its parent's lr changes before the fork's step, where the parent's curve is drawn
    beside it: the changes its start replayed (forked: the fork's "forked" events; none for any other run)."""
    if not forked:
        return []
    at = forked[-1]["step"]
    return [e for e in db.events(forked[-1]["data"]["parent"], kind="lr_change") if e["step"] < at]


def lr_at(db, run: dict, step: int) -> float:
    """The run's learning rate at `step`: its last lr change before it, else its config's."""
    before = [e["data"]["new"] for e in db.events(run["id"], kind="lr_change") if e["step"] < step]
    return float(before[-1] if before else run["config"]["lr"])


def replay_text(how) -> str:
    """ "Starts from the checkpoint at step 0 and replays 213 of the parent's steps (lr changes at 90, 150)." """
    if not how.replay:
        return f"Starts from the parent's checkpoint at step {how.start}: nothing to replay."
    changes = f", with its lr changes at steps {', '.join(str(s) for s, _ in how.lr_changes)}" if how.lr_changes else ""
    return (
        f"Starts from the parent's checkpoint at step {how.start} and replays {how.replay:,} of its steps"
        f"{changes}, bit for bit, to reach step {how.step:,}."
    )


@st.dialog("Fork at a step", width="medium")
def dialog(run_id: str, step: int):
    """What if the run had gone on differently from this step: the step, the lr and optimizer, what is replayed."""
    db = pages_common.store()
    run = engine.get_run(run_id, db)
    if run is None:
        st.warning(pages_common.plain(f"Run {run_id} is not in the store (deleted?)."))
        return
    k = int(st.number_input("from step", min_value=0, value=step, step=1, key="fork_dialog_step"))
    try:
        how = engine.fork_plan(run_id, k, db)
        st.caption(pages_common.plain(replay_text(how)))
    except LivepropError as e:
        how = None
        st.error(pages_common.plain(str(e)))
    lr = st.number_input("learning rate", min_value=0.0, value=lr_at(db, run, k), format="%.3e", key="fork_dialog_lr")
    changes = {"lr": lr}
    if run["config"]["mode"] == "optim":
        opt = run["config"]["optimizer"]
        changes["optimizer"] = st.selectbox("optimizer", OPTIMIZERS, index=OPTIMIZERS.index(opt), key="fork_dialog_opt")
    if st.button("Fork", key="fork_dialog_go", type="primary", disabled=how is None):
        error = _fork(run_id, k, changes)
        if error is None:
            st.rerun()  # closes the dialog: the Train page watches the new run
        st.error(pages_common.plain(error))


def _fork(run_id: str, step: int, changes: dict) -> str | None:
    """Fork and watch the new run, with a notice; returns the one-line reason when it is refused."""
    try:
        child = engine.fork(run_id, step, changes)
    except (LivepropError, TypeError, ValueError) as e:
        return f"Not forked: {e}"
    st.session_state[state.NOTICE] = f"Forked run {run_id} at step {step}: the new run {child}, lr {changes['lr']:.3g}."
    actions.watch(child)
    actions.expect(child, "running")
    return None


def retry(run_id: str, step: int, lr: float):
    error = _fork(run_id, step, {"lr": lr})
    if error:
        st.session_state[state.ERROR] = error


def retry_button(run: dict, d: dict, lr: float):
    """Beside a divergence banner: a fork from the last finite step (the weights the guard put back) at lr/10."""
    back = d.get("restored")
    st.button(
        "Step back and retry at lr/10",
        key="btn_retry",
        on_click=retry,
        args=(run["id"], back, lr / 10),
        disabled=back is None or not lr,
        help=f"a fork of this run at step {back}, the last finite one, with lr {lr / 10:.3g}; drawn as a branch",
    )
    if st.session_state.get(state.RUN) != run["id"]:  # the fork is watched now: the whole page shows it
        st.rerun()
