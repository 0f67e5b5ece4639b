"""Runs: every run in the store; overlay several, download metrics and checkpoints, resume an ended run, delete."""

from pathlib import Path

import streamlit as st

import engine
from dashboard import actions, live, pages_common, state
from engine.config.fields import OPTIMIZERS
from engine.store import metrics as export

if goto := st.session_state.pop(state.GOTO_TRAIN, None):  # a resumed run: watched there, with the notice
    st.switch_page("views/train.py", query_params={state.RUN_PARAM: goto})
st.title("Runs")
pages_common.messages()
db = pages_common.store()
runs = engine.list_runs(db)
if not runs:
    st.info("No runs yet. Start one on the Train page.")
    st.stop()

rows = pages_common.run_rows(runs, db)
st.button("Refresh", key="runs_refresh")
table = st.dataframe(
    rows,
    key="runs_table",
    on_select="rerun",
    selection_mode="multi-row",
    hide_index=True,
    column_config={
        "run": st.column_config.TextColumn(pinned=True),  # stays in view while the table scrolls sideways
        "lr now": st.column_config.NumberColumn(format="%.2e", help="the run's learning rate now (set-lr included)"),
        "final loss": st.column_config.NumberColumn(format="%.4g"),
    },
)
selected = [rows[i]["run"] for i in table.selection.rows]
st.caption(
    "Select rows to overlay their loss curves. The table scrolls sideways (shift + wheel, or drag it) to "
    f"{', '.join(list(rows[0])[-4:])}; the run column stays in view."
)
if selected:
    live.overlay_panel(selected)

st.subheader("One run")
ids = [r["run"] for r in rows]
run_id = st.selectbox("Run", ids, index=ids.index(selected[0]) if selected else 0, key="runs_one")
run = next(r for r in runs if r["id"] == run_id)
ckpt = run.get("checkpoint")
have_ckpt = bool(ckpt) and Path(ckpt).is_file()
ended = run["status"] not in engine.ACTIVE
# a script's run (liveprop.watch): the script owns its program, so the engine cannot resume, rerun or fork it
SCRIPT = "a script's run (liveprop.watch): run the script again; the engine does not own its program"
script = run["config"].get("mode") == "script"
# two rows: what to do with the run, then its files
c1, c2, c3, c4 = st.columns(4)
if c1.button("Watch on the Train page", key="runs_watch", width="stretch"):
    actions.watch(run_id)
    st.switch_page("views/train.py", query_params={state.RUN_PARAM: run_id})  # ?run= kept, so a reload keeps it
c2.button(
    "Resume",
    key="runs_resume",
    on_click=actions.resume_ended,
    args=(run_id,),
    disabled=script or not (ended and have_ckpt),
    help=SCRIPT
    if script
    else "continue this run from its checkpoint, in place: its steps, curves, weights, optimizer state and lr go on"
    if ended and have_ckpt
    else "an ended run with a checkpoint resumes here; an active one pauses and resumes on the Train page",
    width="stretch",
)
c3.button(
    "Run again",
    key="runs_again",
    on_click=actions.run_again,
    args=(run_id,),
    disabled=script,
    help=SCRIPT if script else "a new run, the same configuration",
    width="stretch",
)
c4.button("Delete…", key="runs_delete", on_click=actions.ask_delete, args=(run_id,), width="stretch")
if st.session_state.get(state.CONFIRM_DELETE) == run_id:
    active = run["status"] in engine.ACTIVE
    st.warning(
        pages_common.plain(
            f"Delete run {run_id} with its metrics{', checkpoint' if have_ckpt else ''} and log? "
            + ("It is still active: it will be stopped first. " if active else "")
            + "This cannot be undone."
        )
    )
    d1, d2, _ = st.columns([1, 1, 4])
    d1.button("Yes, delete", type="primary", key="runs_delete_yes", on_click=actions.delete, args=(run_id,))
    d2.button("Cancel", key="runs_delete_no", on_click=actions.cancel_delete)
f1, f2, f3, f4 = st.columns(4)
f1.download_button(
    "Metrics CSV",
    data=lambda: export.metrics(run_id, "csv", db),
    file_name=f"{run_id}.csv",
    mime="text/csv",
    key="runs_csv",
    on_click="ignore",
    width="stretch",
)
f2.download_button(
    "Checkpoint",
    data=(lambda: Path(ckpt).read_bytes()) if have_ckpt else b"",
    file_name=f"{run_id}.pt",
    mime="application/octet-stream",
    key="runs_ckpt",
    disabled=not have_ckpt,
    on_click="ignore",
    help=None if have_ckpt else "written every checkpoint_seconds while the run trains, and when it ends",
    width="stretch",
)
f3.button(
    "Export to ONNX",
    key="runs_onnx",
    on_click=actions.export_onnx,
    args=(run_id,),
    disabled=not have_ckpt,
    help="torch.onnx.export of the checkpoint's model, checked with onnxruntime on the run's own inputs",
    width="stretch",
)
exported = db.events(run_id, kind="onnx")
onnx_file = Path(exported[-1]["data"]["file"]) if exported else None
f4.download_button(
    "ONNX file",
    data=(lambda: onnx_file.read_bytes()) if onnx_file and onnx_file.is_file() else b"",
    file_name=f"{run_id}.onnx",
    mime="application/octet-stream",
    key="runs_onnx_file",
    disabled=not (onnx_file and onnx_file.is_file()),
    on_click="ignore",
    width="stretch",
)
with st.expander("Fork: what if the run had gone on differently from a step?"):
    if script:
        st.caption(SCRIPT)
    st.caption(
        "A new run starts at exactly the step, with the learning rate (and optimizer) you choose: from this run's "
        "nearest checkpoint before it, its steps are replayed bit for bit. Its curve is drawn beside this one's."
    )
    f1, f2, f3 = st.columns(3)
    f1.number_input("from step", min_value=0, value=max(0, (run["step"] or 0) // 2), step=1, key=state.FORK_STEP)
    f2.number_input("learning rate", min_value=0.0, value=float(engine.current_lr(run_id, db) or run["config"]["lr"]),
                    format="%.3e", key=state.FORK_LR)  # fmt: skip
    if run["config"]["mode"] == "optim":
        f3.selectbox(
            "optimizer", OPTIMIZERS, index=OPTIMIZERS.index(run["config"]["optimizer"]), key=state.FORK_OPTIMIZER
        )
    else:
        st.session_state[state.FORK_OPTIMIZER] = None
    st.button("Fork", key="runs_fork", on_click=actions.fork, args=(run_id,), disabled=script)
if run.get("error"):
    st.error(pages_common.plain(run["error"]))  # the worker's or anyone's text: never markdown
with st.expander("Configuration, versions and code"):
    shown = pages_common.applying(run["config"])
    hidden = sorted(set(run["config"]) - set(shown))
    st.json(shown)
    if hidden:
        st.caption(f"Not used by this run, so not shown: {', '.join(hidden)}")
    env = db.events(run_id, kind="environment")
    st.json(env[-1]["data"] if env else {"environment": "not recorded (a run from before it was)"})
