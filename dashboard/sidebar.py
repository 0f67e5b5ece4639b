"""The sidebar: every RunConfig knob, greyed out with the reason when it does not apply.

Widget values live in st.session_state under "cfg_<field>" (the RunConfig field name), so
`values()` is the configuration the next Start launches. The rules of what applies are in
rules.py; the engine's prepare() has the last word (see actions.py).

The sidebar is drawn on every page, from the entry file (app.py): Streamlit forgets the state of
a widget that a page does not draw, and the browser would mount it anew with its own default (0,
the first option), so a visit to the Runs page used to reset every knob. A reload starts a new
session, so the values that differ from the defaults also go into the URL (?cfg=JSON), read back
once at a session's start; paths stay out of the URL, and values from it that do not validate
are ignored with a note.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from urllib.parse import quote, urlparse

import streamlit as st

from engine.config.fields import (
    ARCHS,
    DATASETS,
    DEVICES,
    DTYPES,
    MODES,
    ON_DIVERGENCE,
    OPTIMIZERS,
    PRECISIONS,
    SAMPLERS,
    RunConfig,
    default_lr,
    help_for,
)
from engine.config.load import from_dict
from engine.config.reasons import validate
from engine.errors import ConfigError
from engine.store.db import default_path

from . import rules
from .pages_common import plain

K = "cfg_"
LENGTHS = ("steps", "epochs", "until stopped")
TV_MODELS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v3_small", "vgg11"]
MODE_HELP = {
    "manual": "raw tensors, forward and backward written by hand",
    "autograd": "requires_grad tensors, loss.backward()",
    "custom_function": "autograd with the lecture's MyReLU (a torch.autograd.Function)",
    "nn": "a torch.nn model, the update written by hand",
    "optim": "a torch.nn model and a torch.optim optimizer",
}


def values() -> dict:
    """The sidebar's values by RunConfig field name (plus "length": steps or epochs)."""
    _init()
    return {k[len(K) :]: st.session_state[k] for k in _keys() if k.startswith(K) and k in st.session_state}


def config() -> RunConfig:
    t = visdom_target()
    return rules.with_visdom(rules.config_from_values(values()), t["on"], t["host"], t["port"], t["env"])


def visdom_target() -> dict:
    _init()
    return {
        "on": st.session_state.visdom_on,
        "host": st.session_state.visdom_host,
        "port": st.session_state.visdom_port,
        "env": st.session_state.visdom_env,
    }


# ---------------------------------------------------------------------------------------------
# state


READY = "lp_sidebar_ready"
SAVED = "lp_sidebar_saved"  # the widgets' values, kept apart from their own keys (_init)
VISDOM_KEYS = ("visdom_on", "visdom_host", "visdom_port", "visdom_env")
NOT_IN_URL = ("csv_path", "image_dir", "pretrained", "data_root", "tensorboard_dir", "name")  # paths, free text


def _keys() -> list[str]:
    """Every widget key of the sidebar."""
    return [K + f.name for f in dataclasses.fields(RunConfig)] + [K + "length", "lr_log", *VISDOM_KEYS]


def _defaults() -> dict:
    d = RunConfig()
    out = {K + f: v for f, v in vars(d).items()}
    out[K + "lr"] = d.lr or default_lr(d.mode)  # show the lecture's rate
    out[K + "optimizer"] = d.optimizer or "adam"
    out[K + "length"] = "steps"
    started = os.environ.get("LIVEPROP_VISDOM_URL")  # set by python -m dashboard
    url = urlparse(started or "http://127.0.0.1:8097")
    out.update(
        visdom_on=bool(started), visdom_host=url.hostname or "127.0.0.1", visdom_port=url.port or 8097, visdom_env=""
    )
    out["lr_log"] = rules.nearest_lr_step(out[K + "lr"])
    return out


def _init():
    """Once per session: the defaults, then what the URL carries (a reload keeps the settings). After that,
    the values the last run ended with, for any widget whose state Streamlit dropped: st.switch_page does
    (the Runs page's Watch, Resume and Fork), and the widgets would come back at their minimum."""
    if st.session_state.get(READY):
        for k, v in st.session_state.get(SAVED, {}).items():
            if k not in st.session_state:
                st.session_state[k] = v
        return
    given = _from_url(st.query_params.get("cfg"))
    values = {**_defaults(), **given}
    if K + "lr" not in given:  # the lecture's rate for the mode the address may have named
        values[K + "lr"] = default_lr(values[K + "mode"])
    values["lr_log"] = rules.nearest_lr_step(values[K + "lr"])
    for k, v in values.items():
        st.session_state.setdefault(k, v)
    st.session_state[READY] = True


