"""Live panels: the watched run's status, controls and loss, and the Runs page's overlay, each an
st.fragment that refreshes on its own while its run is active (refresh.py says when).

Each refresh reads only what is new since the last (RunFeed cursors, dashboard/feed.py), into
buffers bounded per series; RunFeeds live in st.session_state (pages_common.feed), a few runs per
session. The detail panel's views are in details.py.
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlsplit

import streamlit as st

import engine
from engine import sinks
from engine.store.db import ACTIVE

from . import (
    actions,
    details,
    edit_layer,
    explain,
    figures,
    fork,
    learned,
    pages_common,
    refresh,
    rules,
    state,
    steering,
)
from .feed import RunFeed
from .series import CAP, Buckets

ACK_SHOWN_S = 8.0  # s a control's acknowledgement stays on screen
MAX_BRANCHES = 4  # forks drawn on a run's loss chart (with the run and a parent: within MAX_FEEDS)


# ---------------------------------------------------------------------------------------------
# the panels


def run_panel(run_id: str):
    """Status, progress, controls and the loss curve: one fragment, refreshed every refresh.FAST s."""
    refresh.fragment(_run_and_loss, [run_id], refresh.FAST, run_id, warm=True)


def _run_and_loss(runs, run_id):
    _status(runs, run_id)
    return _loss(runs, run_id)


def detail_panel(run_id: str):
    refresh.fragment(details.panel, [run_id], refresh.SLOW, run_id)


def _status(runs, run_id):
    run = runs[0]
    if run is None:
        st.warning(pages_common.plain(f"Run {run_id} is not in the store (deleted?)."))
        return
    db = pages_common.store()
    f = pages_common.feed(run_id)
    f.sync_events(db)
    # read again after the events: the status is written after the event that changes it (a divergence's
    # pause), so the status line and the banner never tell two moments apart
    run = engine.get_run(run_id, db) or run
    _, rate = db.last_value(run_id, "steps_per_s")
    cfg, total, done = run["config"], run["total_steps"] or 0, run["step"] or 0
    changes = f.events_of("lr_change")
    lr = changes[-1]["data"].get("new", cfg["lr"]) if changes else cfg["lr"]
    plain = pages_common.plain  # the name and the stored config are anyone's text: shown as text
    st.markdown(
        f"**Run `{run_id}`**{' ' + plain(repr(run['name'])) if run.get('name') else ''}"
        f" · {plain(rules.MODE_LABELS.get(cfg['mode'], cfg['mode']))} · {plain(cfg['arch'])}"
        f"{' · ' + plain(cfg['optimizer']) if cfg.get('optimizer') else ''} · lr {lr:.3g}"
        f" · {plain(run.get('device') or cfg['device'])} · status **{plain(run['status'])}**"
    )
    of = f" / {total:,}" if total else " (until stopped)"
    if run["status"] in ("queued", "running"):
        rate_txt = f"{rate:,.0f} steps/s" if rate else "– steps/s"
        eta = f" · ETA {rules.eta_text(done, total, rate)}" if total else ""
        text = f"step {done:,}{of} · {rate_txt}{eta}"
    else:
        text = f"{run['status']} at step {done:,}{of}"
    st.progress(min(1.0, done / total) if total else 0.0, text=text)
    _sinks(f)
    _banners(run, f, lr)
    steering.banner(run, f)
    _controls(run, lr)
    _feedback(run, db)


def _sinks(f: RunFeed):
    """The latest status of the run's Visdom and TensorBoard sinks, one line, and a link to the
    run's own Visdom env (the server's page opens its empty "main" env otherwise)."""
    latest = {e["kind"]: e["data"] for e in f.events if e["kind"] in ("visdom", "tensorboard")}
    if not latest:
        return
    c1, c2 = st.columns([5, 1])
    c1.caption(pages_common.plain(" · ".join(sinks.describe(kind, info) for kind, info in latest.items())))
    v = latest.get("visdom")
    if v and urlsplit(str(v.get("url"))).scheme in ("http", "https") and v.get("env"):  # never a javascript: link
        c2.link_button("Open in Visdom", f"{v['url']}/env/{quote(v['env'], safe='')}", width="stretch")


def _banners(run, f: RunFeed, lr: float):
    """The last divergence: its first non-finite step, the layer, how many steps ran after it before it
    was noticed, the weights put back and what to do next (explain.divergence_banner); "recovered" once
    the run was resumed after it and its loss is finite."""
    div = f.events_of("divergence")
    if div:
        d = div[-1]["data"]
        resumed = next((e for e in f.events_of("resume") if e["id"] > div[-1]["id"]), None)
        step, loss = pages_common.store().last_value(run["id"], "loss") if resumed else (None, None)
        what, todo = explain.divergence_banner(
            d,
            run["status"],
            run["step"] or 0,
            lr,
            run["config"].get("on_divergence", "pause"),
            resumed["step"] if resumed else None,
        )
        if loss is not None and step >= (resumed["step"] or 0):  # a non-finite loss is stored as None
            st.success(
                pages_common.plain(
                    f"Recovered: the run {explain.what_diverged(d)}. It was resumed at step "
                    f"{resumed['step']} from the last finite weights, and its loss is finite again (step {step})."
                )
            )
        else:
            st.error(pages_common.plain(what))
            st.info(pages_common.plain(todo))
            fork.retry_button(run, d, lr)
    if run["status"] == "failed":
        st.error(pages_common.plain(f"Run failed: {run.get('error') or 'no reason recorded'}"))
    elif run["status"] == "paused" and run.get("pause_reason") == "disk_full":  # engine/sinks/store.py
        st.warning(pages_common.plain(f"Paused: {run['error']}. It resumes by itself once there is space again."))


def _controls(run, lr: float):
    rid, status = run["id"], run["status"]
    c = st.columns([1, 1, 1, 2, 1])
    c[0].button(
        "Pause",
        key="btn_pause",
        on_click=actions.control,
        args=(rid, "pause"),
        disabled=status != "running",
        width="stretch",
    )
    ended = status not in ACTIVE and bool(run.get("checkpoint"))  # goes on from its checkpoint
    c[1].button(
        "Resume",
        key="btn_resume",
        on_click=actions.resume_ended if ended else actions.control,
        args=(rid,) if ended else (rid, "resume"),
        disabled=status != "paused" and not ended,
        help="continue this run from its checkpoint, in place" if ended else None,
        width="stretch",
    )
    c[2].button(
        "Stop",
        key="btn_stop",
        on_click=actions.control,
        args=(rid, "stop"),
        disabled=status not in ACTIVE,
        width="stretch",
    )
    key = state.live_lr(rid)
    shown = st.session_state.setdefault(state.LR_SHOWN, {})
    # the run's rate changed (here, from the CLI, by another tab), or Streamlit forgot the box (it forgets a
    # widget that a page left undrawn: an empty box would read 0): show the rate
    if shown.get(rid) != lr or key not in st.session_state:
        st.session_state[key] = shown[rid] = float(lr)
    c[3].number_input(
        "New learning rate",
        key=key,
        format="%.3e",
        step=None,
        label_visibility="collapsed",
        disabled=status not in ("running", "paused"),
        help="The run's current learning rate; type a new one and press Set lr.",
    )
    c[4].button(
        "Set lr",
        key="btn_lr",
        on_click=actions.set_lr,
        args=(rid,),
        disabled=status not in ("running", "paused"),
        width="stretch",
    )


def _feedback(run, db):
    """The last control sent from this session for this run: sent, then acknowledged or refused
    by the worker (shown at the next refresh after the acknowledgement), or refused before it was
    sent. It goes away when another control is sent, or ACK_SHOWN_S after the acknowledgement."""
    sent = st.session_state.get(state.CONTROL)
    if not sent or sent["run"] != run["id"]:
        return
    if "error" in sent:
        st.error(pages_common.plain(f"{sent['what']}: not sent: {sent['error']}"))
        return
    c = db.control(sent["id"])
    if c is None or not c["acked"]:
        st.info(pages_common.plain(f"{sent['what']}: sent, waiting for the worker…"))
    elif time.time() - c["acked"] > ACK_SHOWN_S:
        st.session_state.pop(state.CONTROL, None)
    elif c["result"] == "ok":
        st.success(pages_common.plain(f"{sent['what']}: done"))
    else:
        st.warning(pages_common.plain(f"{sent['what']}: {c['result']}"))


def _loss(runs, run_id):
    run = runs[0]
    if run is None:
        return
    c1, c2, c3 = st.columns([3, 1, 1])
    smoothing = c1.slider("EMA smoothing", 0.0, 0.999, 0.6, step=0.001, key="ema", format="%.3f")
    log_y = c2.toggle("log y", value=True, key="log_y")
    zoom = c3.toggle("Zoom", key="zoom", help="Show a step range; up to 2,000 steps, every step is shown")
    db = pages_common.store()
    f = pages_common.feed(run_id)
    loss = f.sync(db, "loss")
    f.sync_events(db)
    if zoom:
        z1, z2 = st.columns(2)
        lo = z1.number_input("from step", min_value=0, value=max(0, loss.last_step - 1000), step=100, key="zoom_lo")
        hi = z2.number_input("to step", min_value=0, value=max(0, loss.last_step), step=100, key="zoom_hi")
        loss = Buckets.from_rows(db.bucketed(run_id, "loss", CAP, int(lo), int(hi)))
    if not len(loss):  # no empty chart: the browser would redraw it at every refresh
        st.caption("Waiting for the first loss values…")
        return {"points": 0}
    div = f.events_of("divergence")
    fig = figures.loss_figure(
        loss,
        smoothing,
        log_y,
        lr_events=f.events_of("lr_change") + fork.parent_lr_changes(db, f.events_of("forked")),
        divergence=div[-1]["data"] if div else None,
        branches=_branches(db, run_id, f) | learned.test_loss(db, f),
        marks=steering.marks(f),
    )
    edit_layer.edit_marks(fig, loss, f.events_of("layer_edit"))
    st.plotly_chart(  # a point clicked opens the fork dialog at its step
        fork.clickable(fig), key=fork.CHART, config={"displaylogo": False},
        on_select=lambda: fork.chart_clicked(run_id), selection_mode="points",
    )  # fmt: skip
    fork.open_if_asked(run_id)
    return {"points": max((len(t.x) for t in fig.data), default=0)}


def _branches(db, run_id: str, f: RunFeed) -> dict:
    """The what-if lines drawn beside a run's loss (engine.fork): the run's forks, "fork at step k: adam
    lr 1e-3", and, when the run is itself a fork, its parent's whole curve, "parent: sgd lr 1e-2"."""
    related = [(child, f"fork at step {step}") for child, step in engine.forks_of(run_id, db)[:MAX_BRANCHES]]
    related += [(e["data"]["parent"], "parent") for e in f.events_of("forked")[-1:]]
    out = {}
    for other, label in related:
        c = (db.get_run(other) or {}).get("config")
        if c:  # a deleted one is left out
            name = f"{label}: {c.get('optimizer') or c['mode']} lr {c['lr']:.3g}"
            out[name] = pages_common.feed(other).sync(db, "loss")
    return out


def overlay_panel(run_ids: list[str]):
    refresh.fragment(_overlay, list(run_ids), refresh.FAST, list(run_ids))


def _overlay(runs, run_ids):
    c1, c2 = st.columns([3, 1])
    smoothing = c1.slider("EMA smoothing", 0.0, 0.999, 0.6, step=0.001, key="ovl_ema", format="%.3f")
    log_y = c2.toggle("log y", value=True, key="ovl_log")
    db = pages_common.store()
    named = {}
    for run in runs:
        if run is not None:
            label = f"{run['id']} {rules.MODE_LABELS.get(run['config']['mode'], run['config']['mode'])}"
            named[label] = pages_common.feed(run["id"]).sync(db, "loss")
    st.plotly_chart(figures.overlay_figure(named, smoothing, log_y, "Loss of the selected runs"), key="ovl_loss")
