"""What a learner reads beside the charts, worked out from the data: the Compare modes verdict, the
divergence banner and what to do next, and what the layer names mean. Pure functions (no Streamlit, no
store), tested without a browser.

Loss series come in as Buckets (engine/store/decimate.py) or as (steps, values). A bucket of one step
holds that step's loss exactly, so two runs are "equal bit for bit" only where both series are at full
resolution; a longer run is compared by its bucket means, and the text says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from engine.modes.gradcheck import GRADCHECK_TOL

from .series import Buckets

GROWS = 10.0  # a gap that ends this many times wider than where it began "grows"


@dataclass(frozen=True)
class PairGap:
    """How far loss b is from loss a, at the steps (or buckets) both have and where both are finite."""

    a: str
    b: str
    steps: np.ndarray  # (common,) the first step of each
    rel: np.ndarray  # (common,) |loss_a - loss_b| / |loss_a|; inf where loss_a is 0 and loss_b is not
    loss: np.ndarray  # (common,) loss_a
    exact: bool  # every one of them a single step's loss, not a bucket's mean

    @property
    def equal(self) -> bool:
        return bool(len(self.rel)) and not self.rel.any()

    def first_departure(self) -> int | None:
        """The index of the first common step where they differ, or None."""
        nz = np.flatnonzero(self.rel)
        return int(nz[0]) if len(nz) else None


def _spans(series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first steps, last steps, values): per step at full resolution, per bucket (its mean) otherwise."""
    if not isinstance(series, Buckets):
        series = Buckets.from_points(*series)
    return series.s0, series.s1, series.mean()


def pair_gap(a: str, series_a, b: str, series_b) -> PairGap:
    s0a, s1a, va = _spans(series_a)
    s0b, s1b, vb = _spans(series_b)
    ka, kb = s0a * (2**32) + s1a, s0b * (2**32) + s1b  # a bucket is its (first, last) step
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    va, vb = va[ia], vb[ib]
    ok = np.isfinite(va) & np.isfinite(vb)
    va, vb, ia = va[ok], vb[ok], ia[ok]
    diff = np.abs(va - vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(va))
    return PairGap(a, b, s0a[ia], rel, va, bool((s0a[ia] == s1a[ia]).all()))


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _groups(losses: dict) -> list[list[str]]:
    """The runs in groups whose losses are equal at every common step, in the given order."""
    groups: list[list[str]] = []
    for name, series in losses.items():
        home = next((g for g in groups if pair_gap(g[0], losses[g[0]], name, series).equal), None)
        if home is None:
            groups.append([name])
        else:
            home.append(name)
    return groups


def departure(gap: PairGap, dtype: str) -> tuple[bool, str]:
    """(by rounding?, how b departs from a in words): the first step they differ, by how much, whether
    that is within what the dtype's rounding gives (the gradient check's tolerance, about 1,000 eps),
    and how the gap grows afterwards as the loss falls."""
    i = gap.first_departure()
    if not len(gap.rel):
        return True, f"departs from nothing yet: no step in common with {gap.a}"
    if i is None:
        return True, f"departs nowhere from {gap.a}: equal at all {len(gap.rel):,} steps compared"
    tol = GRADCHECK_TOL.get(dtype, 0.0)
    first, step = float(gap.rel[i]), int(gap.steps[i])
    rounding = first <= tol
    why = f"{dtype} rounding" if rounding else f"more than {dtype} rounding gives (≤ {tol:.1g})"
    text = f"departs from {gap.a} at step {step:,} by {why} ({first:.1g} of the loss)"
    j = i + int(np.argmax(gap.rel[i:]))
    worst, loss_then, loss_now = float(gap.rel[j]), float(gap.loss[i]), float(gap.loss[j])
    if worst >= GROWS * first and j > i:
        text += f", which grows to {worst:.2g} of the loss by step {int(gap.steps[j]):,}"
        if abs(loss_now) < abs(loss_then):
            text += f" as the loss nears 0 (from {loss_then:.3g} to {loss_now:.3g})"
    else:
        text += f", and stays within {worst:.2g} of the loss"
    return rounding, text


def compare_verdict(losses: dict, dtype: str) -> str:
    """The Compare modes verdict in one paragraph, for example "The same computation: manual and custom
    Function are equal bit for bit at all 500 steps; autograd departs from manual at step 160 by float32
    rounding (1e-07 of the loss), which grows to 0.015 of the loss by step 499 as the loss nears 0 ..."."""
    losses = {k: v for k, v in losses.items() if len(_spans(v)[0])}
    if len(losses) < 2:
        return "Waiting for the loss of at least two modes."
    groups = _groups(losses)
    first = groups[0][0]
    exact = all(pair_gap(first, losses[first], n, s).exact for n, s in losses.items() if n != first)
    how = "bit for bit" if exact else "in every bucket mean (the curves are decimated)"
    steps = len(pair_gap(first, losses[first], groups[0][-1], losses[groups[0][-1]]).rel)
    parts, same = [], True
    for g in groups:
        if len(g) > 1:
            steps = len(pair_gap(g[0], losses[g[0]], g[-1], losses[g[-1]]).rel)
            parts.append(f"{_names(g)} are equal {how} at all {steps:,} steps compared")
    for g in groups[1:]:
        rounding, text = departure(pair_gap(first, losses[first], g[0], losses[g[0]]), dtype)
        same = same and rounding
        parts.append(f"{_names(g)} {'depart' if len(g) > 1 else 'departs'}{text.removeprefix('departs')}")
    if len(groups) == 1:
        return f"The same computation: {_names(groups[0])} are equal {how} at all {steps:,} steps compared."
    head = "The same computation" if same else "Not the same computation"
    tail = (
        ". Rounding in one step changes the next step's weights a little; training carries the change on, and "
        "measured against a loss near 0 it looks large. The gradient check below judges the gradients themselves."
        if same
        else "."
    )
    return f"{head}: " + "; ".join(parts) + tail


