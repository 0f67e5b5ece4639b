"""The sidebar's suggestion for a playground set: settings measured to learn it in 1,500 steps at the default 500
points (the About page's "what to try" says how each was measured), and a button that puts them in the sidebar."""

from __future__ import annotations

import streamlit as st

from engine.config.fields import PLAYGROUND_1D

from . import rules, state
from .state import CFG as K

COMMON = {"mode": "optim", "optimizer": "adam", "lr": 0.01, "arch": "mlp", "steps": 1500}
SUGGESTED = {  # dataset: (settings besides COMMON, what they reach)
    "moons": ({"hidden": 100, "depth": 2}, "100% test accuracy"),
    "circles": ({"hidden": 8, "depth": 2}, "99% test accuracy"),
    "gaussians": ({"depth": 1}, "100% test accuracy, with no hidden layer"),
    "xor": ({"hidden": 16, "depth": 2}, "99% test accuracy"),
    "spiral": ({"hidden": 100, "depth": 2, "noise": 0.0}, "100% test accuracy (about 87% at noise 0.1)"),
    **{curve: ({"hidden": 100, "depth": 2}, "a test loss down to the noise's") for curve in PLAYGROUND_1D},
}


def settings(dataset: str) -> dict:
    """The suggested settings for a playground set, by RunConfig field."""
    return COMMON | SUGGESTED[dataset][0]


def offer(where, dataset: str):
    """Under the dataset's choice: what learns it, and a button that sets it; nothing for other datasets."""
    if dataset not in SUGGESTED:
        return
    shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings(dataset).items())
    where.caption(f"Suggested for {dataset}: {shown}; it reaches {SUGGESTED[dataset][1]}.")
    where.button("Use these settings", key="btn_suggest", on_click=_use, args=(dataset,))


def _use(dataset: str):
    for name, value in settings(dataset).items():
        st.session_state[K + name] = value
    st.session_state[state.LENGTH] = "steps"
    st.session_state[state.LR_LOG] = rules.nearest_lr_step(COMMON["lr"])
