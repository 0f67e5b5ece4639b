"""Figure builders and the bounded series behind them: pure functions, checked on their output."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard import explain, figures, histograms
from dashboard.series import CAP, Buckets, HistBuffer, downsample, ema, rebin, sample_steps
from engine.modes.gradcheck import GRADCHECK_TOL
from engine.sinks.ticks import MOST_TICKS


def noisy_loss(n, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    return steps, 100 * np.exp(-steps / (n / 5)) + rng.random(n)


def max_points(fig: go.Figure) -> int:
    return max(len(t.x) for t in fig.data if t.x is not None)


# ---------------------------------------------------------------------------------------------
# series: downsampling and EMA


def test_downsample_bounds_and_keeps_extremes():
    steps, values = noisy_loss(1_000_000)
    values[123_457] = 1e6  # a spike
    values[654_321] = -5.0  # a dip
    x, y = downsample(steps, values, 4000)
    assert len(x) <= 4000
    assert y.max() == 1e6 and y.min() == -5.0
    assert 123_457 in x and 654_321 in x  # where they were, not just their values
    assert np.all(np.diff(x) >= 0)


def test_small_series_is_full_resolution():
    steps, values = noisy_loss(500)
    x, y = downsample(steps, values, 4000)
    np.testing.assert_array_equal(x, steps)
    np.testing.assert_array_equal(y, values)


@pytest.mark.parametrize("smoothing", [0.0, 0.6, 0.99])
def test_ema_matches_pandas(smoothing):
    _, values = noisy_loss(3000, seed=1)
    ref = pd.Series(values).ewm(alpha=1 - smoothing, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(ema(values, smoothing), ref, rtol=1e-12)


def test_ema_skips_missing_values():
    values = [1.0, None, float("nan"), 3.0]
    out = ema(values, 0.5)
    assert out[1] == out[2] == 1.0  # held over the gap
    assert out[3] == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)


def test_bucketed_ema_tracks_full_resolution_ema():
    steps, values = noisy_loss(200_000)
    b = Buckets.from_points(steps, values).compact(CAP)
    x, smooth = b.ema(0.999)
    ref = pd.Series(values).ewm(alpha=0.001, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(smooth, np.interp(x, steps, ref), rtol=0.02)


def test_append_stays_bounded_and_counts_every_step():
    b = Buckets()
    rng = np.random.default_rng(2)
    for start in range(0, 50_000, 997):
        steps = np.arange(start, min(start + 997, 50_000))
        b = b.append(Buckets.from_points(steps, rng.random(len(steps))), cap=500)
        assert len(b) <= 500
    assert b.steps_covered == 50_000 and int(b.n.sum()) == 50_000
    assert b.s0[0] == 0 and b.s1[-1] == 49_999


def test_hist_buffer_is_bounded_and_keeps_newest():
    buf = HistBuffer(cap=10)
    for s in range(100):
        buf.extend([{"step": s, "edges": [0, 1], "counts": [1], "nonfinite": 0}])
    assert len(buf.snaps) <= 10 and buf.snaps[-1]["step"] == 99 and buf.cursor == 99
    assert sample_steps(list(range(1000)), 5) == [0, 250, 500, 749, 999]


def test_rebin_keeps_the_mass():
    grid = np.linspace(-2, 2, 17)
    out = rebin([-1, 0, 1], [3, 5], grid)
    assert out.sum() == pytest.approx(8)
    assert out[grid[:-1] < -1].sum() == 0


def test_rebin_matches_the_overlap_of_each_source_bin():
    """Against the definition: each source bin's count spread over the grid bins it overlaps, in
    proportion to the overlap (values uniform inside a bin)."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        lo = rng.normal()
        edges = lo + np.sort(rng.random(9)) * rng.uniform(0.1, 5)
        counts = rng.integers(0, 50, 8).astype(float)
        grid = np.linspace(edges[0] - rng.random(), edges[-1] + rng.random(), 33)
        want = np.zeros(32)
        for i, n in enumerate(counts):
            overlap = np.clip(np.minimum(grid[1:], edges[i + 1]) - np.maximum(grid[:-1], edges[i]), 0, None)
            want += n * overlap / (edges[i + 1] - edges[i])
        assert rebin(edges, counts, grid) == pytest.approx(want, abs=1e-9)
    one_valued = rebin([0.35, 0.35], [7], np.linspace(0, 1, 11))
    assert one_valued[3] == 7 and one_valued.sum() == 7


