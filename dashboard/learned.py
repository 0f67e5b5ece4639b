"""The Train page's "What it learned" panel: for a playground run the decision regions (2D) or the learned function
(1D) with the training and test points, a slider back through the stored snapshots, one tile per neuron for a small
net; for every run with a test split its accuracy. A fragment refreshed with the detail panel (refresh.SLOW);
the figures are learned_figures.py's."""

from __future__ import annotations

import streamlit as st

from engine.config.canvas import LINE, TILE

from . import learned_figures, pages_common, refresh
from .feed import RunFeed

PICTURES = ("regions", "curve")  # a 2D set's, a 1D set's
STEP_KEY = "learned_at"
FOLLOW_KEY = "learned_follow"
CONFIG = {"displaylogo": False}


def panel(run_id: str):
    refresh.fragment(_panel, [run_id], refresh.SLOW, run_id)


def test_loss(db, f: RunFeed) -> dict:
    """The held-out split's loss, for the loss chart beside the training loss: {label: series}, or {} without one."""
    return {"test loss (held-out split)": f.sync(db, "test/loss")} if "test/loss" in f.keys else {}


def _panel(runs, run_id):
    if runs[0] is None:
        return
    db = pages_common.store()
    f = pages_common.feed(run_id)
    f.sync_keys(db)
    kind = next((k for k in PICTURES if db.picture_steps(run_id, k)), None)
    if kind is None and "test/accuracy" not in f.keys:
        return
    st.subheader("What it learned")
    accuracy = f.sync(db, "test/accuracy") if "test/accuracy" in f.keys else None
    if kind is not None:
        _pictures(db, run_id, kind, accuracy)
    if accuracy is not None and len(accuracy):
        st.caption(
            "Accuracy on the held-out test split, which the net never trains on. Healthy: it climbs with the training "
            "loss's fall; a training loss that keeps falling while this stalls or drops is overfitting."
        )
        st.plotly_chart(learned_figures.accuracy_figure(accuracy), key="learned_accuracy", config=CONFIG)


def _pictures(db, run_id: str, kind: str, accuracy):
    steps = db.picture_steps(run_id, kind)
    c1, c2 = st.columns([4, 1])
    follow = c2.toggle("Latest", value=True, key=FOLLOW_KEY, help="follow the newest snapshot")
    chosen = st.session_state.get(STEP_KEY)
    if follow or chosen not in steps:  # a thinned-out step moves to the nearest kept one
        st.session_state[STEP_KEY] = (
            steps[-1] if follow or chosen is None else min(steps, key=lambda s: abs(s - chosen))
        )
    at = steps[-1]
    if len(steps) > 1:
        at = c1.select_slider("Snapshot at step", steps, key=STEP_KEY, disabled=follow, help="the stored snapshots")
    pictures = db.pictures(run_id, at)
    shown = db.picture_steps(run_id, "points/train")
    points = db.pictures(run_id, shown[-1], "points/") if shown else {}
    scatter = {w: points[f"points/{w}"] for w in ("train", "test") if f"points/{w}" in points}
    if kind == "regions":
        right = None if accuracy is None else _at(accuracy, at)
        fig = learned_figures.regions_figure(pictures["regions"], scatter, right, at)
        about = (
            "The colour is the net's probability of class 1 (blue) against class 0 (orange) at each point of the "
            "plane; circles are the training points, diamonds the held-out test points, in their true class's colour."
        )
    else:
        fig = learned_figures.curve_figure(pictures["curve"], scatter, points.get("points/target"), at)
        about = "The net's prediction over the line (blue), the clean target (dashed) and the noisy samples."
    st.caption(about)
    st.plotly_chart(fig, key="learned_picture", config=CONFIG)
    layers = sorted((name for name in pictures if name.startswith("neurons/")), key=lambda n: int(n.split("/")[1]))
    if layers and st.toggle("One tile per neuron", value=True, key="learned_tiles"):
        st.caption(
            "Each hidden unit's output over the inputs, scaled to its own largest value; a blank tile is a dead unit."
        )
        for name in layers:
            values = pictures[name]
            each = TILE * TILE if kind == "regions" else LINE  # a tile's points (engine/config/canvas.py)
            fig = learned_figures.neurons_figure(
                values, len(values) // each, kind == "regions", int(name.split("/")[1])
            )
            st.plotly_chart(fig, key=f"learned_{name}", config=CONFIG)


def _at(series, step: int) -> float | None:
    """The value of a snapshot series at `step` (the last one at or before it)."""
    x, y = series.points()
    before = [v for s, v in zip(x, y) if s <= step]
    return before[-1] if before else None
