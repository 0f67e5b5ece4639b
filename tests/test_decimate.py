"""Min-max decimation (engine.store.decimate) against its definition, written out in plain Python.

The reference: the width is the least power of two at which the series' steps fall into at most
cap cells of `width` steps (1 when the series has at most cap points); each cell is one bucket, and
a bucket shows its first minimum and its first maximum point in step order (one point when they are
the same), NaN, inf and None skipped, or (its first step, gap) when it has no finite value.
Seeded random cases (hypothesis is not installed here), plus the edge cases by name.
"""

from __future__ import annotations

import math
import random
from itertools import groupby

import numpy as np
import pytest

from engine.store.decimate import Buckets, downsample

FIELDS = ("s0", "s1", "vmin", "vmax", "smin", "smax", "vsum", "n")


def finite(v):
    return v is not None and math.isfinite(v)


def reference(steps, values, cap):
    """(width, buckets, points): buckets as (s0, s1, n, sum of finite values); points as (step, value or None)."""
    width = 1
    if len(steps) > cap:
        while len({s // width for s in steps}) > cap:
            width *= 2
    buckets, points = [], []
    for _, cell in groupby(zip(steps, values), key=lambda p: p[0] // width):
        cell = list(cell)
        ok = [(s, v) for s, v in cell if finite(v)]
        buckets.append((cell[0][0], cell[-1][0], len(ok), sum(v for _, v in ok)))
        if not ok:
            points.append((cell[0][0], None))
            continue
        lo = min(ok, key=lambda p: p[1])  # min() and max() return the first of equals
        hi = max(ok, key=lambda p: p[1])
        points += sorted({lo, hi})
    return width, buckets, points


def as_points(x, y):
    return [(int(s), float(v) if math.isfinite(v) else None) for s, v in zip(x, y)]


def check(b: Buckets, steps, values, cap):
    width, buckets, points = reference(steps, values, cap)
    assert len(b) <= cap
    assert b.width == width
    assert [tuple(r) for r in zip(b.s0.tolist(), b.s1.tolist(), b.n.tolist())] == [r[:3] for r in buckets]
    np.testing.assert_allclose(b.vsum, [r[3] for r in buckets], rtol=1e-9, atol=1e-6)  # spikes of 1e9 cancel
    assert as_points(*b.points()) == points


def random_series(rng: random.Random, n: int):
    """Increasing steps (dense, or sparse with gaps), values with NaN, inf, None, runs of missing
    values, spikes and plateaus."""
    start = rng.choice([0, 1, 7, 1000, 2**20 + 3])
    if rng.random() < 0.5:
        steps = list(range(start, start + n))
    else:
        steps = sorted(rng.sample(range(start, start + 5 * n + 10), n))
    missing = rng.choice([0.0, 0.05, 0.5, 0.95, 1.0])
    values = []
    for i in range(n):
        if rng.random() < missing:
            values.append(rng.choice([None, float("nan"), float("inf"), -float("inf")]))
        elif rng.random() < 0.02:
            values.append(rng.choice([1e9, -1e9]))  # a spike
        elif rng.random() < 0.2:
            values.append(float(rng.randint(0, 3)))  # ties and plateaus
        else:
            values.append(rng.gauss(0, 1) + 1.0 / (1 + i))
    if n > 20 and rng.random() < 0.5:  # a long all-missing run
        a, m = rng.randrange(n - 10), rng.randint(5, n // 2)
        values[a : a + m] = [float("nan")] * len(values[a : a + m])
    return steps, values


def case(seed):
    rng = random.Random(seed)
    return seed, rng.choice([rng.randrange(10), rng.randrange(3000)]), rng.choice([1, 2, 3, 7, 50, 500, 4000])


CASES = [case(seed) for seed in range(60)]


@pytest.mark.parametrize("seed,n,cap", CASES)
def test_compact_matches_the_reference(seed, n, cap):
    steps, values = random_series(random.Random(seed), n)
    check(Buckets.from_points(steps, values).compact(cap), steps, values, cap)


@pytest.mark.parametrize("seed,n,cap", CASES[::3])
def test_many_small_appends_equal_one_batch(seed, n, cap):
    rng = random.Random(1000 + seed)
    steps, values = random_series(rng, n)
    whole = Buckets.from_points(steps, values).compact(cap)
    b, i = Buckets(), 0
    while i < n:
        k = rng.choice([1, 1, 2, 5, 40, 300])
        b = b.append(Buckets.from_points(steps[i : i + k], values[i : i + k]), cap)
        i += k
        check(b, steps[:i], values[:i], cap)  # after every append, not only at the end
    assert b.width == whole.width
    for f in FIELDS:  # exactly, but for the order of summation in vsum
        np.testing.assert_allclose(
            getattr(b, f),
            getattr(whole, f),
            rtol=0 if f != "vsum" else 1e-9,
            atol=0 if f != "vsum" else 1e-6,
            err_msg=f,
        )
    # the tail of a series is its points from a bucket on (how the Visdom sink sends appends)
    k = len(b) // 2
    head, tail = as_points(*b.points(0, k)), as_points(*b.points(k))
    assert head + tail == as_points(*b.points())


def test_edge_cases():
    nan, inf = float("nan"), float("inf")
    cases = [
        ([], []),  # empty
        ([5], [2.0]),  # a single point
        ([5], [nan]),  # a single gap
        (list(range(8)), [nan] * 8),  # all missing
        (list(range(16)), [1.0] * 7 + [50.0] + [1.0] * 8),  # one spike in a plateau
        (list(range(16)), [nan] * 4 + [3.0, -inf, None, 1.0] + [nan] * 4 + [inf, 2.0, 2.0, nan]),
        ([0, 1, 1000, 1001], [4.0, 3.0, 2.0, 1.0]),  # far apart
    ]
    for steps, values in cases:
        for cap in (1, 2, 3, 100):
            check(Buckets.from_points(steps, values).compact(cap), steps, values, cap)


def test_spikes_survive_a_million_steps():
    steps = np.arange(1_000_000)
    values = np.sin(steps / 5000.0)
    values[123_457], values[654_321], values[999_999] = 1e6, -1e6, np.nan
    x, y = downsample(steps, values, 4000)
    assert 2000 <= len(x) <= 4000
    assert x[np.nanargmax(y)] == 123_457 and x[np.nanargmin(y)] == 654_321
    assert np.all(np.diff(x) > 0)


def test_downsample_matches_the_reference():
    steps, values = random_series(random.Random(7), 2500)
    for max_points in (2, 3, 10, 999, 6000):
        x, y = downsample(steps, values, max_points)
        assert len(x) <= max_points
        assert as_points(x, y) == reference(steps, values, max(1, max_points // 2))[2]


def test_sql_rows_show_min_and_max_mid_bucket():
    """Store-side bucketing gives (s0, s1, vmin, vmax, vsum, n) without where the extremes were."""
    b = Buckets.from_rows([(0, 9, -1.0, 3.0, 10.0, 10), (10, 19, 2.0, 2.0, 20.0, 10), (20, 29, None, None, 0.0, 0)])
    assert as_points(*b.points()) == [(4, -1.0), (4, 3.0), (14, 2.0), (24, None)]
    b = b.append(Buckets.from_points([30, 31], [5.0, float("nan")]), cap=2)
    assert b.width == 16 and as_points(*b.points()) == [(4, -1.0), (4, 3.0), (30, 5.0)]  # cells 0-15, 16-31


def test_ema_with_gaps_breaks_where_no_value_is_finite_and_starts_over():
    """For a chart: the smoothed line has a gap wherever a bucket has no finite value (a divergence),
    instead of the held average drawn flat through it, and starts over after it."""
    nan, inf = float("nan"), float("inf")
    values = [1.0, 3.0, 1e30, nan, inf, None, 2.0, 4.0]
    b = Buckets.from_points(range(len(values)), values)
    _, held = b.ema(0.5)
    assert held[3] == held[4] == held[5] == held[2]  # the default: held over missing values
    _, out = b.ema(0.5, gaps=True)
    np.testing.assert_array_equal(out[:3], held[:3])
    assert np.isnan(out[3:6]).all()
    assert out[6] == 2.0 and out[7] == 3.0  # a fresh start, not the diverging 1e30 carried on
    # on a coarser grid a bucket holding any finite value is drawn; one with none is a gap
    c = Buckets.from_points(range(8), [1.0, nan, nan, nan, nan, nan, 5.0, 5.0]).compact(4)
    assert c.width == 2 and np.isnan(c.ema(0.5, gaps=True)[1]).tolist() == [False, True, True, False]
