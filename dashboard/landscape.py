"""The Train page's Landscape panel, for a paused or ended run: a button that starts the engine's landscape job
(engine/runs/landscape.py, in its own process on the run's device), its progress with the ETA while it computes
(a fragment refreshing every second, only then), and its two charts (landscape_figures.py) once it has them."""

from __future__ import annotations

import streamlit as st

import engine
from engine import LivepropError
from engine.tools.landscape import GRID, MAX_GRID, POINTS_1D, TIME_LIMIT_S

from . import pages_common, state
from .landscape_figures import line_figure, path_note, plane_figure

GRIDS = tuple(range(11, MAX_GRID + 1, 10))  # points a side of the plane
REFRESH_S = 1.0


def _start(run_id: str):
    grid = st.session_state.get(state.LANDSCAPE_GRID, GRID)
    try:
        engine.start_landscape(run_id, grid)
        st.session_state.pop(state.PAUSED_TOOL, None)
    except LivepropError as e:
        st.session_state[state.PAUSED_TOOL] = (run_id, "landscape", str(e))


def _running(job: dict | None) -> bool:
    return job is not None and job["state"] == "running"


def panel(run_id: str):
    """Nothing while the run is queued or running: a landscape is taken between steps, never inside one."""
    run = engine.get_run(run_id, pages_common.store())
    if run is None or run["status"] in ("queued", "running") or run["config"].get("mode") == "script":
        return  # a script's run (liveprop.watch) keeps no checkpoint: its loop is the user's
    running = _running(engine.landscape_status(run_id, pages_common.store()))
    st.fragment(_body, run_every=REFRESH_S if running else None)(run_id, running)


def _body(run_id: str, was_running: bool):
    job = engine.landscape_status(run_id, pages_common.store())
    if _running(job) != was_running:
        st.rerun()  # started or ended: re-create the fragment with its new interval
    st.subheader("Loss landscape")
    c1, c2, c3 = st.columns([1, 1.4, 4])
    c1.button(
        "Landscape",
        key="btn_landscape",
        on_click=_start,
        args=(run_id,),
        disabled=_running(job),
        help="The loss of the batch the run's next step takes, around its weights now: along its next update, and "
        "on a plane of two random directions (Li et al. 2018), computed in a background job on the run's device.",
    )
    grid = c2.select_slider("Grid", GRIDS, value=GRID, key=state.LANDSCAPE_GRID, label_visibility="collapsed")
    c3.caption(
        f"{POINTS_1D + grid * grid:,} forward passes of one batch (a {grid} × {grid} plane), "
        f"at most {TIME_LIMIT_S / 60:g} minutes."
    )
    refused = st.session_state.get(state.PAUSED_TOOL)
    if refused and refused[:2] == (run_id, "landscape"):
        st.error(pages_common.plain(f"Landscape: {refused[2]}"))
    if job is None:
        return
    if job["state"] == "running":
        eta = "" if job["eta"] is None else f" · ETA {int(job['eta']) // 60}:{int(job['eta']) % 60:02d}"
        st.progress(job["done"] / job["total"], text=f"computing: {job['done']:,} / {job['total']:,} points{eta}")
    elif job["state"] == "failed":
        st.error(pages_common.plain(f"The landscape job failed: {job.get('error')}"))
    result = job.get("result")
    if not result:
        return
    step = job.get("step")
    where = f"Step {step} on {job.get('device')}, the batch of {job.get('batch')} samples its next step takes."
    if job["state"] == "done" and not job.get("complete", True):
        where += f" The plane stopped at its time limit after {result['rows_done']} of {len(result['coefs'])} rows."
    st.caption(pages_common.plain(where))
    c1, c2 = st.columns([2, 3])
    c1.plotly_chart(line_figure(result, step), key="landscape_line", config={"displaylogo": False})
    c1.caption(
        "Alpha 0 is where the run is; 1 is where its next update lands. A loss that falls to 1 and on: the step "
        "could be longer; one that rises before 1: the learning rate overshoots."
    )
    if result.get("loss_2d"):
        c2.plotly_chart(plane_figure(result, step), key="landscape_plane", config={"displaylogo": False})
        c2.caption(pages_common.plain(path_note(result)))