# ---------------------------------------------------------------------------------------------
# figures


def test_loss_figure_raw_behind_smoothed_with_log_y():
    fig = figures.loss_figure(noisy_loss(1000), smoothing=0.9, log_y=True)
    assert [t.name for t in fig.data] == ["loss (raw)", "loss"]
    raw, smooth = fig.data
    assert "0.25" in raw.line.color and raw.line.width < smooth.line.width  # faint, behind
    assert fig.layout.yaxis.type == "log"
    assert figures.loss_figure(noisy_loss(10), log_y=False).layout.yaxis.type == "linear"


def test_loss_figure_downsamples_a_million_steps():
    fig = figures.loss_figure(noisy_loss(1_000_000))
    assert max_points(fig) <= 4000


def test_loss_figure_marks_lr_changes_at_their_steps():
    events = [
        {"step": 200, "kind": "lr_change", "data": {"old": 1e-3, "new": 1e-4}},
        {"step": 700, "kind": "lr_change", "data": {"old": 1e-4, "new": 1e-5}},
    ]
    fig = figures.loss_figure(noisy_loss(1000), lr_events=events)
    markers = [t for t in fig.data if t.name == "lr change"]
    assert len(markers) == 1 and list(markers[0].x) == [200, 700]
    assert np.all(np.isfinite(markers[0].y))
    assert sorted(s.x0 for s in fig.layout.shapes) == [200, 700]


def test_loss_figure_marks_divergence():
    fig = figures.loss_figure(noisy_loss(100), divergence={"step": 42, "layer": "w2"})
    assert any(s.x0 == 42 for s in fig.layout.shapes)
    assert any("w2" in a.text for a in fig.layout.annotations)


def test_a_loss_of_one_finite_point_is_drawn_as_a_marker():
    """A run that diverged at step 1 has one finite loss: as a bare line, the chart looked empty."""
    fig = figures.loss_figure((np.array([0, 1, 2]), np.array([2.7e7, np.nan, np.nan])), divergence={"step": 1})
    smoothed = fig.data[1]
    assert "markers" in smoothed.mode and np.isfinite(smoothed.y[0])
    assert figures.loss_figure(noisy_loss(1000)).data[1].mode == "lines"


def test_a_fork_is_drawn_dashed_from_the_step_it_forked_at():
    steps, values = noisy_loss(300)
    branch = (steps[120:], values[120:] / 2)  # a fork at step 120 with a lower loss
    fig = figures.loss_figure(noisy_loss(300), branches={"fork at step 120: adam lr 1e-3": branch})
    [fork] = [t for t in fig.data if t.name.startswith("fork at step 120")]
    assert fork.line.dash == "dash" and fork.x[0] == 120 and fork.line.color != fig.data[1].line.color
    assert np.nanmax(fork.y) < np.nanmax(fig.data[1].y)


def test_overlay_has_two_traces_per_run_and_is_bounded():
    named = {f"run{i}": noisy_loss(300_000, seed=i) for i in range(3)}
    fig = figures.overlay_figure(named)
    assert len(fig.data) == 6 and max_points(fig) <= 4000
    assert len({t.line.color for t in fig.data[1::2]}) == 3


def test_update_ratio_has_the_1e3_guide_band():
    named = {"w1": noisy_loss(50), "w2": noisy_loss(50, seed=3)}
    fig = figures.update_ratio_figure(named)
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and rects[0].y0 < 1e-3 < rects[0].y1
    assert any(s.type == "line" and s.y0 == 1e-3 for s in fig.layout.shapes)


@pytest.mark.parametrize("build", [figures.grad_norm_figure, figures.gradcheck_figure, figures.nonfinite_figure])
def test_per_layer_figures_one_trace_per_layer(build):
    named = {"w1": noisy_loss(20_000), "b1": noisy_loss(20_000, 1), "w2": noisy_loss(20_000, 2)}
    fig = build(named)
    assert [t.name.rstrip("s") for t in fig.data] == ["w1", "b1", "w2"]
    assert max_points(fig) <= 4000


