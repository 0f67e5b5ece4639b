"""Layer health: one ranked table, one row per layer, the worst at the top, each number outside its healthy band
marked; a row chosen opens that layer's charts. One overview instead of a panel per layer and measure.

    ranked(latest, dtype)   the rows (pure: tested without Streamlit)
    table(db, f, run)       the Health view's table and the chosen layer's charts
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import streamlit as st

from engine.modes.gradcheck import GRADCHECK_TOL

from . import figures, histograms

# the table's columns: the stored series' kind (KIND/LAYER), its heading
COLUMNS = {
    "grad_norm": "gradient norm",
    "update_ratio": "update ratio",
    "dead": "dead units",
    "nonfinite": "non-finite",
    "gradcheck": "gradient check",
}
GRAD_SPREAD = 100.0  # a gradient norm this many times below or above the layers' median: vanishing or exploding
DEAD_BAD = 0.5  # a share of units that never activate above this: half the layer no longer learns
ZERO_BELOW = 10.0  # the severity of a 0 under a positive band (a gradient of exactly 0): ten decades below
BAD = "background-color: rgba(255, 75, 75, 0.35)"


def bands(latest: dict[str, dict[str, float]], dtype: str) -> dict[str, tuple[float, float]]:
    """Each column's healthy band [lo, hi]. The gradient norm's is relative: within GRAD_SPREAD of the layers'
    median. The update ratio's: a factor of 10 either side of the ~1e-3 rule of thumb (figures.RATIO_GUIDE)."""
    norms = sorted(v for v in latest.get("grad_norm", {}).values() if math.isfinite(v) and v > 0)
    median = norms[len(norms) // 2] if norms else 0.0
    return {
        "grad_norm": (median / GRAD_SPREAD, median * GRAD_SPREAD) if norms else (0.0, math.inf),
        "update_ratio": (figures.RATIO_GUIDE / 10, figures.RATIO_GUIDE * 10),
        "dead": (0.0, DEAD_BAD),
        "nonfinite": (0.0, 0.0),
        "gradcheck": (0.0, GRADCHECK_TOL.get(dtype, GRADCHECK_TOL["float32"])),
    }


def _severity(col: str, value: float, lo: float, hi: float) -> float:
    """0 inside [lo, hi]; outside, how far: decades for a positive bound, the excess over a bound of 0; inf for a
    non-finite value, or a count of them above 0, which rank first; ZERO_BELOW for a 0 under a positive bound."""
    if not math.isfinite(value) or (col == "nonfinite" and value > 0):
        return math.inf
    if lo <= value <= hi:
        return 0.0
    if value < lo:
        return math.log10(lo / value) if value > 0 else ZERO_BELOW
    return math.log10(value / hi) if hi > 0 else value


@dataclass
class Row:
    layer: str
    values: dict[str, float]  # column -> the layer's latest value (non-finite: the most in one snapshot)
    outside: dict[str, float] = field(default_factory=dict)  # column -> severity, for those outside their band

    @property
    def rank_key(self) -> tuple:
        """Worst first: a non-finite number, then more columns outside, then how far outside."""
        finite = [s for s in self.outside.values() if math.isfinite(s)]
        return (-sum(1 for s in self.outside.values() if not math.isfinite(s)), -len(self.outside), -sum(finite))


def ranked(latest: dict[str, dict[str, float]], dtype: str = "float32") -> list[Row]:
    """One row per layer of `latest` (column -> {layer: value}), the worst at the top; layers in equal health
    keep their order in `latest` (the model's). A column the run does not have (no dead-unit series, a mode
    without a gradient check) is absent from every row."""
    band = bands(latest, dtype)
    layers = list(dict.fromkeys(layer for col in COLUMNS for layer in latest.get(col, {})))
    rows = []
    for layer in layers:
        values = {c: latest[c][layer] for c in COLUMNS if layer in latest.get(c, {})}
        outside = {c: s for c, v in values.items() if (s := _severity(c, v, *band[c])) > 0}
        rows.append(Row(layer, values, outside))
    order = {layer: i for i, layer in enumerate(layers)}
    return sorted(rows, key=lambda r: (r.rank_key, order[r.layer]))


def latest_of(db, f, run_id: str) -> dict[str, dict[str, float]]:
    """Each column's latest value per layer from the store; non-finite: the most counted in one snapshot of
    the layer's weights or gradient (a divergence's count stays after the finite weights are put back)."""
    out = {col: {} for col in COLUMNS}
    for key in f.keys:
        kind, _, layer = key.partition("/")
        col = "dead" if "dead" in kind else kind
        if layer and col in out and col != "nonfinite":
            _, value = db.last_value(run_id, key)
            if value is not None:
                out[col][layer] = value
    f.sync_nonfinite(db)  # incremental, per layer: f.series["nonfinite/KIND/LAYER"]
    for key, b in f.series.items():
        if key.startswith("nonfinite/") and len(b):
            layer = key.split("/", 2)[2]
            out["nonfinite"][layer] = max(out["nonfinite"].get(layer, 0), float(np.nanmax(b.vmax)))
    return {col: v for col, v in out.items() if v}


def _frame(rows: list[Row]):
    """The rows as a pandas Styler: numbers in short form as text ("–" where a layer has no such value: the grid
    would read "None"), the cells outside their band shaded."""
    cols = [c for c in COLUMNS if any(c in r.values for r in rows)]

    def text(c, v):
        return "–" if v is None or math.isnan(v) else f"{v:.0f}" if c == "nonfinite" else f"{v:.3g}"

    data = pd.DataFrame(
        [{"layer": r.layer, **{COLUMNS[c]: text(c, r.values.get(c)) for c in cols}} for r in rows],
        columns=["layer"] + [COLUMNS[c] for c in cols],
    )
    shade = pd.DataFrame("", index=data.index, columns=data.columns)
    for i, r in enumerate(rows):
        for c in r.outside:
            shade.loc[i, COLUMNS[c]] = BAD
    return data.style.apply(lambda _: shade, axis=None)


def table(db, f, run: dict):
    """The ranked table on the Health view; choosing a row draws that layer's gradient norm, update ratio and
    gradient histograms below it."""
    rows = ranked(latest_of(db, f, run["id"]), run["config"].get("dtype", "float32"))
    st.caption(
        "Layer health, the worst at the top; shaded: outside its healthy band (gradient norm within 100x of the "
        "layers' median, update ratio 1e-4 to 1e-2, dead units at most half, no non-finite value, the gradient "
        "check within its dtype's tolerance). Choose a row for that layer's charts."
    )
    if not rows:
        st.info("None yet: the first snapshot brings it.")
        return
    event = st.dataframe(
        _frame(rows), key="health_table", on_select="rerun", selection_mode="single-row", hide_index=True
    )
    chosen = event.selection.rows if event else []
    if not chosen:
        return
    layer = rows[chosen[0]].layer
    c1, c2 = st.columns(2)
    c1.plotly_chart(figures.grad_norm_figure({layer: f.sync(db, f"grad_norm/{layer}")}), key="health_grad")
    c2.plotly_chart(figures.update_ratio_figure({layer: f.sync(db, f"update_ratio/{layer}")}), key="health_ratio")
    snaps = f.sync_hist(db, "grad", layer).snaps
    if snaps:
        st.plotly_chart(
            histograms.hist_heatmap(snaps, f"Gradients of {layer}: distribution over time"), key="health_hist"
        )
