"""The detail panel: one of Weights, Gradients, Per-layer, Health, Gradient check or Code for the
watched run, refreshed by live.detail_panel's fragment every few seconds. Each chart says in one
line what it shows and what healthy looks like; a chart without data says so instead of drawing
empty axes."""

from __future__ import annotations

import streamlit as st

from engine.modes.gradcheck import gradcheck_verdict

from . import explain, figures, health, histograms, learned_figures, pages_common, rules, state, steering, step_trace
from .about_text import ENGINE_CODE, concept_diff
from .feed import RunFeed
from .lecture_cells import CELLS

VIEWS = ["Weights", "Gradients", "Per-layer", "Health", "Gradient check", "Code"]
HIST_ABOUT = {
    "weight": "Each column is one snapshot: the colour is the log10 share of the layer's weights in each value "
    "bin (0 = all of them, -3 = one in a thousand). Healthy: a band that drifts or widens slowly; one that "
    "explodes or collapses to a single value is trouble.",
    "grad": "Each column is one snapshot of the layer's gradient, coloured by log10 share as for the weights. "
    "Healthy: centred on 0 and narrowing as the loss falls; a band that keeps widening points to a learning "
    "rate that is too high.",
}


def panel(runs, run_id):
    run = runs[0]
    if run is None:
        return
    view = st.segmented_control(
        "Panel", VIEWS, default="Weights", key="detail_view", required=True, label_visibility="collapsed"
    )
    db = pages_common.store()
    f = pages_common.feed(run_id)
    f.sync_keys(db)
    f.sync_events(db)
    if view in ("Weights", "Gradients"):
        _hist_view(db, f, "weight" if view == "Weights" else "grad", run)
    elif view == "Per-layer":
        _layer_view(db, f)
    elif view == "Health":
        _health_view(db, f, run)
    elif view == "Gradient check":
        _gradcheck_view(db, f, run)
    elif view == "Code":
        step_trace.view(run, f)  # a raw-mode run's Step, and its tensors beside the lecture's lines
        _code_view(run)


def _hist_view(db, f: RunFeed, kind: str, run: dict):
    layers = f.sync_layers(db, kind)
    if not layers:
        st.caption("No histograms yet (they come every K steps).")
        return
    c1, c2 = st.columns([2, 1])
    layer = c1.selectbox("Layer", layers, key=f"layer_{kind}")
    follow = c2.toggle("Latest step", value=True, key=f"follow_{kind}")
    snaps = f.sync_hist(db, kind, layer).snaps
    title = "Weights" if kind == "weight" else "Gradients"
    st.caption(HIST_ABOUT[kind] + " " + explain.layer_names(layers))
    st.plotly_chart(
        histograms.hist_heatmap(snaps, f"{title} of {layer}: distribution over time"),
        key=f"heat_{kind}",
        config={"displaylogo": False},
    )
    snap = histograms.last_finite(snaps)
    steps = sorted({s["step"] for s in snaps})
    if len(steps) > 1:  # a slider over the steps that have a snapshot, not the planned ones
        key = state.hist_at(kind)
        chosen = st.session_state.get(key)
        if follow or chosen not in steps:  # the step on display; a thinned-out one moves to the nearest
            st.session_state[key] = (
                snap["step"] if follow or chosen is None else min(steps, key=lambda s: abs(s - chosen))
            )
        at = st.select_slider("Histogram at step", steps, key=key, disabled=follow, help="the steps with a snapshot")
        if not follow:
            snap = [s for s in snaps if s["step"] == at][-1]  # after a divergence: the weights put back
    note = explain.snapshot_note(snap["step"], [e["data"] for e in f.events_of("divergence")]) if snap else ""
    st.plotly_chart(
        histograms.hist_bar(snap, f"{title} of {layer}", note), key=f"bar_{kind}", config={"displaylogo": False}
    )


def _chart(where, fig, key: str, about: str, empty: str | None = None):
    """One chart with its line on what it shows and what healthy looks like; a short message
    instead of empty axes while it has no data."""
    where.caption(about)
    if empty and not any(t.x is not None and len(t.x) for t in fig.data):
        where.info(empty)
        return
    where.plotly_chart(fig, key=key, config={"displaylogo": False})


