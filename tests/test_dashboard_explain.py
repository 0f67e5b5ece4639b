"""What a learner reads, worked out from the data (dashboard/explain.py): the Compare modes verdict, the
divergence banner and its next steps, the snapshot a divergence put back, and what layer names mean."""

import numpy as np
import pytest

from dashboard import explain
from dashboard.series import Buckets


def lecture_like(steps=500, depart=160, first_gap=1e-7, seed=0):
    """Three losses falling from 600 towards 0: manual and custom Function equal, autograd departing at
    `depart` by `first_gap` of the loss, the gap growing as the loss falls (as float32 rounding does)."""
    s = np.arange(steps)
    manual = 600.0 * np.exp(-s / 30.0)
    gap = np.where(s < depart, 0.0, first_gap * np.exp((s - depart) / 25.0))
    autograd = manual * (1 + gap)
    series = lambda v: (s, v)  # noqa: E731
    return {"manual": series(manual), "autograd": series(autograd), "custom Function": series(manual.copy())}


def test_the_verdict_names_the_equal_modes_and_where_and_how_the_other_departs():
    said = explain.compare_verdict(lecture_like(depart=160), "float32")
    assert said.startswith("The same computation: manual and custom Function are equal bit for bit at all 500 steps")
    assert "autograd departs from manual at step 160 by float32 rounding (1e-07 of the loss)" in said
    assert "which grows to" in said and "as the loss nears 0 (from " in said
    # from the data, not a fixed text: another departure step, another sentence
    assert "at step 97 by float32 rounding" in explain.compare_verdict(lecture_like(depart=97), "float32")


def test_a_gap_beyond_rounding_is_not_the_same_computation_and_float64_is_stricter():
    said = explain.compare_verdict(lecture_like(first_gap=0.02), "float32")
    assert said.startswith("Not the same computation") and "more than float32 rounding gives" in said
    # 1e-7 is float32 rounding, and far more than float64's
    assert explain.compare_verdict(lecture_like(first_gap=1e-7), "float64").startswith("Not the same computation")


def test_identical_curves_read_equal_and_decimated_ones_say_they_are_compared_by_means():
    s = np.arange(8)
    v = 1.0 / (1 + s)
    same = {m: (s, v.copy()) for m in ("manual", "autograd", "custom Function")}
    said = explain.compare_verdict(same, "float32")
    assert (
        said
        == "The same computation: manual, autograd and custom Function are equal bit for bit at all 8 steps compared."
    )
    long = {m: Buckets.from_points(np.arange(64), 1.0 / (1 + np.arange(64))).compact(8) for m in same}
    assert "in every bucket mean" in explain.compare_verdict(long, "float32")
    assert explain.compare_verdict({"manual": (s, v)}, "float32").startswith("Waiting")


def test_the_pair_gap_is_relative_to_the_first_and_skips_non_finite_steps():
    gap = explain.pair_gap("a", ([0, 1, 2, 3], [2.0, 4.0, np.nan, 1.0]), "b", ([1, 2, 3, 4], [5.0, 1.0, 1.0, 9.0]))
    assert list(gap.steps) == [1, 3] and list(gap.rel) == [0.25, 0.0] and gap.exact
    assert gap.first_departure() == 0 and not gap.equal


DIVERGED = {"step": 4, "layer": "0.weight", "ran_after": 2, "restored": 3}


def test_a_paused_divergence_gives_the_status_lines_step_the_weights_put_back_and_what_to_do():
    what, todo = explain.divergence_banner(DIVERGED, "paused", 7, 1e3, "pause")
    assert what.startswith("Diverged at step 4 in layer 0.weight, and 2 more steps ran before it was noticed")
    assert "The run is paused at step 7 with the weights of step 3 put back" in what
    assert "the histograms at step 7 show them" in what and explain.restored_at(DIVERGED) == 7
    assert "a tenth: 100" in todo and "Set lr" in todo and "Resume" in todo


def test_right_after_a_divergence_a_running_status_reads_pausing_never_running():
    """The event is written before the status: for a moment the run reads running."""
    what, todo = explain.divergence_banner(DIVERGED, "running", 7, 1e3, "pause")
    assert "The run is pausing." in what and "running" not in what
    what, _ = explain.divergence_banner(DIVERGED, "running", 9, 1e3, "pause", resumed=7)
    assert "It was resumed at step 7; no finite loss since, yet." in what
    what, todo = explain.divergence_banner(DIVERGED, "diverged", 7, 1e3, "stop")
    assert "ended at step 7 (diverged)" in what and "Fork" in todo


def test_the_snapshot_after_a_divergence_says_whose_weights_it_shows():
    events = [{"data": DIVERGED}]
    assert explain.snapshot_note(7, [e["data"] for e in events]) == (
        " (the weights of step 3, put back after the divergence at step 4)"
    )
    assert explain.snapshot_note(6, [DIVERGED]) == ""


@pytest.mark.parametrize(
    "layers, says",
    [
        (["0.weight", "2.weight", "0.bias"], "nn.Sequential, the module's index"),
        (["w1", "w2", "b1"], "the lecture's own tensors, w1 the first layer's weights (D_in × H)"),
        (["layer1.0.conv1.weight", "fc.bias"], "the model's module path, then the parameter"),
    ],
)
def test_layer_names_are_explained_for_the_kinds_the_run_has(layers, says):
    said = explain.layer_names(layers)
    assert said.startswith("Layer names: ") and says in said
    assert explain.layer_names([]) == ""
