"""Pure functions from histogram snapshots to plotly figures: TensorBoard's "distributions" (a heatmap over
time) and one snapshot's bars. A snapshot is a dict as the store gives it: step, edges, counts, nonfinite.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .axes import color_of, layout
from .series import rebin

HIST_FENCE = 3.0  # a histogram is drawn in full when it lies within this many typical scales of the typical range


def hist_range(snaps: list) -> tuple[float, float, int]:
    """(lo, hi, outside): the value range a heatmap of these snapshots shows, and how many of them
    lie outside it.

    Why not simply every snapshot's range: after a divergence a snapshot can span +-1e23, or have no
    finite range at all, and a gradient's first steps can be far wider than all the others; on that
    one axis every other column would be squeezed into a single bin. So the typical range is the
    median of the lows and of the highs of the snapshots of the later half of the steps (what the run
    looks like now: a gradient that shrank 10,000-fold since step 0 is drawn at its current size), with a scale
    of its width or its magnitude, whichever is larger; the range shown spans every snapshot within
    HIST_FENCE scales of it, and the others (and those with non-finite edges) are counted as outside."""
    ranges, outside = [], 0
    for s in snaps:
        e = np.asarray(s["edges"], dtype=np.float64)  # None (a non-finite edge, as stored) is NaN
        if not len(e) or not np.isfinite(e).all():
            outside += 1
        elif sum(s["counts"]) > 0:  # a snapshot with no finite value has nothing to show
            ranges.append((s["step"], e[0], e[-1]))
    if not ranges:
        return 0.0, 0.0, outside
    step, lo, hi = np.asarray(ranges).T  # (snapshots,) each
    newer = step >= (step[0] + step[-1]) / 2  # the later half of the run (snapshots crowd its start)
    mlo, mhi = np.median(lo[newer]), np.median(hi[newer])
    scale = max(mhi - mlo, abs(mlo), abs(mhi))
    inside = (lo >= mlo - HIST_FENCE * scale) & (hi <= mhi + HIST_FENCE * scale)
    return float(lo[inside].min()), float(hi[inside].max()), outside + int((~inside).sum())


def hist_grid(snaps: list, bins: int = 64) -> np.ndarray:
    """Common bin edges over hist_range(snaps)."""
    return _grid(*hist_range(snaps)[:2], bins)


def _grid(lo: float, hi: float, bins: int) -> np.ndarray:
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def hist_heatmap(snaps: list, title: str = "Distribution over time", bins: int = 64) -> go.Figure:
    """TensorBoard's "distributions": one column per snapshot step, its histogram rebinned onto a
    common value axis, colour = share of the values (log scale). The axis keeps to the snapshots'
    typical range (hist_range), and the title says how many snapshots lie outside it."""
    fig = go.Figure()
    if snaps:
        lo, hi, outside = hist_range(snaps)
        grid = _grid(lo, hi, bins)
        if outside:
            title += f" · {outside} snapshot{'s' if outside != 1 else ''} outside the range shown"
        z = np.array([rebin(s["edges"], s["counts"], grid) for s in snaps]).T  # (bins, steps)
        # the share of all the snapshot's finite values: a column outside the range shows only its part inside
        total = np.array([[sum(s["counts"]) for s in snaps]], dtype=np.float64)  # (1, steps)
        share = np.divide(z, total, out=np.zeros_like(z), where=total > 0)
        fig.add_trace(
            go.Heatmap(
                x=[s["step"] for s in snaps],
                y=(grid[:-1] + grid[1:]) / 2,
                z=np.log10(share + 1e-6),
                colorscale="Viridis",
                zmin=-6,
                zmax=0,
                colorbar=dict(title="log10 share", thickness=10),
                hovertemplate="step %{x}<br>value %{y:.3g}<br>log10 share %{z:.2f}<extra></extra>",
            )
        )
    fig = layout(fig, title, "value")
    fig.update_layout(hovermode="closest")
    if len(snaps) > 1:  # the run's steps only: a heatmap's last cell would reach half a gap past the last step
        fig.update_xaxes(range=[snaps[0]["step"], snaps[-1]["step"]])
    elif snaps:  # one column: its step as the one label, not fractions of a step around it (-0.4 ... 0.4)
        fig.update_xaxes(tickmode="array", tickvals=[snaps[0]["step"]])
    return fig


def hist_bar(snap: dict | None, title: str = "Histogram", note: str = "") -> go.Figure:
    """One snapshot's histogram; its step, a note on it (explain.snapshot_note) and its non-finite count
    in the title."""
    fig = go.Figure()
    if snap:
        e = np.asarray(snap["edges"], dtype=float)
        fig.add_trace(
            go.Bar(
                x=(e[:-1] + e[1:]) / 2, y=snap["counts"], width=np.diff(e), name="count", marker=dict(color=color_of(0))
            )
        )
        title = f"{title} at step {snap['step']}{note}" + (
            f" · {snap['nonfinite']} non-finite" if snap["nonfinite"] else ""
        )
    fig = layout(fig, title, "count", x_steps=False)
    fig.update_xaxes(title_text="value")
    fig.update_layout(bargap=0, hovermode="closest")
    return fig


def last_finite(snaps: list) -> dict | None:
    """The newest snapshot without non-finite values (after a divergence, the last good one)."""
    return next((s for s in reversed(snaps) if not s["nonfinite"]), snaps[-1] if snaps else None)
