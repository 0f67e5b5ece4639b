"""Do two computations of the same thing agree? The gradient check's tolerance and verdict, and the
largest gap between the compare view's loss curves. Pure Python and numpy, no torch: the dashboard
imports it.

The gradient check (engine/loop/telemetry.py `grad_ratio`) records per layer, every K steps,
    ||g_hand - g_ref|| / ||g_ref||        (vector norms over the whole layer)
where g_ref is what the mode's reference_grads returns: autograd's gradient of the same step, with a
ReLU that has the lecture's derivative at 0 (engine/modes/functions.py lecture_relu), for manual mode
(against the hand-written backward) and custom_function (against MyReLU's backward). It is the
normwise relative error, the quantity that rounding error bounds are stated for; the check it
replaces, max |g - r| / max |r|, set the worst entry's error against the largest entry.

Measured (CPU, torch 2.14, manual mode, 3,000-5,000 steps, the ratio at every step):
    - the lecture's loop (N, D_in, H, D_out = 64, 1000, 100, 10, lr 1e-6, sse) and an MLP of depth 4
      on sse, float32 and float64: the hand-written gradients equal autograd's bit for bit (ratio 0),
      except at steps where a pre-activation h is exactly 0.0 (below);
    - the depth-4 MLP on mse and cross_entropy, whose hand-written loss gradients round differently
      from autograd's: at most 2.4e-6 (about 20 eps) in float32, 3.6e-15 (about 16 eps) in float64;
    - a gradient scaled by 1.01 reads 1.0e-2; the lecture's loop without its ReLU mask reads 0.87 (step 0).
Where a pre-activation is exactly 0.0 the two differ for real, not by rounding: the lecture's mask
`grad_h[h < 0] = 0` passes the gradient at h == 0, and autograd's ReLU (clamp or relu) does not. In
float32, training lands a few pre-activations on 0.0 exactly: in the lecture's loop (seed 0) first at
step 169, with ratios up to 0.085 (w1) and the old check up to 0.36; in the depth-4 MLP up to 0.42.
Those were the old check's float32 alarms: a convention at a kink, not a wrong gradient. So the
reference now makes the lecture's choice at 0 (lecture_relu), and the ratio is 0 there too;
tests/test_gradcheck.py shows both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Machine epsilon of each dtype the engine trains in (engine/config/fields.py DTYPES).
EPS = {"float32": 2.0**-23, "float64": 2.0**-52}

# The tolerance: 2**10 eps, about 1,000 eps (float32 1.2e-4, float64 2.3e-13). Why that many: a matmul
# with inner dimension n rounds each entry by up to about n * eps relative to the sum of its terms'
# magnitudes (Higham's gamma_n), and the lecture's widest inner dimension is D_in = 1000; the errors of
# a few layers add, but mostly average out in a norm. Measured (above): at most about 20 eps, so the
# tolerance sits 50x above what rounding gave, and 80x below a gradient scaled by 1.01 (1e-2).
# bfloat16 and float16 have no entry: the engine does not train in them, and 2**10 eps would be 8 and
# 1 there, too loose to catch anything.
GRADCHECK_TOL = {dtype: 2.0**10 * eps for dtype, eps in EPS.items()}


@dataclass(frozen=True)
class Verdict:
    agree: bool | None  # None: nothing to judge (no checks yet, or no tolerance for the dtype)
    text: str  # one line for a person, no markup
    layer: str | None = None  # the first layer above the tolerance
    step: int | None = None  # the first step where it was

    def __str__(self) -> str:
        return self.text


def _points(series) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a (steps, values) pair or of a decimated series (engine.store.decimate.Buckets)."""
    if hasattr(series, "points"):
        return series.points()
    steps, values = series
    return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)


