"""A log axis's labels, the same on the dashboard's charts and in Visdom's windows: a few plain ones, never
"1e+2 9e+1 8e+1 7e+1" piled up, never a bare mantissa, never SI's "1µ"."""

from __future__ import annotations

import numpy as np

MOST_TICKS = 6


def log_ticks(values) -> dict:
    """Plotly axis properties for a log axis over these values (the non-positive and non-finite are left out):
    at most MOST_TICKS labels, the powers of ten in range (every n-th over many decades); within a decade or
    two, 1, 2, 5 times them; within less, 1 to 9 times them."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)]
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
