"""The sidebar: every RunConfig knob, greyed out with the reason when it does not apply.

Widget values live in st.session_state under state.CFG + the RunConfig field name, so `values()` is
the configuration the next Start launches; state.py keeps them across pages and reloads. The widgets
are drawn from the fields' metadata (widgets.py). The rules of what applies are in rules.py; the
engine's prepare() has the last word (see actions.py).

The sidebar is drawn on every page, from the entry file (app.py): Streamlit forgets the state of a
widget that a page does not draw, and the browser would mount it anew with its own default.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import quote

import streamlit as st

from engine.config.fields import MODES, RunConfig, default_lr
from engine.store.db import default_path

from . import rules, state, suggest, widgets
from .pages_common import plain
from .state import CFG as K
from .widgets import check, choice, number, text

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
    return state.sidebar_values()


def config() -> RunConfig:
    t = state.visdom_target()
    return rules.with_visdom(rules.config_from_values(values()), t["on"], t["host"], t["port"], t["env"])


def _mode_changed():
    lr = default_lr(st.session_state[K + "mode"])  # the lecture's rate for that mode
    st.session_state[K + "lr"] = lr
    st.session_state[state.LR_LOG] = rules.nearest_lr_step(lr)


def _lr_slider_changed():
    st.session_state[K + "lr"] = st.session_state[state.LR_LOG]


def _lr_exact_changed():
    st.session_state[state.LR_LOG] = rules.nearest_lr_step(st.session_state[K + "lr"])


# ---------------------------------------------------------------------------------------------
# drawing


def render():
    """Draw the configuration controls into the sidebar."""
    state.init_sidebar()
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
        _visdom(why)
    state.save_sidebar()


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
    choice(st, "arch", "Architecture", why)
    with st.expander("Architecture sizes"):
        c1, c2, c3 = st.columns(3)
        number(c1, "d_in", "D_in", why, step=1)
        number(c2, "hidden", "H", why, step=1)
        number(c3, "d_out", "D_out", why, step=1)
        widgets.reason(st, why.get("d_in"))
        number(st, "depth", "Depth (Linear layers)", why, step=1)
        widgets.reason(st, why.get("depth"))
        check(st, "bias", "Bias", why)
        choice(st, "tv_model", "Torchvision model", why, options=TV_MODELS, accept_new_options=True)
        text(
            st,
            "pretrained",
            "Pretrained weights file (state_dict)",
            why,
            placeholder="path/to/resnet18.pth, or 'torchvision'",
        )
        check(st, "freeze_backbone", "Freeze backbone (train the new head only)", why)
        widgets.reason(st, why.get("tv_model"))


def _optimizer(why):
    choice(st, "optimizer", "Optimizer", why)
    widgets.reason(st, why.get("optimizer"))
    with st.expander("Optimizer settings"):
        c1, c2 = st.columns(2)
        number(c1, "momentum", "Momentum", why, step=0.1)
        check(c2, "nesterov", "Nesterov", why)
        number(c1, "beta1", "beta1", why, max_value=0.9999, step=0.01)
        number(c2, "beta2", "beta2", why, max_value=0.99999, step=0.001, format="%.4f")
        number(c1, "weight_decay", "Weight decay", why, step=1e-4, format="%.2e")
        number(c2, "eps", "eps", why, step=1e-8, format="%.1e")
        number(c1, "alpha", "alpha (RMSprop)", why, max_value=0.9999, step=0.01)
        if "optimizer" in why:
            st.caption(":grey[:material/block: Not used: no optimizer in this mode]")
        else:
            opt = st.session_state[K + "optimizer"]
            st.caption(f"{opt} takes: {', '.join(k.replace('_', ' ') for k in rules.OPTIMIZER_KNOBS[opt])}")


def _learning_rate():
    st.select_slider(
        "Learning rate (log scale)",
        options=rules.LR_STEPS,
        key=state.LR_LOG,
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
    number(c1, "batch_size", "Batch size", why, step=1)
    c2.radio("Length in", state.LENGTHS, key=state.LENGTH, horizontal=True)
    c1, c2 = st.columns(2)  # both always drawn (greyed out when unused), so neither forgets its value
    number(c1, "steps", "Steps", why, step=100)
    number(c2, "epochs", "Epochs", why, step=1)
    number(
        st,
        "pace",
        "Pace (steps per second, 0 = full speed)",
        why,
        step=10.0,
        help="At most this many steps a second, so that a class can watch the curves move; off (0) by default.",
    )


def _data(why):
    with st.expander("Data", expanded=False):
        choice(st, "dataset", "Dataset", why)
        suggest.offer(st, st.session_state[K + "dataset"])
        c1, c2 = st.columns(2)
        number(c1, "points", "Points (playground)", why, step=50)
        number(c2, "noise", "Noise (playground)", why, step=0.05)
        number(st, "holdout", "Held-out test share", why, step=0.05)
        number(st, "n_samples", "Samples (random, teacher)", why, step=1)
        widgets.reason(st, why.get("n_samples"))
        if "csv" not in why:
            _csv(why)
        text(st, "image_dir", "Image folder (one sub-folder per class)", why)
        number(st, "image_size", "Image size (image folder)", why, step=1, disabled="image_dir" in why)
        text(st, "data_root", "Data root (torchvision downloads)", why)
        c1, c2 = st.columns(2)
        check(c1, "shuffle", "Shuffle", why)
        number(c2, "num_workers", "Loader workers", why, step=1)
        choice(st, "sampler", "Sampler", why)


def _csv(why):
    up = st.file_uploader("CSV file (numeric columns, with a header)", type=["csv"], key=state.CSV_UPLOAD)
    if up is not None:
        st.session_state[K + "csv_path"] = _save_upload(up)
    path = st.session_state.get(K + "csv_path", "")
    header = _csv_header(path)
    if header:
        if st.session_state.get(K + "csv_target") not in header:
            st.session_state[K + "csv_target"] = header[-1]
        choice(st, "csv_target", "Target column", why, options=header)
        choice(st, "task", "Task", why)
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
    choice(c1, "device", "Device", why)
    choice(c2, "dtype", "dtype", why)
    choice(c1, "precision", "Precision", why)
    number(c2, "nproc", "Processes", why, step=1)
    widgets.reason(st, why.get("precision"))
    check(st, "fast", "Fast path (CUDA graph)", why)
    widgets.reason(st, why.get("fast"))
    check(st, "compile", "torch.compile", why)
    widgets.reason(st, why.get("compile"))
    if torch.cuda.is_available():
        st.caption(f"This machine: CUDA on {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s)).")
    else:
        st.caption(f"This machine: no CUDA device; CPU with {os.cpu_count()} cores. 'auto' picks the CPU.")


def _run(why):
    with st.expander("Run and telemetry"):
        c1, c2 = st.columns(2)
        number(c1, "seed", "Seed", why, step=1)
        number(
            c2,
            "telemetry_every",
            "Telemetry every K steps",
            why,
            step=10,
            help="histograms, norms, update ratios and the gradient check; 0 = automatic, about once a second",
        )
        number(c1, "hist_bins", "Histogram bins", why, step=8)
        choice(c2, "on_divergence", "On divergence", why)
        text(st, "name", "Run name", why)


def _visdom(why):
    with st.expander("Visdom target"):
        st.checkbox("Send runs to Visdom", key=state.VISDOM_ON)
        off = not st.session_state[state.VISDOM_ON]
        st.text_input("Host", key=state.VISDOM_HOST, disabled=off)
        c1, c2 = st.columns(2)
        c1.number_input("Port", min_value=1, max_value=65535, step=1, key=state.VISDOM_PORT, disabled=off)
        c2.text_input("Environment", key=state.VISDOM_ENV, disabled=off, placeholder="liveprop_<name>-<run id>")
        t = state.visdom_target()
        if off:
            st.caption("Runs started here do not send to Visdom.")
        else:
            url = f"http://{t['host'].strip()}:{t['port']}"  # typed text: shown escaped, linked percent-encoded
            st.caption(
                f"Runs started here send to [{plain(url)}]({quote(url, safe=':/')}), "
                f"env {plain(t['env'].strip() or 'liveprop_<name>-<run id>')}."
            )
        text(st, "tensorboard_dir", "TensorBoard log dir (empty: off)", why)