def _layer_view(db, f: RunFeed):
    wait = "None yet: the first snapshot brings it."
    norms = f.sync_prefix(db, "grad_norm/")
    st.caption(explain.layer_names(list(norms)))
    c1, c2 = st.columns(2)
    _chart(
        c1,
        figures.grad_norm_figure(norms),
        "grad_norm",
        "‖gradient‖ of each layer. Healthy: the layers within a few orders of magnitude of each other; "
        "one far below the rest learns little (vanishing), one far above is exploding.",
        wait,
    )
    _chart(
        c2,
        figures.update_ratio_figure(f.sync_prefix(db, "update_ratio/")),
        "update_ratio",
        "‖Δw‖ / ‖w‖: how much one update moves each layer. A rule of thumb: near 1e-3; far below, "
        "learning is slow; above 1e-2, the learning rate may be too high.",
        wait,
    )
    _chart(
        c1,
        figures.lr_figure(f.sync(db, "lr"), f.events_of("lr_change"), steering.marks(f)),
        "lr",
        "The learning rate at each snapshot; triangles mark changes (Set lr, the CLI's set-lr, rules), diamonds "
        "the scheduled actions and the rules that fired.",
        wait,
    )
    _chart(
        c2,
        figures.layer_lines(f.sync_prefix(db, "weight_norm/"), "Weight norm per layer", "‖w‖"),
        "weight_norm",
        "‖w‖ of each layer. Healthy: slow drift; a steady climb can mean the weights are blowing up.",
        wait,
    )


def _health_view(db, f: RunFeed, run):
    health.table(db, f, run)
    device = (run.get("device") or run["config"].get("device") or "").split(" ", 1)[0]
    memory = "cuda, allocated" if device == "cuda" else f"{device}, resident set of the worker"
    c1, c2 = st.columns(2)
    wait = "None yet: the first flush brings it."
    _chart(
        c1,
        figures.throughput_figure(f.sync(db, "steps_per_s")),
        "throughput",
        "Training steps per second, measured between flushes. Healthy: flat after the start-up (shaded, "
        "while the first steps allocate and warm up); dips while a snapshot or another program takes the machine.",
        wait,
    )
    _chart(
        c2,
        figures.memory_figure(f.sync(db, "mem_bytes"), memory),
        "memory",
        "Memory in use. Healthy: flat after the first steps; a steady climb is a leak.",
        wait,
    )
    _chart(
        st,
        figures.nonfinite_figure(f.sync_nonfinite(db)),
        "nonfinite",
        "NaN and inf values counted in the weight and gradient snapshots. Healthy: zero all along; "
        "the first non-zero step is where the run diverged.",
        "None yet: the first snapshot brings it.",
    )
    _chart(
        st,
        learned_figures.dead_figure(f.sync_prefix(db, "dead/")),
        "dead",
        "The share of each ReLU layer's units that output zero for the whole batch: they pass no gradient, so "
        "they stop learning. Healthy: near 0, a few percent at most; a share that climbs towards 1 (after a too "
        "high learning rate, say) is a layer dying.",
        "None yet: the first snapshot brings it.",
    )


def _gradcheck_view(db, f: RunFeed, run):
    mode = run["config"]["mode"]
    what = {"manual": "Hand-written vs autograd", "custom_function": "MyReLU vs autograd's ReLU"}.get(mode)
    if what is None:
        label = pages_common.plain(repr(rules.MODE_LABELS.get(mode, mode)))  # the stored config's text
        st.caption(
            f"Mode {label} has no gradient check: manual mode compares its hand-written gradients with "
            "autograd's, custom Function compares MyReLU's backward with autograd's."
        )
        return
    dtype = run["config"].get("dtype", "float32")
    checks = f.sync_prefix(db, "gradcheck/")
    verdict = gradcheck_verdict(checks, dtype)
    show = {True: st.success, False: st.error}.get(verdict.agree, st.caption)
    show(pages_common.plain(f"{what}: {verdict.text}"))
    st.plotly_chart(
        figures.gradcheck_figure(checks, dtype, figures.GRADCHECK_MEASURES[mode]),
        key="gradcheck",
        config={"displaylogo": False},
    )


def _code_view(run):
    """The running mode's code beside the lecture's cell for it, and its concept as a diff of the lecture's
    cells. Lines wrap: a cut-off line would hide the end of a statement or of its comment."""
    mode = run["config"]["mode"]
    if mode not in CELLS:  # a loop of the user's own, watched with liveprop.watch: its code is the script
        script = pages_common.plain(repr(run["config"]["script"]))  # anyone's text: shown as text
        st.caption(f"A loop of its own, watched with liveprop.watch: the script {script}.")
        return
    label, cell = CELLS[mode]
    c1, c2 = st.columns(2)
    c1.caption(f"Liveprop's step for {rules.MODE_LABELS[mode]} (engine/modes/), the code that runs")
    c1.code(ENGINE_CODE[mode], language="python", wrap_lines=True)
    c2.caption(f"The lecture's cell {label}")
    c2.code(cell, language="python", wrap_lines=True)
    what, diff = concept_diff(mode)
    st.caption(f"{what}: what is left is the concept of the mode.")
    st.code(diff, language="diff", wrap_lines=True)
