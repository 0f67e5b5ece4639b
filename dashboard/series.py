"""Bounded, min-max downsampled series: what a live panel keeps between refreshes.

A `Buckets` holds a scalar series as consecutive buckets of steps. A bucket that holds one step is
that step's value; a wider one keeps its min and max (and where they were), its sum and its count.
New points are appended as one-step buckets; when there are more than `cap` buckets, neighbours are
merged into buckets of a common width, so memory stays bounded and spikes survive (min-max
decimation). Plotting a `Buckets` never sends more than 2 * cap points per trace.

The EMA runs over buckets: a bucket of n finite values moves the average as n steps would,
ema = w**n * ema + (1 - w**n) * mean. With one step per bucket it is exactly the usual
ema = w * ema + (1 - w) * value (pandas' ewm(alpha=1 - w, adjust=False)).

Pure numpy: no Streamlit, no store.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CAP = 2000                  # buckets per series: at most 2 * CAP = 4,000 points per trace
HIST_CAP = 200              # histogram snapshots kept per layer and kind


def _f(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _i(a) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


@dataclass
class Buckets:
    s0: np.ndarray = field(default_factory=lambda: _i([]))     # first step in the bucket
    s1: np.ndarray = field(default_factory=lambda: _i([]))     # last step in the bucket
    vmin: np.ndarray = field(default_factory=lambda: _f([]))   # NaN when no finite value
    vmax: np.ndarray = field(default_factory=lambda: _f([]))
    smin: np.ndarray = field(default_factory=lambda: _i([]))   # where the min was (approximate after SQL bucketing)
    smax: np.ndarray = field(default_factory=lambda: _i([]))
    vsum: np.ndarray = field(default_factory=lambda: _f([]))   # sum of the finite values
    n: np.ndarray = field(default_factory=lambda: _i([]))      # number of finite values

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_points(cls, steps, values) -> "Buckets":
        """One bucket per step. None, NaN and inf count as missing (non-finite)."""
        s = _i(steps)
        v = _f(values) if len(values) else _f([])                   # None becomes NaN
        ok = np.isfinite(v)
        v = np.where(ok, v, np.nan)
        return cls(s, s.copy(), v, v.copy(), s.copy(), s.copy(), np.where(ok, v, 0.0), ok.astype(np.int64))

    @classmethod
    def from_rows(cls, rows) -> "Buckets":
        """From SQL bucketing rows (s0, s1, vmin, vmax, vsum, n); min and max placed mid-bucket."""
        if not rows:
            return cls()
        s0, s1, vmin, vmax, vsum, n = (list(c) for c in zip(*rows))
        s0, s1 = _i(s0), _i(s1)
        mid = (s0 + s1) // 2
        return cls(s0, s1, _f(vmin), _f(vmax), mid, mid.copy(), _f(vsum), _i(n))

    def __len__(self) -> int:
        return len(self.s0)

    @property
    def last_step(self) -> int:
        return int(self.s1[-1]) if len(self) else -1

    @property
    def steps_covered(self) -> int:
        return int((self.s1 - self.s0 + 1).sum()) if len(self) else 0

    def append(self, other: "Buckets", cap: int = CAP) -> "Buckets":
        """This series followed by `other` (later steps), compacted to at most cap buckets."""
        out = Buckets(*(np.concatenate([getattr(self, f), getattr(other, f)]) for f in _FIELDS))
        return out.compact(cap) if len(out) > cap else out

    def compact(self, cap: int = CAP) -> "Buckets":
        """Merge neighbours into buckets of a common step width so that at most cap remain."""
        if len(self) <= cap:
            return self
        first, last = int(self.s0[0]), int(self.s1[-1])
        width = max(1, -(-(last - first + 1) // max(1, cap // 2)))
        while True:
            group = (self.s0 - first) // width
            starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
            if len(starts) <= cap:
                break
            width *= 2
        return self._merge(starts)

    def _merge(self, starts: np.ndarray) -> "Buckets":
        ends = np.r_[starts[1:], len(self)] - 1
        with np.errstate(invalid="ignore"):
            vmin = np.fmin.reduceat(self.vmin, starts)
            vmax = np.fmax.reduceat(self.vmax, starts)
        smin = self.smin[_arg_reduce(self.vmin, starts, np.nanargmin)]
        smax = self.smax[_arg_reduce(self.vmax, starts, np.nanargmax)]
        return Buckets(self.s0[starts], self.s1[ends], vmin, vmax, smin, smax,
                       np.add.reduceat(self.vsum, starts), np.add.reduceat(self.n, starts))

    # -- reading ---------------------------------------------------------------------------

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The min-max decimated series: one point for a one-step bucket, else its min and its
        max in step order. At most 2 * len(self) points."""
        single = (self.s0 == self.s1) | ~(self.vmin != self.vmax)
        first_is_min = self.smin <= self.smax
        xa = np.where(first_is_min, self.smin, self.smax)
        ya = np.where(first_is_min, self.vmin, self.vmax)
        xb = np.where(first_is_min, self.smax, self.smin)
        yb = np.where(first_is_min, self.vmax, self.vmin)
        xa = np.where(single, self.s0, xa)
        x = np.stack([xa, xb], axis=1).reshape(-1)
        y = np.stack([ya, yb], axis=1).reshape(-1)
        keep = np.stack([np.ones_like(single), ~single], axis=1).reshape(-1)
        return x[keep], y[keep]

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.vsum / np.maximum(self.n, 1), np.nan)

    def centers(self) -> np.ndarray:
        return (self.s0 + self.s1) / 2.0

    def ema(self, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
        """(x, smoothed): the EMA with weight `smoothing` in [0, 1), one value per bucket.
        Missing values keep the previous average."""
        mean, n = self.mean(), self.n
        out = np.full(len(self), np.nan)
        avg = np.nan
        for i in range(len(self)):
            if n[i] > 0 and np.isfinite(mean[i]):
                keep = smoothing ** n[i]
                avg = mean[i] if np.isnan(avg) else keep * avg + (1.0 - keep) * mean[i]
            out[i] = avg
        return self.centers(), out

    def value_at(self, steps) -> np.ndarray:
        """The series' (bucket mean) value at each step, interpolated; NaN when empty."""
        if not len(self):
            return np.full(len(steps), np.nan)
        m = self.mean()
        ok = np.isfinite(m)
        if not ok.any():
            return np.full(len(steps), np.nan)
        return np.interp(_f(steps), self.centers()[ok], m[ok])


_FIELDS = ("s0", "s1", "vmin", "vmax", "smin", "smax", "vsum", "n")


def _arg_reduce(values: np.ndarray, starts: np.ndarray, argfn) -> np.ndarray:
    """Index (into values) of each group's argmin/argmax, ignoring NaN (first index if all NaN)."""
    ends = np.r_[starts[1:], len(values)]
    out = np.empty(len(starts), dtype=np.int64)
    for j, (a, b) in enumerate(zip(starts, ends)):
        seg = values[a:b]
        out[j] = a + (argfn(seg) if np.isfinite(seg).any() else 0)
    return out


def downsample(steps, values, max_points: int = 2 * CAP) -> tuple[np.ndarray, np.ndarray]:
    """Min-max decimation of a full-resolution series to at most max_points points."""
    return Buckets.from_points(steps, values).compact(max(1, max_points // 2)).points()


def ema(values, smoothing: float) -> np.ndarray:
    """The plain EMA of a full-resolution series (the reference the bucketed one matches)."""
    return Buckets.from_points(np.arange(len(values)), values).ema(smoothing)[1]


# ---------------------------------------------------------------------------------------------
# histogram snapshots

@dataclass
class HistBuffer:
    """Up to cap histogram snapshots of one layer and kind, thinned evenly as they arrive
    (every other one is dropped, the newest always kept)."""
    snaps: list = field(default_factory=list)    # dicts: step, edges, counts, nonfinite
    cursor: int = -1                              # last step read from the store
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
    e = _f(edges)
    c = _f(counts)
    out = np.zeros(len(grid) - 1)
    if len(c) == 0 or not np.isfinite(e).all():
        return out
    if not e[-1] > e[0]:                        # a one-valued histogram: all mass at that value
        j = int(np.clip(np.searchsorted(grid, e[0], side="right") - 1, 0, len(out) - 1))
        out[j] = c.sum()
        return out
    below = np.concatenate([[0.0], np.cumsum(c)])      # mass below each source edge
    return np.diff(np.interp(grid, e, below))
    width = e[1:] - e[:-1]
    for i, n in enumerate(c):
        if n == 0:
            continue
        lo, hi = e[i], e[i + 1]
        if width[i] <= 0:                       # a one-valued histogram: all mass at lo
            j = int(np.clip(np.searchsorted(grid, lo, side="right") - 1, 0, len(out) - 1))
            out[j] += n
            continue
        overlap = np.clip(np.minimum(grid[1:], hi) - np.maximum(grid[:-1], lo), 0, None)
        out += n * overlap / width[i]
    return out
