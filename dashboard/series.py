"""Histogram snapshots as the dashboard keeps and draws them: bounded buffers, sampling, rebinning.

Scalar series are min-max decimated `Buckets` from engine/store/decimate.py (the Visdom sink uses the
same code); CAP, Buckets, downsample and ema are re-exported here for the dashboard's modules.
Pure numpy: no Streamlit, no store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.store.decimate import CAP, Buckets, downsample, ema

__all__ = ["CAP", "HIST_CAP", "Buckets", "HistBuffer", "downsample", "ema", "rebin", "sample_steps"]

HIST_CAP = 200  # histogram snapshots kept per layer and kind


@dataclass
class HistBuffer:
    """Up to cap histogram snapshots of one layer and kind, thinned evenly as they arrive
    (every other one is dropped, the newest always kept)."""

    snaps: list = field(default_factory=list)  # dicts: step, edges, counts, nonfinite
    cursor: int = -1  # last step read from the store
    cap: int = HIST_CAP

    def extend(self, snaps: list) -> None:
        self.snaps.extend(snaps)
        if snaps:
            self.cursor = max(self.cursor, snaps[-1]["step"])
        while len(self.snaps) > self.cap:
            last = self.snaps[-1]
            self.snaps = self.snaps[:-1:2] + [last]


def sample_steps(steps: list[int], k: int) -> list[int]:
    """At most k of the given (sorted) steps, evenly spread, always with the last one."""
    if len(steps) <= k:
        return list(steps)
    idx = np.unique(np.linspace(0, len(steps) - 1, k).round().astype(int))
    return [steps[i] for i in idx]


def rebin(edges, counts, grid: np.ndarray) -> np.ndarray:
    """Counts of one histogram (its own edges) spread onto the common bin edges `grid`, assuming
    values are uniform inside each source bin: the cumulative count is then piecewise linear
    between the edges, and each grid bin gets its increase (one np.interp, no loop over bins)."""
    e = np.asarray(edges, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    out = np.zeros(len(grid) - 1)
    if len(c) == 0 or not np.isfinite(e).all():
        return out
    if not e[-1] > e[0]:  # a one-valued histogram: all mass at that value
        j = int(np.clip(np.searchsorted(grid, e[0], side="right") - 1, 0, len(out) - 1))
        out[j] = c.sum()
        return out
    below = np.concatenate([[0.0], np.cumsum(c)])  # mass below each source edge
    return np.diff(np.interp(grid, e, below))