def test_health_figures():
    steps, values = noisy_loss(5000)
    assert max_points(figures.throughput_figure((steps, values))) <= 4000
    mem = figures.memory_figure((steps, np.full(5000, 2**30)), "cpu")
    assert mem.data[0].y[0] == 1024  # MiB
    lr = figures.lr_figure(
        (np.arange(10), [1e-3] * 5 + [1e-4] * 5), [{"step": 5, "kind": "lr_change", "data": {"new": 1e-4}}]
    )
    assert lr.data[0].line.shape == "hv" and list(lr.data[1].x) == [5]


def hist(step, lo, hi, counts, nonfinite=0):
    n = len(counts)
    return {
        "step": step,
        "edges": [lo + (hi - lo) * i / n for i in range(n + 1)],
        "counts": counts,
        "nonfinite": nonfinite,
    }


def test_histogram_heatmap_one_column_per_step_on_a_common_grid():
    snaps = [hist(s, -1 - s, 1 + s, [1, 2, 3, 4]) for s in range(5)]
    fig = histograms.hist_heatmap(snaps, bins=32)
    heat = fig.data[0]
    assert isinstance(heat, go.Heatmap) and list(heat.x) == [0, 1, 2, 3, 4]
    z = np.asarray(heat.z)
    assert z.shape == (32, 5)
    assert heat.y[0] > -5 and heat.y[-1] < 5  # spans every snapshot


def test_histogram_at_one_step_and_last_finite():
    snaps = [hist(0, 0, 1, [1, 2]), hist(10, 0, 2, [3, 4]), hist(20, 0, 0, [0, 0], nonfinite=7)]
    assert histograms.last_finite(snaps)["step"] == 10
    fig = histograms.hist_bar(snaps[2])
    assert "7 non-finite" in fig.layout.title.text
    bar = histograms.hist_bar(snaps[1]).data[0]
    assert list(bar.y) == [3, 4] and list(bar.x) == [0.5, 1.5]


def test_empty_inputs_give_empty_figures():
    assert len(figures.loss_figure(([], [])).data) == 2
    assert len(histograms.hist_heatmap([]).data) == 0
    assert len(histograms.hist_bar(None).data) == 0
    assert len(figures.grad_norm_figure({}).data) == 0


def test_log_axes_never_get_zero():
    named = {"w1": (np.arange(4), [1e-3, 0.0, -1.0, 1e-5])}
    g = figures.gradcheck_figure(named).data[0]
    floor = figures.gradcheck_floor("float32")
    assert list(g.y) == [1e-3, floor, floor, 1e-5]
    n = figures.grad_norm_figure(named).data[0]
    assert np.isnan(n.y[1]) and np.isnan(n.y[2])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradcheck_figure_draws_the_dtypes_rounding_band(dtype):
    tol = GRADCHECK_TOL[dtype]
    named = {"w1": (np.arange(5), [0.0, tol / 10, tol / 2, 2 * tol, 0.0]), "w2": (np.arange(5), [0.0] * 5)}
    fig = figures.gradcheck_figure(named, dtype)
    assert fig.layout.yaxis.type == "log" and [t.name for t in fig.data] == ["w1", "w2"]
    assert "‖g_hand − g_autograd‖ / ‖g_autograd‖" in fig.layout.title.text
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and rects[0].y1 == tol and 0 < rects[0].y0 <= figures.gradcheck_floor(dtype)
    assert any(s.type == "line" and s.y0 == s.y1 == tol and s.line.dash == "dash" for s in fig.layout.shapes)
    labels = [a.text for a in fig.layout.annotations]
    assert any(t.startswith(f"{dtype} rounding") for t in labels), labels
    assert min(y for t in fig.data for y in t.y) == figures.gradcheck_floor(dtype) > 0  # 0 drawn on the axis


def test_gradcheck_figure_without_a_tolerance_draws_no_band():
    fig = figures.gradcheck_figure({"w1": (np.arange(3), [0.0, 1e-3, 1e-2])}, "bfloat16")
    assert not fig.layout.shapes and len(fig.data) == 1


# ---------------------------------------------------------------------------------------------
# after a divergence: gaps in the curves, heatmaps on the finite range


