"""What a net learned, as figures: pure functions from the stored pictures and series (engine/loop/learned.py,
engine/store/pictures.py) to Plotly figures, tested without a browser (tests/test_playground_figures.py).

Colours are TensorFlow Playground's: class 0 orange, class 1 blue, white where the net is undecided.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from engine.config.canvas import EXTENT

from .axes import layout
from .figures import layer_lines

CLASS_COLOURS = ("#f59322", "#0877bd")  # class 0, class 1
REGION_SCALE = [[0.0, CLASS_COLOURS[0]], [0.5, "#f4f6f7"], [1.0, CLASS_COLOURS[1]]]
UNIT_SCALE = [[0.0, "#ffffff"], [1.0, CLASS_COLOURS[1]]]
POINT_STYLES = {"train": ("training points", "white", "circle"), "test": ("test points", "black", "diamond")}


def axis(n: int) -> np.ndarray:
    """n coordinates evenly over EXTENT, ends included: where a picture's values lie."""
    return np.linspace(*EXTENT, n)


def regions_figure(regions, points: dict, accuracy: float | None = None, step: int | None = None) -> go.Figure:
    """The decision regions: P(class 1) over the square, row by row from the bottom, with the training and test
    points (points: {"train" | "test": flat x1, x2, label}) drawn over them in their class's colour."""
    side = math.isqrt(len(regions))
    a = axis(side)
    fig = go.Figure(
        go.Heatmap(
            x=a,
            y=a,
            z=np.asarray(regions, dtype=float).reshape(side, side),
            zmin=0,
            zmax=1,
            colorscale=REGION_SCALE,
            colorbar=dict(title="P(class 1)", thickness=12),
            hovertemplate="x1 %{x:.2f}, x2 %{y:.2f}: P(class 1) %{z:.2f}<extra></extra>",
        )
    )
    for which, flat in points.items():
        p = np.asarray(flat, dtype=float).reshape(-1, 3)
        name, edge, symbol = POINT_STYLES[which]
        colours = [CLASS_COLOURS[int(c)] for c in p[:, 2]]
        fig.add_trace(
            go.Scatter(
                x=p[:, 0],
                y=p[:, 1],
                mode="markers",
                name=name,
                marker=dict(color=colours, size=6, symbol=symbol, line=dict(color=edge, width=1)),
            )
        )
    title = "Decision regions" + (f" at step {step:,}" if step is not None else "")
    if accuracy is not None:
        title += f" · test accuracy {accuracy:.1%}"
    fig = layout(fig, title, "x2", height=460, x_steps=False)
    fig.update_layout(hovermode="closest", legend=dict(y=-0.12))
    fig.update_xaxes(range=EXTENT, title="x1", constrain="domain")  # a square plane, no margin beside it
    fig.update_yaxes(range=EXTENT, scaleanchor="x", constrain="domain")
    return fig


def curve_figure(curve, points: dict, target=None, step: int | None = None) -> go.Figure:
    """A 1D set: the learned function over the line, the clean target curve (dashed) and the samples
    (points: {"train" | "test": flat x, y})."""
    x = axis(len(curve))
    fig = go.Figure()
    if target is not None:
        fig.add_trace(go.Scatter(x=x, y=target, mode="lines", name="target", line=dict(color="grey", dash="dash")))
    for which, flat in points.items():
        p = np.asarray(flat, dtype=float).reshape(-1, 2)
        name, edge, symbol = POINT_STYLES[which]
        colour = CLASS_COLOURS[0] if which == "train" else "black"
        fig.add_trace(
            go.Scatter(
                x=p[:, 0], y=p[:, 1], mode="markers", name=name, marker=dict(color=colour, size=4, symbol=symbol)
            )
        )
    fig.add_trace(go.Scatter(x=x, y=curve, mode="lines", name="learned", line=dict(color=CLASS_COLOURS[1], width=3)))
    fig = layout(
        fig, "Learned function" + (f" at step {step:,}" if step is not None else ""), "y", height=400, x_steps=False
    )
    fig.update_layout(hovermode="closest", legend=dict(y=-0.15))
    fig.update_xaxes(title="x")
    return fig


def tiles(values, units: int) -> np.ndarray:
    """(units, points) of one layer's picture, each unit scaled to [0, 1] by its largest output (a ReLU's output
    is never below 0); a unit that is 0 everywhere (dead) stays 0."""
    v = np.asarray(values, dtype=float).reshape(units, -1)
    top = np.nanmax(v, axis=1, keepdims=True)
    return np.divide(v, top, out=np.zeros_like(v), where=top > 0)


def neurons_figure(values, units: int, plane: bool, layer: int) -> go.Figure:
    """One tile per neuron: each hidden unit's output over the square (plane: tiles side by side, a gap between) or
    over the line (one row per unit), brighter where it is larger."""
    t = tiles(values, units)
    if plane:
        side = math.isqrt(t.shape[1])
        cols = min(units, 8)
        rows = -(-units // cols)
        mosaic = np.full((rows * (side + 2), cols * (side + 2)), np.nan)
        for u in range(units):
            r, c = divmod(u, cols)
            top, left = (rows - 1 - r) * (side + 2), c * (side + 2)  # unit 0 at the top left
            mosaic[top : top + side, left : left + side] = t[u].reshape(side, side)
        fig = go.Figure(go.Heatmap(z=mosaic, zmin=0, zmax=1, colorscale=UNIT_SCALE, showscale=False, hoverinfo="skip"))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False, scaleanchor="x")
        height = 60 + 70 * rows
    else:
        fig = go.Figure(
            go.Heatmap(
                x=axis(t.shape[1]),
                y=list(range(units)),
                z=t,
                zmin=0,
                zmax=1,
                colorscale=UNIT_SCALE,
                showscale=False,
                hovertemplate="unit %{y}, x %{x:.2f}: %{z:.2f} of its largest<extra></extra>",
            )
        )
        fig.update_xaxes(title="x")
        fig.update_yaxes(title="unit", autorange="reversed")
        height = 120 + 14 * units
    fig.update_layout(
        title=f"Hidden layer {layer}: one tile per neuron ({units} units)",
        height=height,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig


def dead_figure(named: dict) -> go.Figure:
    """The share of each ReLU layer's units that output zero for the whole batch (named: {"relu1": series})."""
    fig = layer_lines(named, "Dead ReLU units per layer", "share dead", log_y=False)
    fig.update_yaxes(range=[-0.02, 1.02], tickformat=".0%")
    return fig


def accuracy_figure(accuracy) -> go.Figure:
    """The test split's accuracy at each snapshot."""
    fig = layer_lines({"test accuracy": accuracy}, "Test accuracy (held-out split)", "accuracy", log_y=False)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig
