"""Small helpers shared by the pages: the session's store connection, plain text, one-shot messages,
and which run the Train page watches."""

from __future__ import annotations

import re

import streamlit as st

import engine
from engine.store import Store, default_path


@st.cache_resource(scope="session", on_release=Store.close, show_spinner=False)
def _store(path: str) -> Store:
    return Store(path)


def store() -> Store:
    """This browser session's one store connection, for every refresh of every panel; closed when
    the session ends. Its refreshes run one at a time, so one connection serves them all."""
    return _store(default_path())


def plain(text: str) -> str:
    """Text shown as itself in Streamlit's markdown: every markdown and HTML character escaped, so
    a message that quotes user input (an address, a file) can never become a link or an image."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:@])", r"\\\1", str(text))


def messages():
    """Show and forget the last action's error or notice (they may quote user input: plain text)."""
    if msg := st.session_state.pop("lp_error", None):
        st.error(plain(msg))
    if msg := st.session_state.pop("lp_notice", None):
        st.success(plain(msg))


def current_run() -> str | None:
    """The run this session watches: chosen here, else in the URL (?run=ID, so a reload keeps it),
    else the newest active run in the store."""
    run_id = st.session_state.get("lp_run") or st.query_params.get("run")
    if run_id is None:
        active = [r for r in engine.list_runs(store()) if r["status"] in engine.ACTIVE]
        run_id = active[0]["id"] if active else None
    st.session_state.lp_run = run_id
    return run_id


def run_rows(runs: list[dict], final_loss: dict) -> list[dict]:
    """One table row per run: what the Runs page lists."""
    from dashboard.rules import MODE_LABELS

    rows = []
    for r in runs:
        c = r["config"]
        rows.append(
            {
                "run": r["id"],
                "name": r.get("name") or "",
                "status": r["status"],
                "mode": MODE_LABELS.get(c["mode"], c["mode"]),
                "arch": c["arch"],
                "optimizer": c.get("optimizer") or "–",
                "lr": c["lr"],
                "steps": f"{r['step'] or 0:,} / {r['total_steps'] or 0:,}",
                "final loss": final_loss.get(r["id"]),
                "device": r.get("device") or c.get("device"),
            }
        )
    return rows
