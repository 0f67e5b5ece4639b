"""What a browser session keeps: every key the dashboard reads or writes in st.session_state, and the
address (?run=, ?cfg=), named here and nowhere else.

A widget's key that only identifies it on the page (its value comes back from the call that draws
it) stays beside the widget; a key that code reads or writes through st.session_state is named
here. The sidebar's widgets hold the next run's configuration under CFG + the RunConfig field name.

The sidebar's values survive page switches and reloads: Streamlit forgets the state of a widget that
a page does not draw (st.switch_page does), so they are saved apart from the widgets' own keys and
put back (init); a reload starts a new session, so the values that differ from the defaults also go
into the URL (?cfg=JSON), read back once at a session's start. Paths and free text stay out of the
URL, and values from it that do not validate are ignored with a note.
"""

from __future__ import annotations

import dataclasses
import json
import os
from urllib.parse import urlparse

import streamlit as st

from engine.config.fields import PATHS, RunConfig, default_lr
from engine.config.load import from_dict
from engine.config.reasons import validate
from engine.errors import ConfigError

from .rules import nearest_lr_step

# -- the sidebar (the next run's configuration) ------------------------------------------------
CFG = "cfg_"  # + a RunConfig field name
LENGTH = CFG + "length"  # steps, epochs or until stopped: three RunConfig fields in one radio
LENGTHS = ("steps", "epochs", "until stopped")
LR_LOG = "lr_log"  # the log-scale slider beside the exact cfg_lr
VISDOM_ON, VISDOM_HOST, VISDOM_PORT, VISDOM_ENV = "visdom_on", "visdom_host", "visdom_port", "visdom_env"
CSV_UPLOAD = "csv_upload"
STEER_TABLE = "steer_table_"  # + at or rule: the next run's table of its entries (dashboard/steering.py)
SIDEBAR_READY = "lp_sidebar_ready"
SIDEBAR_SAVED = "lp_sidebar_saved"  # the widgets' values, kept apart from their own keys (init)
NOT_IN_URL = (*PATHS, "name")  # the path fields and free text: never in an address

# -- the watched run, the actions and their outcome ---------------------------------------------
RUN = "lp_run"  # the run the Train page watches
COMPARE = "lp_compare"  # the run ids of the last Compare modes
COMPARE_PAIR = "cmp_pair"  # the two modes the Compare panel diffs
ERROR, NOTICE = "lp_error", "lp_notice"  # one-shot messages of the last action
CONTROL = "lp_control"  # the last control sent (pause, resume, stop, set lr) and its outcome
EXPECT = "lp_expect"  # run id -> (status awaited, deadline): keeps the live panels refreshing
GOTO_TRAIN = "lp_goto_train"  # the Runs page switches to the Train page at its next run
CONFIRM_DELETE = "lp_confirm_delete"
UNLOCKED = "lp_unlocked"  # the password was entered (an exposed dashboard)
FEEDS = "lp_feeds"  # run id -> RunFeed (pages_common.feed)
LR_SHOWN = "lp_lr_shown"  # run id -> the rate its live lr box was last set to
SCHEDULE_EDIT = "schedule_edit_"  # + run id: the Train page's table of its schedule; + "_entries": its rows;
# + "_seed": the actions to come its rows started from
FORK_STEP, FORK_LR, FORK_OPTIMIZER = "fork_step", "fork_lr", "fork_optimizer"
FORK_ASKED = "lp_fork_asked"  # (run id, step) of a point clicked on the loss chart: the fork dialog opens there
GRAPH_NONCE = "graph_nonce"  # bumped by Rebuild: a new cache key for the graph
PAUSED_TOOL = "lp_paused_tool"  # (run id, tool, refusal): why the Landscape, Edit layer or Step button was refused
EDIT_LAYER, EDIT_ACTION, EDIT_FACTOR = "edit_layer", "edit_action", "edit_factor"  # a paused run's Edit a layer
LANDSCAPE_GRID = "landscape_grid"  # points a side of the landscape's plane

# -- the address ---------------------------------------------------------------------------------
RUN_PARAM = "run"  # ?run=ID: the watched run, so a reload keeps it
CFG_PARAM = "cfg"  # ?cfg=JSON: the sidebar's values that differ from the defaults


def live_lr(run_id: str) -> str:
    """The live panel's lr box for one run: never a previous run's rate."""
    return f"live_lr_{run_id}"


def hist_at(kind: str) -> str:
    """The "Histogram at step" slider of the weights or the gradients."""
    return f"at_{kind}"