def _from_url(text: str | None) -> dict:
    """Sidebar values from ?cfg=JSON, only those that give a valid RunConfig together; {} if none."""
    if not text:
        return {}
    try:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("not an object")
        fields = {k: v for k, v in d.items() if k not in NOT_IN_URL and k != "length" and k in _field_names()}
        validate(from_dict({**fields, "name": ""}))
    except (ValueError, ConfigError, TypeError, RecursionError) as e:
        st.session_state.lp_error = f"The settings in the address were not used: {e}"
        return {}
    out = {K + k: v for k, v in fields.items()}
    if d.get("length") in LENGTHS:
        out[K + "length"] = d["length"]
    return out


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(RunConfig)}


def _to_url():
    """The values that differ from the defaults, as ?cfg=JSON (paths and names stay out)."""
    defaults = _defaults()
    changed = {
        k[len(K) :]: st.session_state[k]
        for k in _keys()
        if k.startswith(K) and k[len(K) :] not in NOT_IN_URL and st.session_state[k] != defaults.get(k)
    }
    text = json.dumps(changed, separators=(",", ":"), sort_keys=True) if changed else None
    if text != st.query_params.get("cfg"):
        if text:
            st.query_params["cfg"] = text
        else:
            st.query_params.pop("cfg", None)


def _mode_changed():
    lr = default_lr(st.session_state[K + "mode"])  # the lecture's rate for that mode
    st.session_state[K + "lr"] = lr
    st.session_state.lr_log = rules.nearest_lr_step(lr)


def _lr_slider_changed():
    st.session_state[K + "lr"] = st.session_state.lr_log


def _lr_exact_changed():
    st.session_state.lr_log = rules.nearest_lr_step(st.session_state[K + "lr"])


# ---------------------------------------------------------------------------------------------
# drawing


def render():
    """Draw the configuration controls into the sidebar."""
    _init()
    why = rules.disabled_reasons(values())
    with st.sidebar:
        st.subheader("Configure a run")
        _mode()
        _architecture(why)
        _optimizer(why)
        _learning_rate()
        _length(why)
        _data(why)
        _device(why)
        _run(why)
        _visdom()
    _to_url()
    st.session_state[SAVED] = {k: st.session_state[k] for k in _keys() if k in st.session_state}


def _reason(text: str | None):
    if text:
        st.caption(f":grey[:material/block: Not used: {text}]")


def _mode():
    st.radio(
        "Mode",
        MODES,
        key=K + "mode",
        format_func=rules.MODE_LABELS.get,
        on_change=_mode_changed,
        help="The lecture's five ways to train; see the About page.",
    )
    st.caption(MODE_HELP[st.session_state[K + "mode"]])


def _architecture(why):
    st.selectbox("Architecture", ARCHS, key=K + "arch")
    with st.expander("Architecture sizes"):
        c1, c2, c3 = st.columns(3)
        c1.number_input("D_in", min_value=1, step=1, key=K + "d_in", disabled="d_in" in why, help=why.get("d_in"))
        c2.number_input("H", min_value=1, step=1, key=K + "hidden", disabled="hidden" in why, help=why.get("hidden"))
        c3.number_input("D_out", min_value=1, step=1, key=K + "d_out", disabled="d_out" in why, help=why.get("d_out"))
        _reason(why.get("d_in"))
        st.number_input("Depth (Linear layers)", min_value=1, step=1, key=K + "depth", disabled="depth" in why)
        _reason(why.get("depth"))
        st.checkbox("Bias", key=K + "bias")
        st.selectbox(
            "Torchvision model", TV_MODELS, key=K + "tv_model", accept_new_options=True, disabled="tv_model" in why
        )
        st.text_input(
            "Pretrained weights file (state_dict)",
            key=K + "pretrained",
            disabled="pretrained" in why,
            placeholder="path/to/resnet18.pth, or 'torchvision'",
        )
        st.checkbox(
            "Freeze backbone (train the new head only)", key=K + "freeze_backbone", disabled="freeze_backbone" in why
        )
        _reason(why.get("tv_model"))