def test_loss_curves_break_at_nonfinite_points():
    """A stretch of NaN, inf and None (a divergence, then a resume) is a gap in both lines: the raw
    one has no value there, and the smoothed one neither holds its last value flat through it nor
    carries the huge values from before it into the recovered run."""
    nan, inf = float("nan"), float("inf")
    values = [5.0, 4.0, 3.0, 1e30, nan, inf, None, nan, 2.0, 2.0, 1.0]
    fig = figures.loss_figure((list(range(len(values))), values), smoothing=0.9)
    raw, smooth = fig.data
    assert not raw.connectgaps and not smooth.connectgaps
    ry = dict(zip(raw.x, np.asarray(raw.y, dtype=float)))
    sy = dict(zip(smooth.x, np.asarray(smooth.y, dtype=float)))
    for step in range(4, 8):
        assert np.isnan(ry[step]) and np.isnan(sy[step]), step
    assert sy[3] > 1e28 and sy[8] == 2.0  # the smoothed line starts over after the gap
    assert np.isfinite([sy[s] for s in (0, 1, 2, 8, 9, 10)]).all()
    # in the overlay too
    ov = figures.overlay_figure({"a": (list(range(len(values))), values)}).data[1]
    assert np.isnan(np.asarray(ov.y, dtype=float)[4:8]).all()


def test_histogram_heatmap_keeps_to_the_finite_range_and_says_so():
    """Snapshots after a divergence, one spanning +-1e23 and one with non-finite edges (stored as
    None), do not stretch the value axis: it spans the other snapshots, and the title counts them."""
    snaps = [hist(s, -1 - s / 20, 1 + s / 20, [1, 2, 3, 4]) for s in range(20)]
    wild = hist(20, -1e23, 1e23, [1, 0, 0, 3])
    broken = {"step": 21, "edges": [None, 0.0, None], "counts": [1, 1], "nonfinite": 5}
    gone = hist(22, 0.0, 0.0, [0, 0, 0, 0], nonfinite=36)  # no finite value at all: nothing to show
    fig = histograms.hist_heatmap(snaps + [wild, broken, gone], title="w1", bins=32)
    heat = fig.data[0]
    assert list(heat.x) == list(range(23))  # every snapshot keeps its column
    assert -1.95 < heat.y[0] < -1.85 and 1.85 < heat.y[-1] < 1.95  # bin centres: the finite range, in full
    assert fig.layout.title.text == "w1 · 2 snapshots outside the range shown"
    share = 10 ** np.asarray(heat.z) - 1e-6  # log10(share + 1e-6)
    np.testing.assert_allclose(share[:, :20].sum(axis=0), 1.0, rtol=1e-6)  # each ordinary column in full
    assert share[:, 20:].sum() < 1e-6  # the wild one's values all lie far outside the range
    assert histograms.hist_range(snaps) == (-1.95, 1.95, 0)
    assert histograms.hist_heatmap(snaps).layout.title.text == "Distribution over time"  # nothing to say


def test_histogram_heatmap_range_keeps_a_steady_drift():
    """Weights that widen tenfold over the run, or gradients that narrow, are all inside the range."""
    grow = [hist(s, -0.1 * (1 + s), 0.1 * (1 + s), [1, 1]) for s in range(10)]
    assert histograms.hist_range(grow) == (-1.0, 1.0, 0)
    shrink = [hist(s, -(0.9**s), 0.9**s, [1, 1]) for s in range(20)]  # sevenfold
    assert histograms.hist_range(shrink) == (-1.0, 1.0, 0)


def test_a_gradient_heatmap_is_not_flattened_by_the_first_steps_huge_values():
    """The lecture's w1 gradient shrinks 10,000-fold in its first few hundred steps: the range
    follows what the gradient is now, and the first snapshots are counted as outside it."""
    snaps = [hist(s, -25.0 * 0.5**s, 25.0 * 0.5**s, [1, 1]) for s in range(14)]  # 25 -> 0.003
    snaps += [hist(s, -0.003, 0.003, [1, 1]) for s in range(14, 40)]
    lo, hi, outside = histograms.hist_range(snaps)
    # the widest snapshot within HIST_FENCE (3) widths of +-0.003: 25 * 0.5**11; the 11 before it lie outside
    assert (lo, hi, outside) == (-25.0 * 0.5**11, 25.0 * 0.5**11, 11)
    assert hi / 0.003 < 5  # today's gradient spans a fifth of the axis or more, not a single bin
    assert histograms.hist_range([hist(0, 0.0, 0.0, [3])]) == (0.0, 0.0, 0)  # one value: the grid widens it
    assert len(histograms.hist_grid([hist(0, 0.0, 0.0, [3])], bins=4)) == 5


