"""Telemetry against direct computations: histograms against torch.histogram and numpy, norms and the
update ratio against torch.linalg, the flush's contents, and the gradient check, which must be tiny
for correct gradients and large for a broken one."""

import math

import numpy as np
import pytest
import torch

from engine import Store
from engine.build import assemble as build
from engine.loop.telemetry import Telemetry, grad_ratio, histogram
from engine.loop.trainer import Trainer
from engine.modes.functions import MyReLU
from engine.modes.gradcheck import gradcheck_verdict
from engine.modes.losses import LOSS_GRADS


def split(h, bins):
    return h[:bins], h[bins].item(), h[bins + 1].item(), int(h[bins + 2].item())


# ---------------------------------------------------------------------------------------------
# histograms


@pytest.mark.parametrize("bins", [8, 64])
def test_histogram_matches_torch_and_numpy_on_bin_centres(bins):
    """Values at bin centres, plus the two ends: no value sits on an edge, so every binning agrees."""
    gen = torch.Generator().manual_seed(bins)
    k = torch.randint(0, bins, (500,), generator=gen).float() + 0.5
    t = torch.cat([k, torch.tensor([0.0, float(bins)])]).reshape(2, -1)
    counts, lo, hi, nonfinite = split(histogram(t, bins), bins)
    assert (lo, hi, nonfinite) == (0.0, float(bins), 0)
    want = torch.histogram(t.flatten(), bins=bins, range=(lo, hi)).hist
    torch.testing.assert_close(counts, want, rtol=0, atol=0)
    np.testing.assert_array_equal(counts.numpy(), np.histogram(t.numpy(), bins=bins, range=(lo, hi))[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_matches_torch_and_numpy_on_random_data(seed):
    t = torch.randn(40, 25, generator=torch.Generator().manual_seed(seed)) * 3 + 1
    counts, lo, hi, nonfinite = split(histogram(t, 16), 16)
    assert lo == t.min().item() and hi == t.max().item() and nonfinite == 0
    want = torch.histogram(t.flatten(), bins=16, range=(lo, hi)).hist
    torch.testing.assert_close(counts, want, rtol=0, atol=0)
    np.testing.assert_array_equal(counts.numpy(), np.histogram(t.numpy(), bins=16, range=(lo, hi))[0])


def test_histogram_counts_nan_and_inf_instead_of_raising():
    t = torch.randn(200, generator=torch.Generator().manual_seed(3))
    finite = t.clone()
    t[[3, 50, 77]] = float("nan")
    t[10] = float("inf")
    t[11] = float("-inf")
    with pytest.raises(RuntimeError):  # what the engine avoids: histc on a NaN range raises
        torch.histc(t, bins=8)
    counts, lo, hi, nonfinite = split(histogram(t, 8), 8)
    assert nonfinite == 5
    kept = finite[torch.isfinite(t)]
    assert lo == kept.min().item() and hi == kept.max().item()
    torch.testing.assert_close(counts, torch.histogram(kept, bins=8, range=(lo, hi)).hist, rtol=0, atol=0)


def test_histogram_of_nothing_finite_and_of_a_constant():
    counts, lo, hi, nonfinite = split(histogram(torch.full((7,), float("nan")), 4), 4)
    assert counts.sum() == 0 and nonfinite == 7 and math.isfinite(lo) and math.isfinite(hi)
    counts, lo, hi, nonfinite = split(histogram(torch.full((9,), 2.5), 4), 4)
    assert counts.sum() == 9 and lo == hi == 2.5 and nonfinite == 0
    counts, lo, hi, nonfinite = split(histogram(torch.zeros(5), 4), 4)  # zeroed biases
    assert counts.sum() == 5 and lo == hi == 0 and nonfinite == 0


# ---------------------------------------------------------------------------------------------
# norms, the update ratio, the flush


def manual_mode(small, **kw):
    p = build.prepare(small(mode="manual", arch="mlp", depth=3, dataset="teacher", dtype="float64", lr=0.05, **kw))
    return build.build(p)


def test_norms_and_update_ratio_match_a_direct_computation(small):
    mode, batches = manual_mode(small)
    tel = Telemetry(every=1, bins=8, flush_every=100, flush_seconds=1e9, device=torch.device("cpu"), batch_size=16)
    x, y = next(batches)
    mode.forward_backward(x, y)
    grads = {n: g.clone() for n, g in mode.named_grads()}
    before = {n: p.clone() for n, p in mode.named_params()}
    tel.before_update(0, mode, x, y, mode.lr)
    mode.update()
    tel.after_update(0, mode)
    after = {n: p.clone() for n, p in mode.named_params()}
    scalars = {k: v for s, k, v in tel.flush().scalars if s == 0}
    assert scalars["lr"] == 0.05
    for n in after:
        want_g = torch.linalg.vector_norm(grads[n]).item()
        want_w = torch.linalg.vector_norm(after[n]).item()
        want_r = (torch.linalg.vector_norm(after[n] - before[n]) / torch.linalg.vector_norm(after[n])).item()
        assert scalars[f"grad_norm/{n}"] == pytest.approx(want_g, rel=1e-6), n
        assert scalars[f"weight_norm/{n}"] == pytest.approx(want_w, rel=1e-6), n
        assert scalars[f"update_ratio/{n}"] == pytest.approx(want_r, rel=1e-5), n
        # for plain gradient descent the update is lr * grad
        assert scalars[f"update_ratio/{n}"] == pytest.approx(0.05 * want_g / want_w, rel=1e-5), n
        assert want_r > 0


def test_flush_is_one_transfer_with_every_step_and_key(small, sync_spy):
    mode, batches = manual_mode(small)
    tel = Telemetry(every=4, bins=8, flush_every=5, flush_seconds=1e9, device=torch.device("cpu"), batch_size=16)
    trainer = Trainer(mode, batches, tel, total_steps=10)
    flushes, transfers = [], []
    trainer.add_callback("on_flush", flushes.append)
    real_flush = tel.flush

    def counted_flush():
        n = len(sync_spy.calls)
        out = real_flush()
        transfers.append(sync_spy.calls[n:])
        return out

    tel.flush = counted_flush
    losses = []
    real_fb = mode.forward_backward
    mode.forward_backward = lambda x, y: losses.append(real_fb(x, y)) or losses[-1]
    trainer.run()

    # every flush brought everything back with one .cpu() and one .tolist() of that host copy
    # the first step is flushed at once (time to first plot), then every flush_every steps
    assert [f.first_step for f in flushes] == [0, 1, 6]
    for calls in transfers[:3]:
        assert sorted(w for w, _ in calls) == ["cpu", "tolist"], calls
    assert [len(f.losses) for f in flushes] == [1, 5, 4]
    got = [v for f in flushes for v in f.losses]
    assert got == pytest.approx([v.item() for v in losses[:10]], rel=1e-12)

    names = [n for n, _ in mode.named_params()]
    per_step = {}
    for f in flushes:
        for s, k, _ in f.scalars:
            per_step.setdefault(s, set()).add(k)
    snapshot_keys = {"lr"} | {
        f"{kind}/{n}" for kind in ("grad_norm", "weight_norm", "update_ratio", "gradcheck") for n in names
    }
    for step in (0, 4, 8, 9):  # every K = 4 steps, and the last step
        assert snapshot_keys <= per_step[step], step
    assert not any(k.startswith("grad_norm/") for s in (1, 2, 3, 5, 6, 7) for k in per_step.get(s, ()))
    first, *rest = flushes  # throughput and memory, once per flush; the first flush's interval is start-up
    assert "mem_bytes" in per_step[first.last_step]
    assert not any(k == "steps_per_s" for s, k, _ in first.scalars)
    for f in rest:
        assert {"steps_per_s", "samples_per_s", "mem_bytes"} <= per_step[f.last_step]
    hists = {(h.step, h.kind, h.layer) for f in flushes for h in f.hists}
    assert hists == {(s, kind, n) for s in (0, 4, 8, 9) for kind in ("weight", "grad") for n in names}
    assert all(len(h.counts) == 8 and sum(h.counts) > 0 for f in flushes for h in f.hists)


def test_a_flush_with_nothing_pending_is_none():
    tel = Telemetry(every=1, bins=4, flush_every=1, flush_seconds=1.0, device=torch.device("cpu"), batch_size=1)
    assert tel.flush() is None


# ---------------------------------------------------------------------------------------------
# the gradient check's measure: ||g - ref|| / ||ref||, against numpy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grad_ratio_is_the_norm_ratio(dtype):
    gen = torch.Generator().manual_seed(4)
    ref = torch.randn(100, 10, generator=gen, dtype=dtype)
    g = ref.clone()
    g[3, 4] += 0.5  # one entry off: the elementwise max |g - r| / max |r| would read about 0.15
    want = np.linalg.norm((g - ref).double().numpy()) / np.linalg.norm(ref.double().numpy())
    got = grad_ratio(g, ref)
    assert got.dtype == torch.float64 and got.item() == pytest.approx(want, rel=1e-12)
    assert got.item() < 0.03
    big = ref.float() * 1e30  # float32 squares overflow; the float64 sums do not
    assert grad_ratio(big * 1.01, big).item() == pytest.approx(0.01, rel=1e-5)


def test_grad_ratio_makes_no_host_sync(sync_spy):
    """The snapshot may sync, but the check itself stays on the device: a CUDA run waits for nothing."""
    for ref in (torch.randn(20, 5), torch.zeros(20, 5)):
        grad_ratio(torch.randn(20, 5), ref)
    assert sync_spy.calls == []


def test_grad_ratio_edge_cases():
    zero, one = torch.zeros(3), torch.ones(3)
    assert grad_ratio(zero, zero).item() == 0.0  # both zero: they agree
    assert grad_ratio(one, zero).item() == 1.0  # a zero reference: ||g - 0|| / ||g||
    nan = torch.tensor([1.0, float("nan"), 0.0])
    inf = torch.tensor([1.0, float("inf"), 0.0])
    for g, r in ((nan, one), (one, nan), (inf, inf), (inf, one)):  # a divergence, not a disagreement
        assert math.isnan(grad_ratio(g, r).item()), (g, r)


# ---------------------------------------------------------------------------------------------
# the gradient check, through a real run and its store


def gradchecks(store, run_id):
    s = Store(store)
    try:
        return {k: [v for _, v in s.scalars(run_id, k)] for k in s.scalar_keys(run_id) if k.startswith("gradcheck/")}
    finally:
        s.close()


def gradcheck_run(small, run_inprocess, store, mode):
    cfg = small(
        mode=mode,
        arch="mlp",
        depth=3,
        dataset="teacher",
        dtype="float64",
        lr=0.05,
        loss="sse",
        steps=6,
        telemetry_every=2,
    )
    run_id, status = run_inprocess(cfg, store)
    assert status == "finished"
    return gradchecks(store, run_id)


@pytest.mark.parametrize("mode", ["manual", "custom_function"])
def test_gradcheck_is_tiny_for_correct_gradients(small, run_inprocess, store, mode):
    """float64: the norm ratio ||g - g_ref|| / ||g_ref|| is rounding at most, and the verdict agrees."""
    checks = gradcheck_run(small, run_inprocess, store, mode)
    assert set(checks) == {f"gradcheck/{n}" for i in (1, 2, 3) for n in (f"w{i}", f"b{i}")}
    for key, values in checks.items():
        assert len(values) == 4, key  # steps 0, 2, 4 and the last, 5
        assert max(values) < 1e-15, (key, values)
    series = {k.removeprefix("gradcheck/"): ([0, 2, 4, 5], v) for k, v in checks.items()}
    assert gradcheck_verdict(series, "float64").text.startswith("agree to float64 rounding")


def test_gradcheck_catches_a_broken_manual_gradient(small, run_inprocess, store, monkeypatch):
    monkeypatch.setitem(LOSS_GRADS, "sse", lambda y_pred, y: 3.0 * (y_pred - y))  # should be 2.0
    checks = gradcheck_run(small, run_inprocess, store, "manual")
    assert checks and all(max(v) > 0.1 for v in checks.values()), checks
    assert all(v[0] == pytest.approx(0.5, rel=1e-9) for v in checks.values()), checks  # ||3d - 2d|| / ||2d||
    series = {k.removeprefix("gradcheck/"): ([0, 2, 4, 5], v) for k, v in checks.items()}
    verdict = gradcheck_verdict(series, "float64")
    assert (verdict.agree, verdict.step) == (False, 0) and verdict.text.startswith("disagree in layer "), verdict


def test_gradcheck_catches_a_broken_myrelu(small, run_inprocess, store, monkeypatch):
    monkeypatch.setattr(MyReLU, "backward", staticmethod(lambda ctx, grad_y: grad_y))  # forgets the mask
    checks = gradcheck_run(small, run_inprocess, store, "custom_function")
    assert max(max(checks[f"gradcheck/{n}"]) for n in ("w1", "b1", "w2", "b2")) > 0.01, checks
    assert max(checks["gradcheck/w3"] + checks["gradcheck/b3"]) < 1e-15  # above the ReLUs: unaffected
    series = {k.removeprefix("gradcheck/"): ([0, 2, 4, 5], v) for k, v in checks.items()}
    verdict = gradcheck_verdict(series, "float64")
    assert (verdict.agree, verdict.step) == (False, 0) and verdict.layer in ("w1", "b1", "w2", "b2"), verdict


def test_on_the_cpu_losses_are_kept_as_floats_exactly_and_a_nan_is_seen_at_the_next_look():
    """Reading a CPU tensor waits for nothing, so the CPU keeps floats (not 2,000 tensors until the flush);
    the flush still gives every loss at full float64 precision, and the look still sees a NaN within
    look_every steps."""
    tel = Telemetry(device=torch.device("cpu"), batch_size=1, flush_every=10**6, flush_seconds=1e9, look_every=4)
    assert tel.on_host
    third = torch.tensor(1.0, dtype=torch.float64) / 3
    tel.record_loss(0, third)
    assert tel.flush().losses == [third.item()]  # 1/3 in float64, to the bit
    seen = None
    for step in range(1, 40):
        tel.record_loss(step, torch.tensor(float("nan") if step >= 21 else 1.0))
        assert isinstance(tel._losses[-1], float)
        if tel.flush_due():
            seen = step
            break
    assert seen is not None and 21 <= seen <= 24
    f = tel.flush()
    assert f.first_step == 1 and f.losses[:20] == [1.0] * 20 and math.isnan(f.losses[-1])
