"""Pure functions from scalar series to plotly figures (histograms.py draws the histograms; axes.py is the
look they share). No Streamlit, no store: easy to test.

Scalar series come in as `Buckets` (engine/store/decimate.py) or as (steps, values) at full resolution,
which are min-max downsampled here; either way no trace carries more than MAX_POINTS points.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from engine.modes.gradcheck import GRADCHECK_TOL

from .axes import color_of, layout, log_ticks
from .series import CAP, Buckets

MAX_POINTS = 2 * CAP  # per trace
RATIO_GUIDE = 1e-3  # update/weight ratio rule of thumb (Karpathy, CS231n)
RATIO_BAND = (3e-4, 3e-3)
MAX_EVENT_LINES = 50


def as_buckets(series) -> Buckets:
    """Buckets as they are, or (steps, values) at full resolution downsampled to MAX_POINTS."""
    if isinstance(series, Buckets):
        return series.compact(CAP)
    steps, values = series
    return Buckets.from_points(steps, values).compact(CAP)


def _faint(color: str, alpha: float = 0.25) -> str:
    h = color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


FEW_POINTS = 30  # a loss with fewer finite points gets markers: a run that diverged at step 1 has one


def _raw_and_smooth(fig, b: Buckets, smoothing: float, name: str, color: str, legend_raw: bool = True):
    """Both lines break where the series has no finite value (NaN, inf: a divergence): a gap, not a
    line drawn through, and the smoothed one starts over after it."""
    x, y = b.points()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            name=f"{name} (raw)",
            line=dict(color=_faint(color), width=1),
            showlegend=legend_raw,
            legendgroup=name,
            hoverinfo="skip",
            connectgaps=False,
        )
    )
    sx, sy = b.ema(smoothing, gaps=True)
    few = np.count_nonzero(np.isfinite(np.asarray(sy, dtype=float))) < FEW_POINTS  # a line of one point is not drawn
    fig.add_trace(
        go.Scatter(
            x=sx,
            y=sy,
            mode="lines+markers" if few else "lines",
            name=name,
            line=dict(color=color, width=2),
            marker=dict(size=6),
            legendgroup=name,
            connectgaps=False,
        )
    )


# ---------------------------------------------------------------------------------------------
# loss


def loss_figure(
    series,
    smoothing: float = 0.6,
    log_y: bool = True,
    lr_events=(),
    divergence=None,
    title: str = "Loss",
    branches: dict | None = None,
    marks=(),
) -> go.Figure:
    """The raw loss faint behind its EMA, lr changes as markers (and dotted lines) at their steps,
    a divergence as a red line, the run's forks (branches: {label: series}) as dashed lines
    from the step they forked at, and marks (scheduled actions and rules that fired) as diamonds."""
    b = as_buckets(series)
    fig = go.Figure()
    _raw_and_smooth(fig, b, smoothing, "loss", color_of(0))
    for i, (name, branch) in enumerate((branches or {}).items(), start=1):
        x, y = as_buckets(branch).ema(smoothing, gaps=True)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, line=dict(color=color_of(i), width=2, dash="dash")))
    _event_markers(
        fig,
        b,
        lr_events,
        "lr change",
        "triangle-up",
        "#EF553B",
        lambda e: f"lr {e['data'].get('old', 0):.3g} → {e['data'].get('new', 0):.3g}",
    )
    _marks(fig, b, marks)
    if divergence:
        fig.add_vline(
            x=divergence["step"],
            line=dict(color="red", width=2),
            annotation_text=f"diverged ({divergence.get('layer') or '?'})",
        )
    return layout(fig, title, "loss", log_y)


def _marks(fig, b: Buckets, marks):
    """Scheduled actions ("scheduled: 300:lr=1e-07") and rules that fired ("rule spike:10:pause: ...") as diamonds."""
    _event_markers(
        fig,
        b,
        marks,
        "scheduled / rule",
        "diamond",
        "#AB63FA",
        lambda e: (
            f"scheduled: {e['data'].get('action')}"
            if e["kind"] == "scheduled"
            else f"rule {e['data'].get('rule')}: {e['data'].get('why')}"
        ),
    )


def _event_markers(fig, b: Buckets, events, name, symbol, color, text):
    events = [e for e in events if e.get("step") is not None]
    if not events:
        return
    steps = np.array([e["step"] for e in events], dtype=float)
    y = b.value_at(steps)
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=y,
            mode="markers",
            name=name,
            text=[text(e) for e in events],
            marker=dict(symbol=symbol, size=11, color=color, line=dict(width=1, color="white")),
            hovertemplate="step %{x}: %{text}<extra></extra>",
        )
    )
    for s in steps[-MAX_EVENT_LINES:]:
        fig.add_vline(x=s, line=dict(color=color, width=1, dash="dot"))


def overlay_figure(named: dict, smoothing: float = 0.6, log_y: bool = True, title: str = "Loss") -> go.Figure:
    """Several runs' losses: each raw series faint, its EMA solid, one colour per run."""
    fig = go.Figure()
    for i, (name, series) in enumerate(named.items()):
        _raw_and_smooth(fig, as_buckets(series), smoothing, name, color_of(i), legend_raw=False)
    return layout(fig, title, "loss", log_y, height=380)


# ---------------------------------------------------------------------------------------------
# per-layer lines


def layer_lines(named: dict, title: str, ytitle: str = "", log_y: bool = True, floor: float | None = None) -> go.Figure:
    """One line per layer (markers too when a series has few points). On a log axis, values <= 0
    are raised to floor when given (and said so in the hover), else left out."""
    fig = go.Figure()
    for i, (name, series) in enumerate(named.items()):
        x, y = as_buckets(series).points()
        if log_y:
            y = np.where(np.asarray(y) > 0, y, np.nan if floor is None else floor)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers" if len(x) < 60 else "lines",
                name=name,
                line=dict(color=color_of(i), width=1.5),
                marker=dict(size=4),
            )
        )
    fig = layout(fig, title, ytitle, log_y)
    if len(named) > 4:  # many layers: a legend row per 4 of them, under the plot
        fig.update_layout(height=320 + 22 * ((len(named) + 3) // 4))
    return fig


def grad_norm_figure(named: dict) -> go.Figure:
    return layer_lines(named, "Gradient norm per layer", "‖grad‖")


def update_ratio_figure(named: dict) -> go.Figure:
    """‖Δw‖ / ‖w‖ per layer, with the ~1e-3 guide band: far below, the layer barely learns; far
    above, the step is too big for it."""
    fig = layer_lines(named, "Update / weight ratio per layer", "‖Δw‖ / ‖w‖")
    fig.add_hrect(
        y0=RATIO_BAND[0],
        y1=RATIO_BAND[1],
        fillcolor="green",
        opacity=0.12,
        line_width=0,
        annotation_text="~1e-3 guide",
        annotation_position="top left",
    )
    fig.add_hline(y=RATIO_GUIDE, line=dict(color="green", width=1, dash="dash"))
    return fig.update_yaxes(**log_ticks(fig))


# what the gradient check measures, per mode (engine/loop/telemetry.py grad_ratio)
GRADCHECK_MEASURES = {
    "manual": "‖g_hand − g_autograd‖ / ‖g_autograd‖",
    "custom_function": "‖g_MyReLU − g_autograd‖ / ‖g_autograd‖",
}


def gradcheck_floor(dtype: str) -> float:
    """Where an exact match (0) is drawn on the log axis: a millionth of the dtype's tolerance."""
    return GRADCHECK_TOL.get(dtype, 1e-6) * 1e-6


def gradcheck_figure(named: dict, dtype: str = "float32", measure: str = GRADCHECK_MEASURES["manual"]) -> go.Figure:
    """The gradient check's norm ratio per layer over time, on a log axis, with the band of what
    rounding in the run's dtype gives (engine/modes/gradcheck.py GRADCHECK_TOL): lines inside the band
    agree, a line above it disagrees. An exact match (0) is drawn at gradcheck_floor(dtype)."""
    floor = gradcheck_floor(dtype)
    fig = layer_lines(named, f"Gradient check: {measure} per layer (0 drawn at {floor:.0e})", "norm ratio", floor=floor)
    tol = GRADCHECK_TOL.get(dtype)
    if tol is not None:
        fig.add_hrect(
            y0=floor,
            y1=tol,
            fillcolor="green",
            opacity=0.12,
            line_width=0,
            annotation_text=f"{dtype} rounding (≤ {tol:.1e})",
            annotation_position="top left",
        )
        fig.add_hline(y=tol, line=dict(color="green", width=1, dash="dash"))
    return fig.update_yaxes(**log_ticks(fig))


def gap_figure(gap, dtype: str = "float32") -> go.Figure:
    """How far one mode's loss is from another's at each common step (explain.PairGap), on a log axis:
    0 (equal bit for bit) drawn at gradcheck_floor(dtype), and the line of what the dtype's rounding gives."""
    floor = gradcheck_floor(dtype)
    y = np.where(gap.rel > 0, gap.rel, floor)
    fig = go.Figure(
        go.Scatter(
            x=gap.steps,
            y=y,
            mode="lines+markers" if len(y) < 60 else "lines",
            name=f"{gap.b} vs {gap.a}",
            line=dict(color=color_of(0), width=1.5),
            marker=dict(size=4),
        )
    )
    tol = GRADCHECK_TOL.get(dtype)
    if tol is not None:
        fig.add_hline(
            y=tol,
            line=dict(color="green", width=1, dash="dash"),
            annotation_text=f"{dtype} rounding in one step (≤ {tol:.1e}): a gap that starts below it is rounding",
            annotation_position="top left",
        )
    title = f"|loss {gap.b} − loss {gap.a}| / |loss {gap.a}| (0 drawn at {floor:.0e})"
    return layout(fig, title, "relative gap", log_y=True)


# ---------------------------------------------------------------------------------------------
# learning rate and run health


def lr_figure(series, lr_events=(), marks=()) -> go.Figure:
    b = as_buckets(series)
    fig = go.Figure()
    x, y = b.points()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines+markers" if len(x) < 60 else "lines",
            name="lr",
            line=dict(shape="hv", color=color_of(1)),
        )
    )
    _event_markers(
        fig, b, lr_events, "lr change", "triangle-up", "#EF553B", lambda e: f"lr → {e['data'].get('new', 0):.3g}"
    )
    _marks(fig, b, marks)
    return layout(fig, "Learning rate", "lr", log_y=True)