def gradcheck_verdict(series_by_layer: dict, dtype: str) -> Verdict:
    """The run's gradient check in one line: "agree to float32 rounding" when every layer stayed
    within GRADCHECK_TOL[dtype], else "disagree in layer X from step N", N the first step at which a
    layer went above it (the first such layer, in the given order, when several did at that step).

    series_by_layer: layer -> (steps, values), or a Buckets. From Buckets the steps are exact while the
    series is at full resolution (the dashboard's feed keeps 2,000 points per series); after that, N is
    the first decimated point above the tolerance. Non-finite values (NaN gradients after a
    divergence) say nothing about the gradient code: they are skipped, and counted in the text."""
    tol = GRADCHECK_TOL.get(dtype)
    if tol is None:
        return Verdict(None, f"no gradient check tolerance for {dtype}")
    first, worst, checks, skipped = None, 0.0, 0, 0
    for layer, series in series_by_layer.items():
        steps, values = _points(series)
        finite = np.isfinite(values)
        skipped += int((~finite).sum())
        steps, values = steps[finite], values[finite]
        checks += len(values)
        if len(values):
            worst = max(worst, float(values.max()))
        above = np.flatnonzero(values > tol)
        if len(above) and (first is None or steps[above[0]] < first[1]):
            first = (layer, int(steps[above[0]]), float(values[above[0]]))
    note = f"; {skipped} checks with non-finite gradients not judged" if skipped else ""
    if first is not None:
        layer, step, value = first
        return Verdict(
            False,
            f"disagree in layer {layer} from step {step} (norm ratio {value:.2g}, {dtype} tolerance {tol:.2g}){note}",
            layer,
            step,
        )
    if not checks:
        return Verdict(None, f"no gradient checks yet{note}")
    return Verdict(
        True, f"agree to {dtype} rounding (largest norm ratio {worst:.2g}, tolerance {tol:.2g}, {checks} checks){note}"
    )


# ---------------------------------------------------------------------------------------------
# the compare view: how far apart the loss curves are


@dataclass(frozen=True)
class Gap:
    value: float  # max over common steps of |loss_a - loss_b| / |loss_b|; NaN when nothing to compare
    a: str | None = None  # the pair and the step where it is largest
    b: str | None = None
    step: int | None = None
    steps: int = 0  # the fewest common steps (or buckets) any compared pair had
    exact: bool = True  # every compared value was one step's loss, not a bucket's mean

    def __str__(self) -> str:
        if math.isnan(self.value):
            return "No common steps between the loss curves yet."
        where = f"over {self.steps:,} common steps" if self.exact else f"over {self.steps:,} common buckets (means)"
        if self.value == 0:
            return f"The loss curves are identical at every step compared ({where})."
        return (
            f"Largest gap between the loss curves: {self.value:.2g} of the loss "
            f"({self.a} vs {self.b} at step {self.step:,}; {where})."
        )


def _by_span(series) -> dict[tuple[int, int], float]:
    """{(first step, last step): value}: one entry per step at full resolution; per bucket (its mean)
    for a decimated series whose buckets span several steps."""
    if hasattr(series, "mean"):
        return {(int(a), int(b)): float(v) for a, b, v in zip(series.s0, series.s1, series.mean())}
    steps, values = series
    return {(int(s), int(s)): float(v) for s, v in zip(steps, values)}


def loss_gap(named: dict) -> Gap:
    """The largest relative gap between loss curves: over every pair (a, b) of the named series, b the
    later one in the given order, the max over their common steps of |loss_a - loss_b| / |loss_b|.
    Non-finite losses are skipped; a step where loss_b is 0 and loss_a is not counts as inf.

    named: label -> (steps, values) or Buckets. Steps are common when both series have them; for
    Buckets, when both have a bucket with the same first and last step (compared by their means)."""
    spans = {name: _by_span(s) for name, s in named.items()}
    names = list(spans)
    best, fewest, exact = (math.nan, None, None, None), None, True
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = [k for k in spans[a] if k in spans[b]]
            va = np.array([spans[a][k] for k in common], dtype=np.float64)
            vb = np.array([spans[b][k] for k in common], dtype=np.float64)
            ok = np.isfinite(va) & np.isfinite(vb)
            if not ok.any():
                continue
            va, vb, at = va[ok], vb[ok], [k for k, keep in zip(common, ok) if keep]
            diff = np.abs(va - vb)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(diff == 0, 0.0, diff / np.abs(vb))  # x / 0 = inf for x > 0
            j = int(np.argmax(rel))
            if math.isnan(best[0]) or rel[j] > best[0]:
                best = (float(rel[j]), a, b, at[j][0])
            fewest = len(rel) if fewest is None else min(fewest, len(rel))
            exact = exact and all(s0 == s1 for s0, s1 in at)
    return Gap(*best, steps=fewest or 0, exact=exact)
