"""Button callbacks (on_click): every action goes through the engine's public API.

Callbacks run before the rerun they trigger, so the page that follows already shows their effect.
Messages for the person go to st.session_state (state.ERROR, state.NOTICE) and are shown once.
A control (pause, resume, stop, set lr, a new schedule) leaves its outcome in st.session_state (state.CONTROL): the
live status panel (a fragment, which a full-page message would not reach) shows it as sent, then
as the worker's acknowledgement or refusal.
"""

from __future__ import annotations

import dataclasses
import time

import streamlit as st

import engine
from engine import LivepropError
from engine.config.load import from_dict

from . import rules, sidebar, state

EXPECT_S = 15.0  # how long a control's effect is awaited with live refreshes


def validate() -> tuple[object | None, str | None]:
    """The sidebar's configuration checked: (prepared, None) or (None, the one-line reason)."""
    try:
        return engine.prepare(sidebar.config()), None
    except LivepropError as e:
        return None, str(e)


def watch(run_id: str | None):
    st.session_state[state.RUN] = run_id
    state.show_run_in_address(run_id)


def start():
    """Launch the sidebar's configuration as a background run and watch it."""
    try:
        run_id = engine.launch(sidebar.config())
    except LivepropError as e:
        st.session_state[state.ERROR] = f"Not launched: {e}"
        return
    st.session_state[state.COMPARE] = None
    watch(run_id)
    expect(run_id, "running")


def compare():
    """The same configuration and seed as manual, autograd and custom Function, side by side."""
    _launch_compare(lambda: rules.compare_configs(sidebar.config()))


def compare_again(run_ids: list[str], dtype: str):
    """The compared runs' configuration again (their seed included), in another dtype."""
    run = next((r for r in map(engine.get_run, run_ids) if r), None)
    if run is not None:
        _launch_compare(lambda: rules.compare_configs(dataclasses.replace(from_dict(run["config"]), dtype=dtype)))


def compare_refusal() -> str | None:
    """Why the engine would refuse Compare modes for the sidebar's configuration, naming the setting, or None."""
    try:
        configs = rules.compare_configs(sidebar.config())
    except LivepropError as e:
        return str(e)
    for cfg in configs:
        try:
            engine.prepare(cfg)
        except LivepropError as e:
            return f"as {rules.MODE_LABELS.get(cfg.mode, cfg.mode)}, {e}"
    return None


def _launch_compare(configs):
    ids = []
    try:
        for cfg in configs():
            ids.append(engine.launch(cfg))
    except LivepropError as e:
        st.session_state[state.ERROR] = f"Not launched: {e}"
    if ids:
        st.session_state[state.COMPARE] = ids
        watch(ids[0])
        for run_id in ids:
            expect(run_id, "running")


def expect(run_id: str, status: str):
    """Keep the live panels refreshing until the run reaches status (or EXPECT_S passes)."""
    st.session_state.setdefault(state.EXPECT, {})[run_id] = (status, time.time() + EXPECT_S)


def control(run_id: str, command: str):
    """pause, resume or stop."""
    fn = {"pause": engine.pause, "resume": engine.resume, "stop": engine.stop}[command]
    _sent(run_id, command.capitalize(), lambda: fn(run_id))
    expect(run_id, {"pause": "paused", "resume": "running", "stop": "ended"}[command])


def set_lr(run_id: str):
    lr = st.session_state.get(state.live_lr(run_id))
    _sent(
        run_id,
        f"Learning rate {lr:.3g}" if isinstance(lr, (int, float)) else "Learning rate",
        lambda: engine.set_lr(run_id, lr),
    )
    expect(run_id, "lr")


def set_plan(run_id: str, entries):
    """A running run's scheduled actions still to come, replaced (engine set_plan; dashboard/steering.py)."""
    _sent(run_id, f"Schedule ({len(entries)} action(s))", lambda: engine.set_plan(run_id, entries))


def _sent(run_id: str, what: str, send):
    """Send a control; its outcome (the control's id, or the refusal) replaces the last one."""
    try:
        st.session_state[state.CONTROL] = {"run": run_id, "what": what, "id": send(), "time": time.time()}
    except (LivepropError, TypeError) as e:
        st.session_state[state.CONTROL] = {"run": run_id, "what": what, "error": str(e), "time": time.time()}


def run_again(run_id: str):
    """The same configuration as run_id, resolved as it ran (its seed included), as a new run."""
    run = engine.get_run(run_id)
    try:
        child = engine.launch(from_dict(run["config"]))
    except (LivepropError, TypeError) as e:
        st.session_state[state.ERROR] = f"Not launched: {e}"
        return
    _go_watch(child, f"Started run {child} with the configuration of {run_id}.")


def export_onnx(run_id: str):
    """The run's model to ONNX, run by onnxruntime on the run's own inputs: the difference is the verdict."""
    try:
        info = engine.to_onnx(run_id)
    except LivepropError as e:
        st.session_state[state.ERROR] = f"Not exported: {e}"
        return
    st.session_state[state.NOTICE] = (
        f"Exported to ONNX. onnxruntime on {info['batch']} of the run's inputs differs from PyTorch by at most "
        f"{info['max_abs_diff']:.3g} ({info['dtype']} rounding)."
    )


def resume_ended(run_id: str):
    """Continue an ended run from its checkpoint, in place, and watch it on the Train page."""
    try:
        step = engine.resume_run(run_id)
    except LivepropError as e:
        st.session_state[state.ERROR] = f"Not resumed: {e}"
        return
    _go_watch(run_id, f"Resumed run {run_id} from step {step}.")


def fork(run_id: str):
    """A new run from run_id's checkpoint at the chosen step with the chosen lr (and optimizer), watched
    on the Train page beside its parent's curve."""
    changes = {"lr": st.session_state.get(state.FORK_LR)}
    if st.session_state.get(state.FORK_OPTIMIZER):
        changes["optimizer"] = st.session_state[state.FORK_OPTIMIZER]
    try:
        child = engine.fork(run_id, int(st.session_state.get(state.FORK_STEP) or 0), changes)
    except (LivepropError, TypeError, ValueError) as e:
        st.session_state[state.ERROR] = f"Not forked: {e}"
        return
    _go_watch(child, f"Forked run {run_id}: the new run {child} goes on from its checkpoint.")


def _go_watch(run_id: str, notice: str):
    """Watch run_id on the Train page (the Runs page switches there at its next run), with a notice."""
    st.session_state[state.NOTICE] = notice
    watch(run_id)
    expect(run_id, "running")
    st.session_state[state.GOTO_TRAIN] = run_id


def ask_delete(run_id: str):
    st.session_state[state.CONFIRM_DELETE] = run_id


def cancel_delete():
    st.session_state[state.CONFIRM_DELETE] = None


def delete(run_id: str):
    """Stop the run if it is active (kill it if it does not answer), then remove it and its files."""
    st.session_state[state.CONFIRM_DELETE] = None
    if not engine.delete_run(run_id):
        return
    if st.session_state.get(state.RUN) == run_id:
        watch(None)
    st.session_state[state.NOTICE] = f"Deleted run {run_id}."