def _optimizer(why):
    st.selectbox("Optimizer", OPTIMIZERS, key=K + "optimizer", disabled="optimizer" in why)
    _reason(why.get("optimizer"))
    with st.expander("Optimizer settings"):
        c1, c2 = st.columns(2)
        c1.number_input(
            "Momentum",
            min_value=0.0,
            step=0.1,
            key=K + "momentum",
            disabled="momentum" in why,
            help=why.get("momentum"),
        )
        c2.checkbox("Nesterov", key=K + "nesterov", disabled="nesterov" in why, help=why.get("nesterov"))
        c1.number_input(
            "beta1",
            min_value=0.0,
            max_value=0.9999,
            step=0.01,
            key=K + "beta1",
            disabled="beta1" in why,
            help=why.get("beta1"),
        )
        c2.number_input(
            "beta2",
            min_value=0.0,
            max_value=0.99999,
            step=0.001,
            format="%.4f",
            key=K + "beta2",
            disabled="beta2" in why,
            help=why.get("beta2"),
        )
        c1.number_input(
            "Weight decay",
            min_value=0.0,
            step=1e-4,
            format="%.2e",
            key=K + "weight_decay",
            disabled="weight_decay" in why,
            help=why.get("weight_decay"),
        )
        c2.number_input(
            "eps", min_value=0.0, step=1e-8, format="%.1e", key=K + "eps", disabled="eps" in why, help=why.get("eps")
        )
        c1.number_input(
            "alpha (RMSprop)",
            min_value=0.0,
            max_value=0.9999,
            step=0.01,
            key=K + "alpha",
            disabled="alpha" in why,
            help=why.get("alpha"),
        )
        if "optimizer" in why:
            st.caption(":grey[:material/block: Not used: no optimizer in this mode]")
        else:
            opt = st.session_state[K + "optimizer"]
            st.caption(f"{opt} takes: {', '.join(k.replace('_', ' ') for k in rules.OPTIMIZER_KNOBS[opt])}")


def _learning_rate():
    st.select_slider(
        "Learning rate (log scale)",
        options=rules.LR_STEPS,
        key="lr_log",
        format_func=lambda v: f"{v:.0e}",
        on_change=_lr_slider_changed,
    )
    st.number_input(
        "Learning rate (exact)",
        key=K + "lr",
        format="%.3e",
        step=None,
        on_change=_lr_exact_changed,
        help="Any positive number; the slider snaps to 1, 2, 5 per decade.",
    )


def _length(why):
    c1, c2 = st.columns(2)
    c1.number_input("Batch size", min_value=0, step=1, key=K + "batch_size")
    c2.radio("Length in", LENGTHS, key=K + "length", horizontal=True)
    c1, c2 = st.columns(2)  # both always drawn (greyed out when unused), so neither forgets its value
    c1.number_input("Steps", min_value=0, step=100, key=K + "steps", disabled="steps" in why, help=why.get("steps"))
    c2.number_input("Epochs", min_value=0, step=1, key=K + "epochs", disabled="epochs" in why, help=why.get("epochs"))
    st.number_input(
        "Pace (steps per second, 0 = full speed)",
        min_value=0.0,
        step=10.0,
        key=K + "pace",
        help="At most this many steps a second, so that a class can watch the curves move; off (0) by default.",
    )


def _data(why):
    with st.expander("Data", expanded=False):
        st.selectbox("Dataset", DATASETS, key=K + "dataset")
        st.number_input(
            "Samples (random, teacher)", min_value=1, step=1, key=K + "n_samples", disabled="n_samples" in why
        )
        _reason(why.get("n_samples"))
        if "csv" not in why:
            _csv()
        st.text_input("Image folder (one sub-folder per class)", key=K + "image_dir", disabled="image_dir" in why)
        st.number_input(
            "Image size (image folder)", min_value=1, step=1, key=K + "image_size", disabled="image_dir" in why
        )
        st.text_input("Data root (torchvision downloads)", key=K + "data_root", disabled="data_root" in why)
        c1, c2 = st.columns(2)
        c1.checkbox("Shuffle", key=K + "shuffle")
        c2.number_input("Loader workers", min_value=0, step=1, key=K + "num_workers")
        st.selectbox("Sampler", SAMPLERS, key=K + "sampler")