def sidebar_keys() -> list[str]:
    """Every widget key of the sidebar."""
    return [CFG + f.name for f in dataclasses.fields(RunConfig)] + [LENGTH, LR_LOG, VISDOM_ON, VISDOM_HOST,
                                                                    VISDOM_PORT, VISDOM_ENV]  # fmt: skip


def sidebar_values() -> dict:
    """The sidebar's values by RunConfig field name (plus "length": steps or epochs)."""
    init_sidebar()
    return {k[len(CFG) :]: st.session_state[k] for k in sidebar_keys() if k.startswith(CFG) and k in st.session_state}


def visdom_target() -> dict:
    init_sidebar()
    s = st.session_state
    return {"on": s[VISDOM_ON], "host": s[VISDOM_HOST], "port": s[VISDOM_PORT], "env": s[VISDOM_ENV]}


def _defaults() -> dict:
    d = RunConfig()
    out = {CFG + f: v for f, v in vars(d).items()}
    out[CFG + "lr"] = d.lr or default_lr(d.mode)  # show the lecture's rate
    out[CFG + "optimizer"] = d.optimizer or "adam"
    out[LENGTH] = "steps"
    started = os.environ.get("LIVEPROP_VISDOM_URL")  # set by python -m dashboard
    url = urlparse(started or "http://127.0.0.1:8097")
    out.update({VISDOM_ON: bool(started), VISDOM_HOST: url.hostname or "127.0.0.1", VISDOM_PORT: url.port or 8097})
    out[VISDOM_ENV] = ""
    out[LR_LOG] = nearest_lr_step(out[CFG + "lr"])
    return out


def init_sidebar():
    """Once per session: the defaults, then what the URL carries (a reload keeps the settings). After that,
    the values the last run ended with, for any widget whose state Streamlit dropped: st.switch_page does
    (the Runs page's Watch, Resume and Fork), and the widgets would come back at their minimum."""
    if st.session_state.get(SIDEBAR_READY):
        for k, v in st.session_state.get(SIDEBAR_SAVED, {}).items():
            if k not in st.session_state:
                st.session_state[k] = v
        return
    given = _from_url(st.query_params.get(CFG_PARAM))
    values = {**_defaults(), **given}
    if CFG + "lr" not in given:  # the lecture's rate for the mode the address may have named
        values[CFG + "lr"] = default_lr(values[CFG + "mode"])
    values[LR_LOG] = nearest_lr_step(values[CFG + "lr"])
    for k, v in values.items():
        st.session_state.setdefault(k, v)
    st.session_state[SIDEBAR_READY] = True


def save_sidebar():
    """Keep the widgets' values apart from their keys, and the changed ones in the URL."""
    st.session_state[SIDEBAR_SAVED] = {k: st.session_state[k] for k in sidebar_keys() if k in st.session_state}
    _to_url()


def _from_url(text: str | None) -> dict:
    """Sidebar values from ?cfg=JSON, only those that give a valid RunConfig together; {} if none."""
    if not text:
        return {}
    names = {f.name for f in dataclasses.fields(RunConfig)}
    try:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("not an object")
        fields = {k: v for k, v in d.items() if k not in NOT_IN_URL and k != "length" and k in names}
        validate(from_dict({**fields, "name": ""}))
    except (ValueError, ConfigError, TypeError, RecursionError) as e:
        st.session_state[ERROR] = f"The settings in the address were not used: {e}"
        return {}
    out = {CFG + k: v for k, v in fields.items()}
    if d.get("length") in LENGTHS:
        out[LENGTH] = d["length"]
    return out


def _to_url():
    """The values that differ from the defaults, as ?cfg=JSON (paths and names stay out)."""
    defaults = _defaults()
    changed = {
        k[len(CFG) :]: st.session_state[k]
        for k in sidebar_keys()
        if k.startswith(CFG) and k[len(CFG) :] not in NOT_IN_URL and st.session_state[k] != defaults.get(k)
    }
    text = json.dumps(changed, separators=(",", ":"), sort_keys=True) if changed else None
    if text != st.query_params.get(CFG_PARAM):
        if text:
            st.query_params[CFG_PARAM] = text
        else:
            st.query_params.pop(CFG_PARAM, None)


def show_run_in_address(run_id: str | None):
    """?run=ID for the watched run (none: no ?run=)."""
    if run_id:
        st.query_params[RUN_PARAM] = run_id
    else:
        st.query_params.pop(RUN_PARAM, None)


def run_in_address() -> str | None:
    """The text of ?run=, as the address holds it (anyone's text: pages_common checks its shape)."""
    return st.query_params.get(RUN_PARAM)
