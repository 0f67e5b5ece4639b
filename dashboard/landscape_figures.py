"""The loss landscape's two charts, pure functions of the job's result (engine/tools/landscape.py landscape()):
the loss along the run's next update, and the loss on a plane through the weights with the run's stored
checkpoints projected onto it. No Streamlit, no store."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .axes import color_of, layout


def _floats(rows) -> np.ndarray:
    """JSON's None (a point past the time limit, an overflow) as NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def line_figure(result: dict, step: int | None = None) -> go.Figure:
    """The loss at w + alpha * (the update), alpha 0 where the run is and 1 where its next step lands; a log axis
    when the loss spans more than two decades."""
    alphas, loss = np.asarray(result["alphas"]), _floats([result["loss_1d"]])[0]
    fig = go.Figure(go.Scatter(x=alphas, y=loss, mode="lines+markers", name="loss", line=dict(color=color_of(0))))
    here = {
        0.0: ("now" + ("" if step is None else f" (step {step})"), "top left"),
        1.0: ("after one update", "top right"),
    }
    for a, (text, where) in here.items():
        fig.add_vline(
            x=a, line=dict(color="grey", width=1, dash="dot"), annotation_text=text, annotation_position=where
        )
    finite = loss[np.isfinite(loss) & (loss > 0)]
    log_y = len(finite) > 1 and finite.max() / finite.min() > 100
    fig = layout(fig, "Loss along the run's next update", "loss", log_y, x_steps=False)
    fig.update_xaxes(title_text=f"alpha (update norm {result['update_norm']:.3g})")
    return fig


def plane_figure(result: dict, step: int | None = None) -> go.Figure:
    """log10 of the loss on the grid a * d + b * e around the weights (d, e random, filter-normalised), the run's
    stored checkpoints as a path over it, and where the run is now at (0, 0)."""
    coefs = np.asarray(result["coefs"])
    grid = _floats(result["loss_2d"] or [])
    z = np.full((len(coefs), len(coefs)), np.nan)
    z[: len(grid)] = np.log10(np.where(grid > 0, grid, np.nan)) if len(grid) else np.nan
    fig = go.Figure(
        go.Contour(
            x=coefs,
            y=coefs,
            z=z,
            colorscale="Viridis",
            ncontours=20,
            colorbar=dict(title=dict(text="log10 loss", side="right")),
            hovertemplate="a %{x:.2f}, b %{y:.2f}: log10 loss %{z:.3f}<extra></extra>",
            name="loss",
        )
    )
    path = result.get("path") or []
    if path:
        fig.add_trace(
            go.Scatter(
                x=[p["a"] for p in path],
                y=[p["b"] for p in path],
                mode="lines+markers+text",
                text=[f"step {p['step']}" for p in path],
                texttemplate=[f"step {p['step']}" if i in (0, len(path) - 1) else "" for i, p in enumerate(path)],
                textposition="top center",
                textfont=dict(color="white"),
                customdata=[100 * p["off_plane"] for p in path],
                hovertemplate="%{text}: (%{x:.3g}, %{y:.3g}), %{customdata:.0f}% off the plane<extra></extra>",
                line=dict(color="white", width=2),
                marker=dict(color="white", size=8, line=dict(color="black", width=1)),
                name="the run's checkpoints",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0],
            y=[0],
            mode="markers",
            marker=dict(symbol="x", color="red", size=12),
            name="now" + ("" if step is None else f" (step {step})"),
            hovertemplate="the weights now<extra></extra>",
        )
    )
    fig = layout(fig, "Loss on a plane through the weights", "b (random direction e)", height=420, x_steps=False)
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(title_text="a (random direction d)")
    return fig


def path_note(result: dict) -> str:
    """One line on how much of the path the plane shows."""
    path = [p for p in result.get("path") or [] if p["off_plane"] > 0]
    if not path:
        return "No earlier checkpoint to draw a path from: the run has kept only the one it is at."
    share = 100 * float(np.mean([p["off_plane"] for p in path]))
    return (
        f"The path: the {len(result['path'])} checkpoints the run keeps, projected onto the plane. On average "
        f"{share:.0f}% of their distance from here lies off it: two random directions in a space of many weights "
        "see little of a path, so read its shape, not its length."
    )