def _csv():
    up = st.file_uploader("CSV file (numeric columns, with a header)", type=["csv"], key="csv_upload")
    if up is not None:
        st.session_state[K + "csv_path"] = _save_upload(up)
    path = st.session_state.get(K + "csv_path", "")
    header = _csv_header(path)
    if header:
        if st.session_state.get(K + "csv_target") not in header:
            st.session_state[K + "csv_target"] = header[-1]
        st.selectbox("Target column", header, key=K + "csv_target")
        st.selectbox("Task", ("auto", "regression", "classification"), key=K + "task")
    else:
        st.caption("Upload a CSV to choose its target column.")


def _save_upload(up) -> str:
    data = up.getvalue()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(up.name).name)[-60:]
    # beside the store, or under the data root that confines every path when the dashboard is exposed
    folder = Path(os.environ.get("LIVEPROP_DATA_ROOT") or Path(default_path()).parent) / "uploads"
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def _csv_header(path: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # as engine/build/data.py reads it
            return [h.strip() for h in f.readline(1 << 20).split(",") if h.strip()]
    except (OSError, ValueError):  # missing, or not UTF-8: the engine's check says which, in one line
        return []


def _device(why):
    import torch

    c1, c2 = st.columns(2)
    c1.selectbox("Device", DEVICES, key=K + "device")
    c2.selectbox("dtype", DTYPES, key=K + "dtype")
    c1.selectbox(
        "Precision",
        PRECISIONS,
        key=K + "precision",
        disabled="precision" in why,
        help=why.get("precision") or help_for("precision"),
    )
    c2.number_input("Processes", min_value=1, max_value=256, step=1, key=K + "nproc", help=help_for("nproc"))
    _reason(why.get("precision"))
    st.checkbox(
        "Fast path (CUDA graph)", key=K + "fast", disabled="fast" in why, help=why.get("fast") or help_for("fast")
    )
    _reason(why.get("fast"))
    st.checkbox(
        "torch.compile", key=K + "compile", disabled="compile" in why, help=why.get("compile") or help_for("compile")
    )
    _reason(why.get("compile"))
    if torch.cuda.is_available():
        st.caption(f"This machine: CUDA on {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s)).")
    else:
        st.caption(f"This machine: no CUDA device; CPU with {os.cpu_count()} cores. 'auto' picks the CPU.")


def _run(why):
    with st.expander("Run and telemetry"):
        c1, c2 = st.columns(2)
        c1.number_input("Seed", min_value=0, step=1, key=K + "seed")
        c2.number_input(
            "Telemetry every K steps",
            min_value=0,
            step=10,
            key=K + "telemetry_every",
            help="histograms, norms, update ratios and the gradient check; 0 = automatic, about once a second",
        )
        c1.number_input("Histogram bins", min_value=1, step=8, key=K + "hist_bins")
        c2.selectbox("On divergence", ON_DIVERGENCE, key=K + "on_divergence")
        st.text_input("Run name", key=K + "name")


def _visdom():
    with st.expander("Visdom target"):
        st.checkbox("Send runs to Visdom", key="visdom_on")
        off = not st.session_state.visdom_on
        st.text_input("Host", key="visdom_host", disabled=off)
        c1, c2 = st.columns(2)
        c1.number_input("Port", min_value=1, max_value=65535, step=1, key="visdom_port", disabled=off)
        c2.text_input("Environment", key="visdom_env", disabled=off, placeholder="liveprop_<name>-<run>")
        t = visdom_target()
        if off:
            st.caption("Runs started here do not send to Visdom.")
        else:
            url = f"http://{t['host'].strip()}:{t['port']}"  # typed text: shown escaped, linked percent-encoded
            st.caption(
                f"Runs started here send to [{plain(url)}]({quote(url, safe=':/')}), "
                f"env {plain(t['env'].strip() or 'liveprop_<name>-<run id>')}."
            )
        st.text_input("TensorBoard log dir (empty: off)", key=K + "tensorboard_dir")
