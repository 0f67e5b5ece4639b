"""The look every chart shares: the title top left, the legend under the plot, whole steps on a short step
axis, a few plain labels on a log axis, and the palette. Pure functions of a plotly figure."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from engine.sinks import ticks

PALETTE = qualitative.Plotly


def layout(
    fig: go.Figure, title: str, ytitle: str = "", log_y: bool = False, height: int = 340, x_steps: bool = True
) -> go.Figure:
    """The charts' shared look: the title top left, the legend under the plot (never over the title),
    on a log axis labels that cannot pile up (log_ticks), and with x_steps a step axis that labels whole
    steps only (never "0.5")."""
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"),
        height=height,
        margin=dict(l=10, r=10, t=40, b=10),
        hovermode="x unified",
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
    )
    fig.update_xaxes(title_text="step" if x_steps else None)
    if x_steps:
        fig.update_xaxes(tickformat="d", **({"dtick": 1} if _span(fig, "x") < 10 else {}))
    # 1e-6 rather than SI's "1µ" (a loss or a ratio is no quantity in micro-units)
    fig.update_yaxes(title_text=ytitle, type="log" if log_y else "linear", exponentformat="e")
    if log_y:
        fig.update_yaxes(**log_ticks(fig))
    return fig


def _values(fig: go.Figure, axis: str) -> np.ndarray:
    """Every finite value the traces and the shapes drawn in data units put on an axis ("x" or "y")."""
    parts = [np.asarray(getattr(t, axis), dtype=float).ravel() for t in fig.data if getattr(t, axis, None) is not None]
    parts += [
        np.asarray([getattr(sh, f"{axis}0"), getattr(sh, f"{axis}1")], dtype=float)
        for sh in fig.layout.shapes
        if (getattr(sh, f"{axis}ref") or axis) == axis
    ]
    v = np.concatenate(parts) if parts else np.array([])
    return v[np.isfinite(v)]


def _span(fig: go.Figure, axis: str) -> float:
    v = _values(fig, axis)
    return float(v.max() - v.min()) if len(v) else 0.0


def log_ticks(fig: go.Figure) -> dict:
    """A log axis's labels (engine/sinks/ticks.py, the same as Visdom's) over what the figure draws. Call it
    again after adding a shape (a band) that widens the range."""
    return ticks.log_ticks(_values(fig, "y"))


def color_of(i: int) -> str:
    return PALETTE[i % len(PALETTE)]