# ---------------------------------------------------------------------------------------------
# the divergence banner


def what_diverged(d: dict) -> str:
    """ "diverged at step 3 in layer w1, and 2 more steps ran before it was noticed" """
    n = d.get("ran_after")
    what = f"diverged at step {d.get('step')} in layer {d.get('layer') or '(unknown)'}"
    return what + (f", and {n} more step{'' if n == 1 else 's'} ran before it was noticed" if n is not None else "")


def culprit(d: dict) -> str | None:
    """ "the backward of `MulBackward0` in layer `w1` produced inf at step 213 (model.py:40: y = h * w1)": the first
    operation of the divergence replay that made a non-finite value out of finite ones (engine/loop/guard.py
    Culprit); the layer, whose gradient went non-finite first, is named with a backward operation. None when the
    replay found none (a mode without one, an event from before it was recorded)."""
    if not d.get("op"):
        return None
    layer = f" in layer `{d['layer']}`" if d.get("layer") and d.get("phase") == "backward" else ""
    where = f" ({d['where']})" if d.get("where") else ""
    what = f"the {d.get('phase', 'forward')} of `{d['op']}`{layer}"
    return f"{what} produced {d.get('produced')} at step {d.get('op_step')}{where}"


def divergence_banner(
    d: dict, status: str, run_step: int, lr: float, on_divergence: str = "pause", resumed: int | None = None
) -> tuple[str, str]:
    """(what happened, what to do next) after a divergence event d ({"step", "layer", "ran_after",
    "restored"}). Its steps are the status line's (run_step: the steps done) and the histogram title's
    (restored_at). resumed: the step it was resumed at since, if it was. A run whose status still reads
    queued or running, not resumed, is about to pause or stop: the event is written before the status."""
    what = f"D{what_diverged(d)[1:]}: the loss went non-finite."
    first = culprit(d)
    if first:
        what += f" First: {first}."
    put_back = f"the weights of step {d['restored']}" if d.get("restored") is not None else "the first weights"
    lower = f"{lr / 10:.3g}" if lr else "a tenth of it"
    if status == "paused":
        what += (
            f" The run is paused at step {run_step:,} with {put_back} put back, the last finite ones: the "
            f"histograms at step {run_step:,} show them."
        )
        todo = (
            f"Next: type a lower learning rate in the box beside Set lr (a tenth: {lower}), press Set lr, then Resume."
        )
    elif resumed is not None and status in ("queued", "running"):
        what += f" It was resumed at step {resumed:,}; no finite loss since, yet."
        todo = f"If the loss stays non-finite: Pause, a lower learning rate (a tenth: {lower}), Set lr, Resume."
    elif status in ("queued", "running"):
        what += f" The run is {'pausing' if on_divergence == 'pause' else 'stopping'}."
        todo = f"Next, once it is paused: a lower learning rate (a tenth: {lower}), Set lr, then Resume."
    else:
        what += f" The run ended at step {run_step:,} ({status}), with {put_back} put back."
        todo = (
            f"Next: Step back and retry at lr/10, a Fork at the last finite step with a tenth of the rate ({lower}),"
            " drawn as a branch; Resume would go on at the rate that diverged."
        )
    return what, todo


def restored_at(d: dict) -> int | None:
    """The step of the snapshot taken right after the divergence: the steps done when it was noticed."""
    if d.get("step") is None or d.get("ran_after") is None:
        return None
    return d["step"] + d["ran_after"] + 1


def snapshot_note(step: int, divergences: list[dict]) -> str:
    """What a histogram at `step` shows when it is the snapshot of the weights a divergence put back."""
    for d in reversed(divergences):
        if restored_at(d) == step:
            back = f"the weights of step {d['restored']}" if d.get("restored") is not None else "the first weights"
            return f" ({back}, put back after the divergence at step {d['step']})"
    return ""


# ---------------------------------------------------------------------------------------------
# layer names


def layer_names(layers: list[str]) -> str:
    """One line on what the run's layer names mean, for the kinds of names it has."""
    said = []
    raw = [n for n in layers if re.fullmatch(r"[wb]\d+", n)]
    seq = [n for n in layers if re.fullmatch(r"\d+\.(weight|bias)", n)]
    other = [n for n in layers if n not in raw and n not in seq]
    if raw:
        said.append(
            f"{', '.join(raw[:3])}: the lecture's own tensors, w1 the first layer's weights (D_in × H), w2 the "
            "next (H × D_out), b1, b2 their biases"
        )
    if seq:
        said.append(
            f"{', '.join(seq[:3])}: PyTorch's names in an nn.Sequential, the module's index, then weight or bias "
            "(the ReLUs between the Linear layers take the odd indices and have no weights, so the Linears are "
            "0, 2, 4, ...)"
        )
    if other:
        said.append(f"{', '.join(other[:2])}: the model's module path, then the parameter (named_parameters)")
    return "Layer names: " + "; ".join(said) + "." if said else ""
