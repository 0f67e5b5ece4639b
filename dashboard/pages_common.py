"""Small helpers shared by the pages: the session's store connection, plain text, one-shot messages,
and which run the Train page watches."""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict

import streamlit as st

import engine
from engine.store.db import Store, default_path

from . import state
from .feed import RunFeed


@st.cache_resource(scope="session", on_release=Store.close, show_spinner=False)
def _store(path: str) -> Store:
    return Store(path)


def store() -> Store:
    """This browser session's one store connection, for every refresh of every panel; closed when
    the session ends. Its refreshes run one at a time, so one connection serves them all."""
    return _store(default_path())


MAX_FEEDS = 6  # runs whose buffers a session keeps


def feed(run_id: str) -> RunFeed:
    """This session's buffers and cursors for a run (the newest MAX_FEEDS runs are kept)."""
    feeds = st.session_state.setdefault(state.FEEDS, OrderedDict())
    if run_id in feeds:
        feeds.move_to_end(run_id)
    else:
        feeds[run_id] = RunFeed(run_id)
        while len(feeds) > MAX_FEEDS:
            feeds.popitem(last=False)
    return feeds[run_id]


WORD_JOINER = "\u2060"  # invisible: splits what GFM would make a link, and reads the same


def plain(text: str) -> str:
    """Text shown as itself in Streamlit's markdown, so that a message quoting user input (an
    address, a file, an error) never becomes a link, an image, HTML, a heading or a Streamlit
    directive (:red[...], :material/...:).

    Escaping every markdown character is not enough: GFM (remark-gfm) links bare http://host,
    www.host and name@host in the text *after* parsing, escapes already undone, and Streamlit turns
    ":material/" into an icon before parsing. So a word joiner goes between http or www and what
    follows, and before each @; and '/' is escaped with the rest."""
    text = re.sub(r"(?i)(https?|www)(?=[:.])", r"\1" + WORD_JOINER, str(text)).replace("@", WORD_JOINER + "@")
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:@&=/])", r"\\\1", text)


def messages():
    """Show and forget the last action's error or notice (they may quote user input: plain text)."""
    if msg := st.session_state.pop(state.ERROR, None):
        st.error(plain(msg))
    if msg := st.session_state.pop(state.NOTICE, None):
        st.success(plain(msg))


def current_run() -> str | None:
    """The run this session watches: chosen here, else in the URL (?run=ID, so a reload keeps it),
    else the newest active run in the store. Only a well-formed run id is ever looked up or shown."""
    run_id = st.session_state.get(state.RUN)
    if not engine.is_run_id(run_id):
        run_id = _run_in_address()
    if run_id is None:
        active = [r for r in engine.list_runs(store()) if r["status"] in engine.ACTIVE]
        run_id = active[0]["id"] if active else None
    st.session_state[state.RUN] = run_id
    return run_id


def _run_in_address() -> str | None:
    """?run=ID when ID has a run id's shape. Anything else (a link, an image someone put in the
    address) is dropped from the URL and named in one line of plain text, never looked up."""
    text = state.run_in_address()
    if text is None or engine.is_run_id(text):
        return text
    state.show_run_in_address(None)
    shown = " ".join(text.split())  # one line, however many the address held
    shown = shown if len(shown) <= 80 else shown[:79] + "…"
    st.warning(plain(f"The address names no valid run (?run={shown}); a run id looks like 20261127-131500-3fa9c2."))
    return None


def run_rows(runs: list[dict], db: Store, now: float | None = None) -> list[dict]:
    """One table row per run: what the Runs page lists."""
    from dashboard.rules import MODE_LABELS

    now = time.time() if now is None else now
    rows = []
    for r in runs:
        c = r["config"]
        ckpt = r.get("checkpoint")
        started = r.get("started") or r["created"]
        rows.append(
            {
                "run": r["id"],
                "name": r.get("name") or "",
                "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
                "status": status_text(r, db.events(r["id"], kind="divergence"), db.events(r["id"], kind="resume")),
                "mode": MODE_LABELS.get(c["mode"], c["mode"]),
                "arch": c.get("arch", ""),
                "optimizer": c.get("optimizer") or "–",
                "lr now": engine.current_lr(r["id"], db),
                "steps": f"{r['step'] or 0:,} / " + (f"{r['total_steps']:,}" if r["total_steps"] else "until stopped"),
                "duration": duration_text((r.get("ended") or now) - started),
                "final loss": db.last_value(r["id"], "loss")[1],
                "checkpoint": size_text(os.path.getsize(ckpt)) if ckpt and os.path.isfile(ckpt) else "–",
                "device": r.get("device") or c.get("device"),
            }
        )
    return rows


def status_text(run: dict, divergences: list[dict], resumes: list[dict]) -> str:
    """The status, and whether the run diverged and was resumed ("running (diverged at step 12, recovered)")."""
    if not divergences:
        return run["status"]
    last = divergences[-1]
    went_on = any(r["id"] > last["id"] for r in resumes)
    return f"{run['status']} (diverged at step {last['data'].get('step')}{', recovered' if went_on else ''})"


def duration_text(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def size_text(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def applying(config: dict) -> dict:
    """A stored config without the fields that do not apply to its run (the engine's reasons); a config
    this version cannot read is shown whole."""
    try:
        return engine.applying(engine.from_dict(config))
    except engine.LivepropError:
        return config
