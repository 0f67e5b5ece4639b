"""The look every chart shares: the title top left, the legend under the plot, whole steps on a short step
axis, a few plain labels on a log axis, and the palette. Pure functions of a plotly figure."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

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


MOST_TICKS = 6


def log_ticks(fig: go.Figure) -> dict:
    """A log axis's labels, at most MOST_TICKS of them, never "1e+2 9e+1 8e+1 7e+1" piled up: the powers of
    ten in range (every n-th over many decades); within a decade or two, 1, 2, 5 times them; within less,
    1 to 9 times them. Call it again after adding a shape (a band) that widens the range."""
    v = _values(fig, "y")
    v = v[v > 0]
    if not len(v):
        return {}
    lo, hi = np.log10(v.min()), np.log10(v.max())
    if hi - lo < 1e-6:  # one value (a constant lr, a single finite loss): plotly shows a decade around it
        lo, hi = lo - 0.5, hi + 0.5
    decades = range(int(np.floor(lo)), int(np.ceil(hi)) + 1)
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**k for k in decades for m in mantissas if lo - 1e-9 <= np.log10(m) + k <= hi + 1e-9]
        if len(ticks) >= 3:
            break
    if not ticks:
        return dict(tickformat="~e")  # plotly's own places, as whole numbers (never a bare mantissa)
    ticks = ticks[:: -(-len(ticks) // MOST_TICKS)]
    return dict(tickmode="array", tickvals=ticks, ticktext=[tick_text(t) for t in ticks])


def tick_text(v: float) -> str:
    """70, 0.005, 2000; 1e-6 and 1e+8 outside 0.001 to 9999 (never 0.000001, never a bare mantissa)."""
    if 1e-3 <= v < 1e4:
        return f"{v:g}"
    mantissa, exponent = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exponent):+d}"


def color_of(i: int) -> str:
    return PALETTE[i % len(PALETTE)]