STARTUP_SHARE = 0.8  # the start-up lasts until the throughput first reaches this share of its typical value


def startup_end(steps, values) -> int | None:
    """The step where the start-up ramp ends (the first step whose throughput reaches STARTUP_SHARE of the
    median of the later half: what the run settles at), or None when the series starts there already."""
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 4:
        return None
    reached = np.flatnonzero(y >= STARTUP_SHARE * np.median(y[len(y) // 2 :]))
    return int(x[reached[0]]) if len(reached) and reached[0] > 0 else None


def throughput_figure(series, unit: str = "steps/s") -> go.Figure:
    """Steps per second; the start-up (the first steps: allocation, the first flushes, caches warming)
    shaded and labelled, so that its ramp does not read as the run's own pace."""
    x, y = as_buckets(series).points()
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", name=unit, line=dict(color=color_of(2))))
    end = startup_end(x, y)
    if end is not None:
        fig.add_vrect(
            x0=float(x[0]),
            x1=end,
            fillcolor="grey",
            opacity=0.15,
            line_width=0,
            annotation_text="start-up",
            annotation_position="top left",
        )
    return layout(fig, "Throughput", unit)


def memory_figure(series, device: str = "") -> go.Figure:
    x, y = as_buckets(series).points()
    fig = go.Figure(
        go.Scatter(
            x=x, y=np.asarray(y) / 2**20, mode="lines", name="memory", line=dict(color=color_of(3)), fill="tozeroy"
        )
    )
    return layout(fig, f"Memory{' (' + device + ')' if device else ''}", "MiB")


def nonfinite_figure(named: dict) -> go.Figure:
    """Non-finite (NaN or inf) values counted in the weight and gradient snapshots."""
    fig = go.Figure()
    for i, (kind, series) in enumerate(named.items()):
        x, y = as_buckets(series).points()
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{kind}s", line=dict(color=color_of(4 + i))))
    fig = layout(fig, "Non-finite values (NaN, inf)", "count")
    fig.update_yaxes(rangemode="nonnegative")  # a count: no axis below 0
    return fig


def placeholder(text: str, height: int = 160) -> go.Figure:
    """A chart with no axes, only `text`: where a curve will be. Drawing it loads the browser's
    plotting code before the first real chart is needed."""
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
