"""The layer health table (dashboard/health.py): one row per layer, the worst at the top, what is outside its healthy
band marked and shaded; read from a real run's store."""

from __future__ import annotations

import math

from dashboard import health
from dashboard.feed import RunFeed
from engine.store.db import Store

HEALTHY = {"grad_norm": 1.0, "update_ratio": 1e-3, "dead": 0.1, "nonfinite": 0, "gradcheck": 0.0}


def latest(**layers):
    """{column: {layer: value}} from {layer: {column: value}}, each layer healthy but for what it says."""
    out = {}
    for layer, odd in layers.items():
        for col, v in {**HEALTHY, **odd}.items():
            out.setdefault(col, {})[layer] = v
    return out


def test_the_worst_layers_come_first_and_each_number_outside_its_band_is_marked():
    rows = health.ranked(
        latest(
            w1={},
            w2={"update_ratio": 0.5},  # 1.7 decades over 1e-2
            w3={"nonfinite": 3},  # a non-finite number outranks everything
            w4={"dead": 0.9, "update_ratio": 2e-2},  # two columns outside
            w5={"grad_norm": 1e4},  # 2 decades over the 100x band around the median (1.0)
            w6={},
        ),
        "float32",
    )
    assert [r.layer for r in rows] == ["w3", "w4", "w5", "w2", "w1", "w6"]  # equal health: the model's order
    by = {r.layer: r for r in rows}
    assert math.isinf(by["w3"].outside["nonfinite"]) and set(by["w4"].outside) == {"dead", "update_ratio"}
    assert by["w5"].outside["grad_norm"] == 2.0 and 1.69 < by["w2"].outside["update_ratio"] < 1.7
    assert by["w1"].outside == {} and by["w6"].outside == {}


def test_a_gradient_check_is_judged_by_its_dtype_and_a_missing_series_is_no_column():
    loose = {"gradcheck": {"w1": 1e-9, "w2": 0.0}, "grad_norm": {"w1": 1.0, "w2": 1.0}}
    assert [r.outside for r in health.ranked(loose, "float32")] == [{}, {}]  # within 2^10 float32 eps
    rows = health.ranked(loose, "float64")
    assert rows[0].layer == "w1" and set(rows[0].outside) == {"gradcheck"}
    assert all("dead" not in r.values and "update_ratio" not in r.values for r in rows)
    zero = health.ranked({"grad_norm": {"a": 1.0, "b": 0.0, "c": 1.0}})
    assert zero[0].layer == "b" and zero[0].outside == {"grad_norm": health.ZERO_BELOW}  # a vanished gradient


def test_the_table_shades_the_cells_outside_their_band():
    values = latest(w1={}, w2={"update_ratio": 0.5, "nonfinite": 2})
    del values["dead"]["w1"]  # a layer without dead units (no ReLU after it)
    rows = health.ranked(values)
    styler = health._frame(rows)
    data = styler.data
    assert list(data.columns) == ["layer", *health.COLUMNS.values()] and list(data["layer"]) == ["w2", "w1"]
    styles = styler._compute().ctx  # (row, column index) -> [(property, value)]
    shaded = {(i, data.columns[j]) for (i, j), props in styles.items() if props and "255, 75, 75" in props[0][1]}
    assert shaded == {(0, "update ratio"), (0, "non-finite")}
    w1 = dict(zip(data.columns, data.loc[1]))  # short text; no value: a dash, not the grid's "None"
    assert (
        w1["dead units"] == "–" and w1["non-finite"] == "0" and w1["update ratio"] == f"{HEALTHY['update_ratio']:.3g}"
    )


def test_the_rows_of_real_runs_read_from_their_store(small, store, run_inprocess):
    """A healthy run, and one that diverges (lr 1e6): its non-finite counts stay in its rows, at the top."""
    healthy, _ = run_inprocess(small(mode="manual", steps=6, telemetry_every=2), store)
    diverged, status = run_inprocess(
        small(mode="manual", steps=8, telemetry_every=1, lr=1e6, on_divergence="stop"), store
    )
    assert status == "diverged"
    s = Store(store)
    got = {}
    for run_id in (healthy, diverged):
        f = RunFeed(run_id)
        f.sync_keys(s)
        got[run_id] = health.latest_of(s, f, run_id)
    s.close()
    assert set(got[healthy]) == {"grad_norm", "update_ratio", "gradcheck", "nonfinite", "dead"}  # manual has a check
    rows = health.ranked(got[healthy])
    layers = {r.layer: r for r in rows}  # the weights, and the ReLU whose dead units are counted (h_relu)
    assert set(layers) == {"w1", "w2", "relu1"} and set(layers["relu1"].values) == {"dead"}
    weights = [layers["w1"], layers["w2"]]
    assert all(r.values["nonfinite"] == 0 for r in weights)
    assert all(r.values["grad_norm"] > 0 and not r.outside.get("nonfinite") for r in weights)
    worst = health.ranked(got[diverged])[0]
    assert worst.values["nonfinite"] > 0 and math.isinf(worst.outside["nonfinite"])
