"""Edit while paused, on the Train page: re-initialise or scale one layer of the watched run while it is paused (a
control, engine.edit_layer, whose outcome the status panel shows as it shows Set lr's), and the marks of a run's
edits on its loss chart (edit_marks, a pure function of the figure, the loss and the "layer_edit" events)."""

from __future__ import annotations

import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import engine
from engine import LivepropError

from . import actions, pages_common, state
from .figures import as_buckets

ACTIONS = {"Scale": "scale", "Re-initialise": "reinit"}


def describe(data: dict) -> str:
    """'w1 scaled by 0.5 (‖w‖ 3.1 → 1.6)', 're-initialised'."""
    what = f"scaled by {data['factor']:g}" if data["action"] == "scale" else "re-initialised"
    return f"{data['layer']} {what} (‖w‖ {data['norm_before']:.3g} → {data['norm_after']:.3g})"


def edit_marks(fig: go.Figure, loss, events) -> go.Figure:
    """A diamond on the loss at each edit's step, its hover saying what was edited."""
    events = [e for e in events if e.get("step") is not None]
    if events:
        steps = np.array([e["step"] for e in events], dtype=float)
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=as_buckets(loss).value_at(steps),
                mode="markers",
                name="layer edit",
                text=[describe(e["data"]) for e in events],
                marker=dict(symbol="diamond", size=11, color="#AB63FA", line=dict(width=1, color="white")),
                hovertemplate="step %{x}: %{text}<extra></extra>",
            )
        )
    return fig


def _send(run_id: str):
    layer = st.session_state.get(state.EDIT_LAYER)
    action = ACTIONS[st.session_state.get(state.EDIT_ACTION) or "Scale"]
    factor = st.session_state.get(state.EDIT_FACTOR)
    what = f"Scale {layer} by {factor:g}" if action == "scale" else f"Re-initialise {layer}"
    sent = {"run": run_id, "what": what, "time": time.time()}
    try:
        sent["id"] = engine.edit_layer(run_id, layer, action, factor)
    except (LivepropError, TypeError) as e:
        sent["error"] = str(e)
    st.session_state[state.CONTROL] = sent  # shown by the status panel, as the other controls' are
    actions.expect(run_id, "edit")  # the status panel refreshes until the worker answers


def panel(run_id: str):
    """The controls, while the run is paused and its layers are known (from its first snapshot)."""
    db = pages_common.store()
    run = engine.get_run(run_id, db)
    layers = pages_common.feed(run_id).sync_layers(db, "weight") if run and run["status"] == "paused" else []
    if not layers:
        return
    if run["config"].get("mode") == "script":  # liveprop.watch: the loop is the user's
        st.caption("A script's run (liveprop.watch): Edit a layer, Step and Landscape need a run the engine trains.")
        return
    st.subheader("Edit a layer")
    c = st.columns([2, 2.2, 1.5, 1])
    c[0].selectbox("Layer", layers, key=state.EDIT_LAYER)
    action = c[1].radio("Edit", list(ACTIONS), horizontal=True, key=state.EDIT_ACTION)
    c[2].number_input("Factor", value=0.5, step=0.1, format="%g", key=state.EDIT_FACTOR, disabled=action != "Scale")
    c[3].button("Apply", key="btn_edit", on_click=_send, args=(run_id,), width="stretch")
    st.caption(
        "While paused: scale a layer's weights, or draw them again as torch.nn.Linear does (uniform in "
        "±1/√fan-in), then Resume and watch the loss. The edit is marked on the loss chart, and a resume or a fork "
        "from this step keeps it."
    )
