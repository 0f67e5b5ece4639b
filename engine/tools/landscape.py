"""Loss landscapes: the loss of one batch on a line and on a plane through the run's weights, after Li et al.,
"Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018).

    update_direction(mode, x, y)         the update the run's own step takes from these weights on this batch
                                         (w_after - w_before; its optimizer's state included), weights put back
    random_directions(weights, dim, seed) two random directions, filter-normalised
    filter_normalise(d, w, dim)           each filter of d scaled to the norm of the same filter of w (Li et al. 4);
                                         1-D tensors (biases, norms' scales) get 0, Li et al.'s "ignore biasbn"
    slice_1d / slice_2d                   the batch's loss at w + a d (+ b e) over a line or a grid
    project(points, w, d, e)              where stored weights lie on the plane: least squares on (d, e), and the
                                          share of each displacement that lies off the plane
    landscape(...)                        all of it, with progress after each row and a time limit

A filter is one output unit's incoming weights: a row of an nn.Linear's (out, in) weight or a conv's (out, in, k, k),
a column of the raw modes' (in, out) w (filter_dim). The loss is the mode's forward and loss, without gradients;
an nn model is put in eval mode for it (no dropout, BatchNorm's running statistics), so the same weights give the
same loss at every point. Every point moves the weights in place, and the weights are put back at the end.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from engine.modes import deep
from engine.modes.losses import LOSSES

POINTS_1D = 41  # points on the line through the update
SPAN_1D = (-1.0, 3.0)  # its range, in units of one update: 0 is where the run is, 1 where its next step lands
GRID = 21  # points a side on the plane: GRID * GRID forward passes
MAX_GRID = 41
SPAN_2D = 1.0  # the plane's coefficients run from -SPAN_2D to SPAN_2D (Li et al.'s [-1, 1])
TIME_LIMIT_S = 300.0  # the plane stops where it is after this long


def filter_dim(mode) -> int:
    """The dimension that indexes filters (output units): 1 in the raw modes' (in, out) layout, 0 in torch.nn's."""
    return 1 if mode.model is None else 0


def weights_of(mode) -> dict[str, torch.Tensor]:
    """The trained weights by name, the tensors themselves: writing into them moves the model."""
    return dict(mode.named_params())


def batch_loss(mode, x, y) -> torch.Tensor:
    """The batch's loss at the weights now, without gradients (a 0-dim tensor on the device). The raw modes' forward
    is engine/modes/deep.py's with clamp (MyReLU's forward is the same clamp)."""
    with torch.no_grad():
        if mode.model is None:
            y_pred = deep.forward(weights_of(mode), x, lambda h: h.clamp(min=0))
        else:
            y_pred = mode.model(x)
        return LOSSES[mode.loss](y_pred, y)


def filter_normalise(d: dict, w: dict, dim: int) -> dict:
    """d with each filter scaled to its weights' filter's norm: d_i * ||w_i|| / ||d_i||; 0 for 1-D tensors."""
    out = {}
    for name, wt in w.items():
        if wt.dim() <= 1:
            out[name] = torch.zeros_like(wt)
            continue
        dd, ww = d[name].movedim(dim, 0), wt.movedim(dim, 0)
        scale = ww.flatten(1).norm(dim=1) / (dd.flatten(1).norm(dim=1) + 1e-10)  # (filters,)
        out[name] = (dd * scale.view(-1, *[1] * (dd.dim() - 1))).movedim(0, dim)
    return out


def random_directions(w: dict, dim: int, seed: int = 0) -> tuple[dict, dict]:
    """Two directions drawn from N(0, 1) by a generator of their own (the run's are left alone), filter-normalised."""
    g = torch.Generator().manual_seed(seed)
    draw = [{n: torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for n, t in w.items()} for _ in "de"]
    return filter_normalise(draw[0], w, dim), filter_normalise(draw[1], w, dim)


def update_direction(mode, x, y) -> dict:
    """One step of the run's own update from these weights on this batch, w_after - w_before. The weights, the
    module's buffers and the optimizer's state are put back afterwards."""
    w = weights_of(mode)
    saved = copy.deepcopy(mode.state_dict())
    before = {n: t.clone() for n, t in w.items()}
    mode.forward_backward(x, y)
    mode.update()
    mode.zero_grad()
    step = {n: w[n] - before[n] for n in w}
    mode.load_weights(saved["model"])
    if "optimizer" in saved:
        mode.optimizer.load_state_dict(saved["optimizer"])
    return step


def _place(w: dict, origin: dict, terms) -> None:
    """w = origin + sum(c * d for c, d in terms), in place."""
    with torch.no_grad():
        for n, t in w.items():
            t.copy_(origin[n])
            for c, d in terms:
                t.add_(d[n], alpha=c)


def slice_1d(mode, x, y, d: dict, alphas) -> np.ndarray:
    """The loss at w + a d for each a; the weights are put back."""
    w = weights_of(mode)
    origin = {n: t.clone() for n, t in w.items()}
    try:
        losses = []
        for a in alphas:
            _place(w, origin, [(float(a), d)])
            losses.append(batch_loss(mode, x, y))
        return torch.stack(losses).double().cpu().numpy()
    finally:
        _place(w, origin, [])


def slice_2d(mode, x, y, d: dict, e: dict, alphas, betas, on_row=None, deadline=None) -> np.ndarray:
    """The loss at w + a d + b e, rows over b and columns over a (NaN where the deadline, a time.monotonic(), cut
    it short); on_row(i, rows so far) after each row. The weights are put back."""
    w = weights_of(mode)
    origin = {n: t.clone() for n, t in w.items()}
    grid = np.full((len(betas), len(alphas)), np.nan)
    try:
        for i, b in enumerate(betas):
            if deadline is not None and time.monotonic() > deadline:
                break
            row = []
            for a in alphas:
                _place(w, origin, [(float(a), d), (float(b), e)])
                row.append(batch_loss(mode, x, y))
            grid[i] = torch.stack(row).double().cpu().numpy()  # one copy to the host a row
            if on_row is not None:
                on_row(i, grid[: i + 1])
        return grid
    finally:
        _place(w, origin, [])


def _dot(a: dict, b: dict) -> float:
    return sum(float(torch.sum(a[n].double() * b[n].double())) for n in a)


def project(points: list[dict], origin: dict, d: dict, e: dict) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients (len(points), 2), off-plane share (len(points),)): for each point p, the (a, b) that make
    origin + a d + b e nearest to p (least squares), and ||p - that|| / ||p - origin|| (0 for p == origin)."""
    gram = np.array([[_dot(d, d), _dot(d, e)], [_dot(e, d), _dot(e, e)]])
    coords, off = [], []
    for p in points:
        r = {n: p[n].to(origin[n]) - origin[n] for n in origin}
        rhs = np.array([_dot(d, r), _dot(e, r)])
        c = np.linalg.lstsq(gram, rhs, rcond=None)[0]
        rr = _dot(r, r)
        coords.append(c)
        off.append(np.sqrt(max(rr - c @ rhs, 0.0) / rr) if rr > 0 else 0.0)
    return np.array(coords).reshape(-1, 2), np.array(off)


def landscape(mode, x, y, path: list[tuple[int, dict]], grid=GRID, seed=0, progress=None, time_limit=None) -> dict:
    """The 1-D slice along the update, the 2-D slice on two random filter-normalised directions, and path (the
    stored weights, (step, weights by name)) projected onto the plane. progress(done, total, partial result) after
    the line and after each row of the plane; past time_limit s the plane stops where it is (its rows NaN after)."""
    start = time.monotonic()
    deadline = None if time_limit is None else start + time_limit
    if mode.model is not None:
        was_training = mode.model.training
    d_step = update_direction(mode, x, y)
    if mode.model is not None:
        mode.model.eval()
    try:
        alphas = np.linspace(*SPAN_1D, POINTS_1D)
        coefs = np.linspace(-SPAN_2D, SPAN_2D, grid)
        total = POINTS_1D + grid * grid
        w = weights_of(mode)
        out = {
            "alphas": alphas.tolist(),
            "loss_1d": _listed(slice_1d(mode, x, y, d_step, alphas)[None])[0],
            "update_norm": _dot(d_step, d_step) ** 0.5,
            "coefs": coefs.tolist(),
            "loss_2d": None,
            "rows_done": 0,
        }
        d, e = random_directions(w, filter_dim(mode), seed)
        coords, off = project([p for _, p in path], w, d, e)
        out["path"] = [
            {"step": s, "a": float(c[0]), "b": float(c[1]), "off_plane": float(o)}
            for (s, _), c, o in zip(path, coords, off)
        ]
        if progress is not None:
            progress(POINTS_1D, total, out)

        def on_row(i, rows):
            out["loss_2d"], out["rows_done"] = _listed(rows), i + 1
            if progress is not None:
                progress(POINTS_1D + (i + 1) * grid, total, out)

        out["loss_2d"] = _listed(slice_2d(mode, x, y, d, e, coefs, coefs, on_row, deadline))
        out["seconds"] = time.monotonic() - start
        return out
    finally:
        if mode.model is not None:
            mode.model.train(was_training)


def _listed(a: np.ndarray) -> list:
    """Rows of floats for JSON, None for NaN and inf (a point past the time limit, or a loss that overflowed)."""
    return [[float(v) if np.isfinite(v) else None for v in row] for row in a]
