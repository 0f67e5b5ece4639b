"""Liveprop's dashboard: the one entry file (streamlit run dashboard/app.py, or python -m dashboard).

It sets up the page, keeps the sidebar's configuration across pages, and routes with st.navigation.
The pages are thin files in dashboard/views/ (not pages/: Streamlit treats a pages/ folder beside
the entry file as an old-style multipage app, and AppTest then runs the page without this file).
What they draw comes from live.py (fragments), figures.py (pure figure builders) and actions.py
(button callbacks through the engine's API). With a password set (an exposed dashboard,
dashboard/gate.py), a session sees only the password form until it has entered it.
"""

import math
from pathlib import Path

import streamlit as st

from dashboard import fonts, gate, sidebar, state

# The icon is a local file: a material icon as page_icon makes the browser fetch it from a font server.
st.set_page_config(page_title="Liveprop", page_icon=str(Path(__file__).parent / "icon.png"), layout="wide")


@st.cache_resource
def _wrong_tries() -> gate.Backoff:
    """The server's one back-off: every session shares it (a reload is a new session)."""
    return gate.Backoff()


def _ask_for_the_password():
    """An exposed dashboard's first page: a password form, and the script stops here, before the
    sidebar, the page or any store read. Once entered, the session stays unlocked; a reload starts
    a new session and asks again (nothing that unlocks the dashboard is kept in the browser)."""
    column = st.columns([2, 3])[0]  # a narrow form: the page is wide
    column.title("Liveprop")
    column.caption("Enter the password this dashboard was started with.")
    with column.form("password", clear_on_submit=True):
        attempt = st.text_input("Password", type="password", autocomplete="current-password")
        entered = st.form_submit_button("Open the dashboard", type="primary")
    if entered:
        answer = _wrong_tries().attempt(st.context.ip_address, attempt)
        if answer.unlocked:
            st.session_state[state.UNLOCKED] = True
            st.rerun()
        why = "Wrong password." if answer.checked else "Too many wrong tries."
        column.error(f"{why} The next try can be made in {math.ceil(answer.wait_s)} s.")
    st.stop()


@st.cache_resource
def _warm_plotly():
    """Plotly builds its trace validators on first use (about 80 ms for a Heatmap): pay that once
    per server process at the first page load, not in the first live-panel refresh."""
    import plotly.graph_objects as go

    for trace in (go.Scatter, go.Heatmap, go.Bar):
        go.Figure(trace())


_warm_plotly()
HERE = Path(__file__).parent
PAGES = {
    "train": st.Page(HERE / "views" / "train.py", title="Train", icon=":material/model_training:", default=True),
    "runs": st.Page(HERE / "views" / "runs.py", title="Runs", icon=":material/table_rows:"),
    "graph": st.Page(
        HERE / "views" / "graph.py", title="Computation graph", icon=":material/account_tree:", url_path="graph"
    ),
    "about": st.Page(HERE / "views" / "about.py", title="About", icon=":material/menu_book:"),
}
locked = gate.required() and not st.session_state.get(state.UNLOCKED)
# Routing comes first even while locked, with no menu: it keeps the address asked for (/runs) for
# the run after the password.
page = st.navigation(list(PAGES.values()), position="hidden" if locked else "sidebar")
if locked:
    _ask_for_the_password()
# The configuration is drawn on every page, from this file: widgets of the entry file are the same
# widgets on every page, so Streamlit keeps their values (a page that did not draw them would reset
# them; the browser would mount them anew with their defaults).
if css := fonts.style():  # the lecture's Chinese comments in the code views
    st.html(css)
sidebar.render()
page.run()
