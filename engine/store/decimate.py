"""Min-max decimation: a scalar series kept in bounded memory, its spikes intact.

Why min-max: a loss curve of a million steps cannot be drawn point by point (a browser trace slows
down at a few thousand points), and averaging or striding would hide exactly what a live view is
for: the one step where the loss spiked or went NaN. Keeping each bucket's min and max point (real
steps, real values) draws the same envelope as the full series with at most two points per bucket.

A `Buckets` holds a series as consecutive buckets of steps on a grid of `width` steps: bucket j holds
the steps j * width .. j * width + width - 1 that the series has. Width 1 is full resolution. When
there would be more than `cap` buckets, the width doubles until there are not, and buckets of the
same grid cell merge. Because the width is a power of two and the grid starts at step 0, merging is
exact, and a series appended in many small batches ends up the same as one appended at once. The
dashboard and the Visdom sink both use it. None, NaN and inf are missing values: skipped in a
bucket's min and max, drawn as a gap when a bucket has no finite value.

The EMA runs over buckets: a bucket of n finite values moves the average as n steps would,
ema = w**n * ema + (1 - w**n) * mean. With one step per bucket it is exactly the usual
ema = w * ema + (1 - w) * value (pandas' ewm(alpha=1 - w, adjust=False)).

Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CAP = 2000  # buckets per series: at most 2 * CAP = 4,000 points per trace


def _f(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _i(a) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


@dataclass
class Buckets:
    # one entry per bucket, in step order; steps increase
    s0: np.ndarray = field(default_factory=lambda: _i([]))  # first step in the bucket
    s1: np.ndarray = field(default_factory=lambda: _i([]))  # last step in the bucket
    vmin: np.ndarray = field(default_factory=lambda: _f([]))  # NaN when no finite value
    vmax: np.ndarray = field(default_factory=lambda: _f([]))
    smin: np.ndarray = field(default_factory=lambda: _i([]))  # where the min was (approximate after SQL bucketing)
    smax: np.ndarray = field(default_factory=lambda: _i([]))
    vsum: np.ndarray = field(default_factory=lambda: _f([]))  # sum of the finite values
    n: np.ndarray = field(default_factory=lambda: _i([]))  # number of finite values
    width: int = 1  # grid cell in steps, a power of two

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_points(cls, steps, values) -> Buckets:
        """One bucket per step. None, NaN and inf count as missing (non-finite)."""
        s = _i(steps)
        v = _f(values) if len(values) else _f([])  # None becomes NaN
        ok = np.isfinite(v)
        v = np.where(ok, v, np.nan)
        return cls(s, s.copy(), v, v.copy(), s.copy(), s.copy(), np.where(ok, v, 0.0), ok.astype(np.int64))

    @classmethod
    def from_rows(cls, rows) -> Buckets:
        """From SQL bucketing rows (s0, s1, vmin, vmax, vsum, n); min and max placed mid-bucket.
        Their buckets need not lie on the grid; appends and compaction group them by s0."""
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

    def _take(self, sl: slice) -> Buckets:
        return Buckets(*(getattr(self, f)[sl] for f in _FIELDS), width=self.width)

    def append(self, other: Buckets, cap: int = CAP) -> Buckets:
        """This series followed by `other` (later steps) on this grid, compacted to at most cap buckets.
        Only this series' last bucket and `other` are regrouped: the cost is O(len(other)) plus copies."""
        width = max(self.width, other.width)
        tail = Buckets(*(np.concatenate([getattr(self, f)[-1:], getattr(other, f)]) for f in _FIELDS), width=width)
        tail = tail._regroup(width)
        out = Buckets(*(np.concatenate([getattr(self, f)[:-1], getattr(tail, f)]) for f in _FIELDS), width=width)
        return out.compact(cap)

    def compact(self, cap: int = CAP) -> Buckets:
        """At most cap buckets: the width doubles (from the least it can be) until they fit."""
        if len(self) <= cap:
            return self
        # a grid cell of w steps holds at most w bucket starts, so w >= len / cap
        width = max(self.width, 1 << (-(-len(self) // cap) - 1).bit_length())
        while np.count_nonzero(np.diff(self.s0 // width)) + 1 > cap:  # grid cells in use
            width *= 2
        return self._regroup(width)

    def _regroup(self, width: int) -> Buckets:
        """Merge the buckets whose first steps share a grid cell of `width` steps."""
        cell = self.s0 // width
        starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])  # (groups,) first bucket of each
        if len(starts) == len(self):
            return Buckets(*(getattr(self, f) for f in _FIELDS), width=width)
        ends = np.r_[starts[1:], len(self)] - 1
        imin = _first_extreme(self.vmin, starts, np.minimum, np.inf)
        imax = _first_extreme(self.vmax, starts, np.maximum, -np.inf)
        return Buckets(
            self.s0[starts],
            self.s1[ends],
            self.vmin[imin],
            self.vmax[imax],
            self.smin[imin],
            self.smax[imax],
            np.add.reduceat(self.vsum, starts),
            np.add.reduceat(self.n, starts),
            width=width,
        )

    # -- reading ---------------------------------------------------------------------------

    def points(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The min-max decimated series of buckets[start:stop]: per bucket its min and its max point in
        step order, one point when they are the same point, and one NaN point (a gap) at its first step
        when it has no finite value. At most 2 points per bucket."""
        b = self._take(slice(start, stop))
        empty = b.n == 0
        one = empty | ((b.smin == b.smax) & (b.vmin == b.vmax))  # the min point is the max point
        min_first = b.smin <= b.smax
        xa = np.where(min_first, b.smin, b.smax)  # (buckets,) first point
        ya = np.where(min_first, b.vmin, b.vmax)
        xb = np.where(min_first, b.smax, b.smin)  # (buckets,) second point
        yb = np.where(min_first, b.vmax, b.vmin)
        x = np.stack([xa, xb], axis=1).reshape(-1)  # (2 * buckets,) interleaved
        y = np.stack([ya, yb], axis=1).reshape(-1)
        keep = np.stack([np.ones_like(one), ~one], axis=1).reshape(-1)
        return x[keep], y[keep]

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.vsum / np.maximum(self.n, 1), np.nan)

    def centers(self) -> np.ndarray:
        return (self.s0 + self.s1) / 2.0

    def ema(self, smoothing: float, gaps: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(x, smoothed): the EMA with weight `smoothing` in [0, 1), one value per bucket.
        Missing values keep the previous average. With gaps (for a chart), a bucket with no finite
        value is NaN instead, and the average starts over after it: a smoothed line that breaks where
        the raw one does, rather than a held value drawn flat through a divergence and then the
        diverging values carried on into the recovered run."""
        mean, n = self.mean(), self.n
        out = np.full(len(self), np.nan)
        avg = np.nan
        for i in range(len(self)):
            if n[i] > 0 and np.isfinite(mean[i]):
                keep = smoothing ** n[i]
                avg = mean[i] if np.isnan(avg) else keep * avg + (1.0 - keep) * mean[i]
            elif gaps:
                avg = np.nan
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


def _first_extreme(values: np.ndarray, starts: np.ndarray, ufunc, fill: float) -> np.ndarray:
    """Index into values of the first min (ufunc np.minimum, fill inf) or max (np.maximum, -inf) of
    each group values[starts[j]:starts[j + 1]], NaN skipped; the group's first index when all are NaN."""
    v = np.where(np.isnan(values), fill, values)
    best = ufunc.reduceat(v, starts)  # (groups,)
    sizes = np.diff(np.r_[starts, len(v)])
    hits = np.flatnonzero(v == np.repeat(best, sizes))  # sorted; each group has one
    return hits[np.searchsorted(hits, starts)]


def downsample(steps, values, max_points: int = 2 * CAP) -> tuple[np.ndarray, np.ndarray]:
    """Min-max decimation of a full-resolution series to at most max_points points."""
    return Buckets.from_points(steps, values).compact(max(1, max_points // 2)).points()


def ema(values, smoothing: float) -> np.ndarray:
    """The plain EMA of a full-resolution series (the reference the bucketed one matches)."""
    return Buckets.from_points(np.arange(len(values)), values).ema(smoothing)[1]
