"""Computation graph: the autograd graph of one step of the sidebar's configuration."""

import dataclasses

import streamlit as st

from dashboard import pages_common, sidebar, state
from engine import ConfigError
from engine.tools.graph import graph_for_config

COLLAPSE = {
    "auto": "Collapse large models by module",
    "always": "Always collapse by module",
    "never": "Every autograd node",
}


@st.cache_data(max_entries=16, show_spinner="Building the model and running one forward pass…")
def _graph(cfg_dict: dict, collapse: str, depth: int, nonce: int):
    from engine import RunConfig

    try:
        return graph_for_config(RunConfig(**cfg_dict), collapse, depth), None
    except ConfigError as e:
        return None, str(e)


st.title("Computation graph")
st.caption(
    "PyTorch records the graph while the forward pass runs and walks it backwards from the loss's "
    "grad_fn in loss.backward(). It is rebuilt at every iteration: the lecture's dynamic graph."
)
c1, c2, c3 = st.columns([2, 1, 1])
collapse = c1.radio("Show", list(COLLAPSE), format_func=COLLAPSE.get, horizontal=True, key="graph_collapse")
depth = c2.number_input(
    "Module depth", min_value=1, max_value=4, step=1, key="graph_depth", disabled=collapse == "never"
)
if c3.button("Rebuild (next step)", key="graph_rebuild"):
    st.session_state[state.GRAPH_NONCE] = st.session_state.get(state.GRAPH_NONCE, 0) + 1

try:
    cfg = sidebar.config()
    info, error = _graph(dataclasses.asdict(cfg), collapse, int(depth), st.session_state.get(state.GRAPH_NONCE, 0))
except ConfigError as e:
    info, error = None, str(e)
if error:
    st.error(pages_common.plain(f"Cannot build this configuration: {error}"))
    st.stop()
st.caption(
    f"{info.nodes} autograd nodes, {info.shown} drawn"
    + (f" (collapsed to module depth {info.depth})" if info.depth else "")
    + f"; built in {info.seconds * 1000:.0f} ms on the CPU with a batch of 2. {info.note}"
)
st.graphviz_chart(info.dot, width="stretch")
with st.expander("DOT source"):
    st.code(info.dot, language="dot")
