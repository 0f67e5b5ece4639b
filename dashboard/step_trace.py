"""The Code tab's Step, for a raw-mode run (manual, autograd, custom Function): one step of the paused run
(engine.step), and the lecture's tensors of the last such step (its "step_trace" event, engine/modes/trace.py) beside
the lines of the lecture's cell that compute them, with a table of their shapes, first values and norms, autograd's
beside each gradient. annotate and rows are pure functions of the cell and the event's data."""

from __future__ import annotations

import math
import re
import time

import streamlit as st

import engine
from engine import LivepropError
from engine.config.fields import RAW_MODES

from . import actions, state
from .lecture_cells import CELLS

ASSIGNS = re.compile(r"^\s*(\w+)\s*=[^=]")  # "h = x.mm(w1)": the name a line computes
GRADS_OF_BACKWARD = ("grad_w1", "grad_w2")  # what an autograd cell's loss.backward() computes, as w1.grad, w2.grad


def _values(s: dict) -> str:
    more = " …" if len(s["first"]) < math.prod(s["shape"]) else ""
    return "[" + ", ".join(f"{v:.3g}" for v in s["first"]) + more + "]"


def _note(name: str, s: dict) -> str:
    """'(64, 100) ‖·‖ 1.2e+03 [0.5, -1.2, …]', and autograd's norm and the difference for a gradient."""
    shape = "(" + ", ".join(map(str, s["shape"])) + ")" if s["shape"] else "scalar"
    text = f"{shape} ‖·‖ {s['norm']:.4g} {_values(s)}"
    if "share" in s:
        text += f", {100 * s['share']:.0f}% True"
    if "autograd" in s:
        text += f" | autograd ‖·‖ {s['autograd']['norm']:.4g}, ‖diff‖/‖autograd‖ {s['rel_diff']:.1e}"
    return text


def annotate(cell: str, trace: dict) -> str:
    """The lecture's cell with each traced tensor's note as a comment after the line that computes it: h = ...,
    the grad_h[h<0] = 0 line for the mask and the masked grad_h, and an autograd cell's loss.backward() for w1.grad
    and w2.grad."""
    out = []
    masked = "grad_h[h<0]" in cell.replace(" ", "")  # grad_h = grad_h_relu.clone(), then masked: shown after both
    for line in cell.splitlines():
        m = ASSIGNS.match(line)
        name = m.group(1) if m else None
        if name in trace and not (name == "grad_h" and masked):
            line += f"  # ← {name}: {_note(name, trace[name])}"
        elif masked and line.strip().replace(" ", "").startswith("grad_h[h<0]") and "h < 0" in trace:
            indent = line[: len(line) - len(line.lstrip())]
            line += f"  # ← h < 0: {_note('h < 0', trace['h < 0'])}"
            line += f"\n{indent}# ← grad_h: {_note('grad_h', trace['grad_h'])}"
        elif line.strip().startswith("loss.backward()"):
            for g in GRADS_OF_BACKWARD:
                if g in trace:
                    line += f"\n{line[: len(line) - len(line.lstrip())]}# ← {g[5:]}.grad: {_note(g, trace[g])}"
        out.append(line)
    return "\n".join(out)


def rows(trace: dict) -> list[dict]:
    """One row a tensor, in the lecture's order."""
    return [
        {
            "tensor": name,
            "shape": "×".join(map(str, s["shape"])) or "scalar",
            "first values": _values(s),
            "norm": f"{s['norm']:.6g}",
            "autograd's norm": f"{s['autograd']['norm']:.6g}" if "autograd" in s else "",
            "‖diff‖ / ‖autograd‖": f"{s['rel_diff']:.1e}" if "autograd" in s else "",
        }
        for name, s in trace.items()
    ]


def _step(run_id: str):
    sent = {"run": run_id, "what": "Step", "time": time.time()}
    try:
        sent["id"] = engine.step(run_id)
    except LivepropError as e:
        sent["error"] = str(e)
    st.session_state[state.CONTROL] = sent  # shown by the status panel, as the other controls' are
    actions.expect(run_id, "step")  # the panels refresh until the worker has taken it


def view(run: dict, f):
    """The Step button and the last traced step, for a raw-mode run; nothing for the others."""
    mode = run["config"]["mode"]
    if mode not in RAW_MODES:
        return
    c1, c2 = st.columns([1, 6])
    c1.button(
        "Step",
        key="btn_step",
        on_click=_step,
        args=(run["id"],),
        disabled=run["status"] != "paused",
        help="One training step of the paused run; its tensors show beside the lecture's lines below.",
        width="stretch",
    )
    traced = f.events_of("step_trace")
    if not traced:
        c2.caption("Pause the run, then Step: each tensor of the lecture's code shows beside its line, live.")
        return
    last = traced[-1]
    c2.caption(
        f"Step {last['step']:,}: each tensor of the lecture's step on the run's weights and batch (shape, norm, first "
        "values); beside each gradient, autograd's own and how far apart they are."
    )
    st.code(annotate(CELLS[mode][1], last["data"]), language="python", wrap_lines=True)
    st.dataframe(rows(last["data"]), hide_index=True, width="stretch")
