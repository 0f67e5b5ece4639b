"""Train: configure in the sidebar, Start (or Compare modes), and watch the run live."""

import streamlit as st

import engine
from dashboard import (
    actions,
    compare,
    edit_layer,
    figures,
    landscape,
    learned,
    live,
    pages_common,
    rules,
    sidebar,
    state,
    steering,
)

st.title("Train")
st.session_state.pop(state.GOTO_TRAIN, None)  # the Runs page's way here (a resume, fork, run again): here already
prepared, error = actions.validate()
why = rules.disabled_reasons(sidebar.values())
refusal = actions.compare_refusal()  # the engine's word on the three compare runs, naming the setting

c1, c2, c3 = st.columns([1, 1.4, 5])
c1.button("Start", type="primary", key="btn_start", on_click=actions.start, disabled=error is not None)
c2.button(
    "Compare modes",
    key="btn_compare",
    on_click=actions.compare,
    disabled=error is not None or "compare" in why or refusal is not None,
    help="Runs this configuration as manual, autograd and custom Function from the same seed.",
)
if error:
    c3.error(pages_common.plain(f"Cannot start: {error}"))
else:
    p = prepared.cfg
    c3.caption(
        f"Ready: {rules.MODE_LABELS[p.mode]} · {p.arch} · {p.dataset} · {p.loss} loss · lr {p.lr:.3g} · "
        + (f"{prepared.total_steps:,} steps" if prepared.total_steps else "until stopped")
        + (f" at most {p.pace:g} steps/s" if p.pace else "")
        + f" on {prepared.device_note}"
        + (f", {p.world} processes (torchrun)" if p.world > 1 else "")
        + (f", {p.precision}" if p.precision != "fp32" else "")
        + (", fast path (CUDA graph)" if p.fast else "")
        + (", torch.compile" if p.compile else "")
    )
mode = sidebar.values()["mode"]
if refusal and refusal != error:  # (a setting that stops Start too is said once, above)
    st.caption(f":grey[Compare modes is off: {pages_common.plain(refusal)}]")
elif "compare" in why:
    blocks = f"the mode is {rules.MODE_LABELS[mode]}" if mode not in rules.COMPARE_MODES else "this configuration"
    st.caption(f":grey[Compare modes is off because {blocks}: {why['compare']}]")
steering.next_run_tables()
pages_common.messages()

run_id = pages_common.current_run()
compared = st.session_state.get(state.COMPARE)
if compared:
    compare.panel(compared)
if run_id:
    live.run_panel(run_id)
    learned.panel(run_id)
    with st.container():  # always drawn, so that the detail panel keeps its place when these appear
        edit_layer.panel(run_id)  # a paused run's
        landscape.panel(run_id)  # a paused or ended run's
        steering.schedule_editor(engine.get_run(run_id, pages_common.store()))  # a live run's actions to come
    live.detail_panel(run_id)
else:
    st.info(
        "Configure a run in the sidebar and press Start. Runs keep training in the background; "
        "the Runs page lists them all."
    )
    # not an empty chart with meaningless axes: a message where the curve will be. It is a chart all
    # the same, so the browser loads its plotting code now rather than after Start (up to 2 s saved)
    st.plotly_chart(figures.placeholder("The loss curve appears here after Start."), key="loss_placeholder")
