"""The Compare modes panel: manual, autograd and custom Function from one configuration and seed, their
loss curves, a verdict in plain words (explain.compare_verdict), the gap between any two of them, the
same comparison in the other dtype, and the gradient check. One fragment, refreshed while they train."""

from __future__ import annotations

import streamlit as st

from engine.modes.gradcheck import loss_gap

from . import actions, explain, figures, pages_common, refresh, rules, state

OTHER_DTYPE = {"float32": "float64", "float64": "float32"}


def panel(run_ids: list[str]):
    refresh.fragment(_compare, list(run_ids), refresh.FAST, list(run_ids))


def _compare(runs, run_ids):
    db = pages_common.store()
    losses, checks, dtype = {}, {}, "float32"
    for run in runs:
        if run is None:
            continue
        f = pages_common.feed(run["id"])
        label = rules.MODE_LABELS.get(run["config"]["mode"], run["config"]["mode"])
        losses[label] = f.sync(db, "loss")
        dtype = run["config"].get("dtype", dtype)
        f.sync_keys(db)
        for layer, b in f.sync_prefix(db, "gradcheck/").items():
            checks[f"{label}: {layer}"] = b
    status = {rules.MODE_LABELS.get(r["config"]["mode"]): r["status"] for r in runs if r}
    c1, c2 = st.columns([4, 1])
    c1.subheader(f"Compare modes: same configuration, same seed, {dtype}")
    other = OTHER_DTYPE.get(dtype)
    if other:
        c2.button(
            f"The same in {other}",
            key="cmp_other_dtype",
            on_click=actions.compare_again,
            args=(run_ids, other),
            help=f"Runs these three again in {other}: the rounding gaps shrink by about 2**29 in float64.",
            width="stretch",
        )
    smoothing = st.slider("EMA smoothing ", 0.0, 0.999, 0.0, step=0.001, key="cmp_ema", format="%.3f")
    named = {f"{k} ({status.get(k, '?')})": v for k, v in losses.items()}
    st.plotly_chart(
        figures.overlay_figure(named, smoothing, True, "Loss: manual, autograd, custom Function"), key="cmp_loss"
    )
    st.info(pages_common.plain(explain.compare_verdict(losses, dtype)))
    st.caption(pages_common.plain(f"{loss_gap(losses)} Relative: |loss_a − loss_b| / |loss_b|, at the same step."))
    _pair(losses, dtype)
    st.plotly_chart(
        figures.gradcheck_figure(checks, dtype, "‖g − g_autograd‖ / ‖g_autograd‖, manual and MyReLU vs autograd"),
        key="cmp_check",
    )


def _pair(losses: dict, dtype: str):
    """Any two of the modes: where and by how much one's loss departs from the other's."""
    names = list(losses)
    if len(names) < 2:
        return
    chosen = st.session_state.get(state.COMPARE_PAIR)
    if not chosen or len(chosen) != 2 or not set(chosen) <= set(names):
        st.session_state[state.COMPARE_PAIR] = names[:2]
    pair = st.multiselect(
        "Diff two modes",
        names,
        key=state.COMPARE_PAIR,
        max_selections=2,
        help="the first is the reference: the gap is |loss_b − loss_a| / |loss_a| at each step both have",
    )
    if len(pair) != 2:
        st.caption("Pick two modes to see how far apart their losses are.")
        return
    a, b = pair
    gap = explain.pair_gap(a, losses[a], b, losses[b])
    _, text = explain.departure(gap, dtype)
    st.caption(pages_common.plain(f"{b} {text}."))
    st.plotly_chart(figures.gap_figure(gap, dtype), key="cmp_pair_gap", config={"displaylogo": False})