def test_the_placeholder_is_a_message_without_axes():
    fig = figures.placeholder("The loss curve appears here after Start.")
    assert not fig.data and fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    assert fig.layout.annotations[0].text == "The loss curve appears here after Start."


# ---------------------------------------------------------------------------------------------
# layout: what a learner reads on the axes


def ticks(fig) -> list[str]:
    return list(fig.layout.yaxis.ticktext)


@pytest.mark.parametrize(
    "values, labels",
    [
        (np.geomspace(1e3, 1e-5, 100), ["1e-5", "0.001", "0.1", "10", "1000"]),  # 9 decades: every other one
        (np.geomspace(1e8, 1e-7, 100), ["1e-7", "1e-4", "0.1", "100", "1e+5", "1e+8"]),  # 16 decades: 6 labels
        (np.linspace(316, 31.6, 100), ["50", "100", "200"]),  # a weight norm: 1, 2, 5 per decade
        (np.linspace(100, 70, 100), ["70", "80", "90", "100"]),  # within a decade: never 7e+1 8e+1 9e+1 1e+2
        (np.full(100, 1e-6), ["5e-7", "1e-6", "2e-6"]),  # a constant lr
        ([3e7], ["1e+7", "2e+7", "5e+7"]),  # one finite loss, the run diverged after it (not "2 1e+8 5 2")
    ],
)
def test_a_log_axis_gets_a_few_plain_labels_never_a_pile(values, labels):
    fig = figures.loss_figure((np.arange(len(values)), values), log_y=True)
    assert ticks(fig) == labels and len(fig.layout.yaxis.tickvals) <= MOST_TICKS
    assert figures.loss_figure((np.arange(3), [3.0, 2.0, 1.0]), log_y=False).layout.yaxis.tickvals is None


def test_a_band_widens_the_log_axis_labels_and_short_runs_label_whole_steps():
    named = {"w1": (np.arange(4), [0.0, 0.0, 0.0, 0.0])}  # exact: drawn at the floor, under the rounding band
    assert ticks(figures.gradcheck_figure(named)) == ["1e-9", "1e-8", "1e-7", "1e-6", "1e-5", "1e-4"]
    assert figures.loss_figure((np.arange(5), [4.0, 3, 2, 1, 0.5])).layout.xaxis.dtick == 1  # not 0.5 steps
    assert figures.loss_figure(noisy_loss(100)).layout.xaxis.dtick is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: figures.loss_figure(noisy_loss(100), lr_events=[{"step": 5, "data": {"new": 1.0}}]),
        lambda: figures.grad_norm_figure({f"{i}.weight": noisy_loss(50, i) for i in range(3)}),
        lambda: figures.overlay_figure({"manual": noisy_loss(50), "autograd": noisy_loss(50, 1)}),
    ],
)
def test_legends_sit_under_the_plot_not_over_its_title(build):
    legend = build().layout.legend
    assert legend.yanchor == "top" and legend.y < 0


def test_the_throughput_start_up_is_shaded_and_labelled():
    steps = np.arange(0, 2000, 20)
    ramp = np.r_[np.linspace(50, 970, 10), np.full(90, 970.0)]  # the start-up, then steady
    fig = figures.throughput_figure((steps, ramp))
    [shade] = fig.layout.shapes
    assert shade.x0 == 0 and 100 <= shade.x1 <= 200 and fig.layout.annotations[0].text == "start-up"
    assert not figures.throughput_figure((steps, np.full(100, 970.0))).layout.shapes  # steady from the start
    assert figures.startup_end([0, 1, 2], [1.0, 2.0, 3.0]) is None  # too few points to tell


def test_a_heatmap_of_one_snapshot_labels_its_step_only():
    fig = histograms.hist_heatmap([hist(0, -1, 1, [1, 2, 3, 4])])
    assert list(fig.layout.xaxis.tickvals) == [0]  # not -0.4 ... 0.4


def test_the_gap_figure_draws_equal_steps_at_the_floor_beside_the_rounding_line():
    gap = explain.pair_gap("manual", ([0, 1, 2], [4.0, 2.0, 1.0]), "autograd", ([0, 1, 2], [4.0, 2.0, 1.0 + 1e-7]))
    fig = figures.gap_figure(gap, "float32")
    assert list(fig.data[0].y) == [figures.gradcheck_floor("float32")] * 2 + [pytest.approx(1e-7)]
    assert fig.layout.shapes[0].y0 == GRADCHECK_TOL["float32"]
