"""The CUDA path: every mode trains on the GPU and matches a CPU run, the device histograms match
torch.histogram, and torch.cuda.set_sync_debug_mode("error") finds no sync between flushes.

Skipped with a visible reason where there is no CUDA device; bench/gpu_check.sh runs this on the
GPU machine."""

import pytest
import torch
from conftest import NanFrom, syncs_refused_but_in_flush

from engine.build import assemble as build
from engine.loop.guard import COPIES, LOOK_EVERY
from engine.loop.telemetry import Telemetry, histogram
from engine.loop.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here; bench/gpu_check.sh runs this on the GPU machine"
)

CASES = {
    "manual": dict(mode="manual", arch="two_layer", lr=1e-4),
    "manual-ce": dict(mode="manual", arch="mlp", depth=3, dataset="digits", batch_size=64, lr=0.1),
    "autograd": dict(mode="autograd", arch="mlp", depth=3, lr=0.05),
    "custom_function": dict(mode="custom_function", arch="mlp", depth=3, lr=0.05),
    "nn": dict(mode="nn", arch="parallel_block", lr=0.05),
    "optim-adam": dict(mode="optim", arch="mlp", optimizer="adam", lr=1e-2),
    "optim-sgd-nesterov": dict(mode="optim", arch="mlp", optimizer="sgd", momentum=0.9, nesterov=True, lr=0.05),
    "optim-cnn": dict(mode="optim", arch="cnn", dataset="digits", batch_size=32, lr=1e-2),
}
STEPS = 20


def case_config(case):
    kw = {"dataset": "teacher", **CASES[case]}
    if kw["dataset"] == "digits":
        pytest.importorskip("sklearn", reason="scikit-learn (the digits dataset) is not installed here")
    return kw


def losses_on(small, device, case, dtype="float64"):
    kw = case_config(case)
    mode, batches = build.build(build.prepare(small(device=device, dtype=dtype, steps=STEPS, **kw)))
    out = []
    for _ in range(STEPS):
        x, y = next(batches)
        assert x.device.type == device
        out.append(mode.forward_backward(x, y))
        mode.update()
        mode.zero_grad()
    return torch.stack(out).cpu()


@pytest.mark.parametrize("case", list(CASES))
def test_cuda_run_matches_cpu(small, case):
    cpu = losses_on(small, "cpu", case)
    gpu = losses_on(small, "cuda", case)
    assert torch.isfinite(gpu).all()
    torch.testing.assert_close(gpu, cpu, rtol=1e-6, atol=1e-9)


def test_cuda_float32_is_close_to_cpu(small):
    cpu = losses_on(small, "cpu", "optim-adam", dtype="float32")
    gpu = losses_on(small, "cuda", "optim-adam", dtype="float32")
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-5)


def test_auto_picks_cuda_and_says_which(small):
    p = build.prepare(small(device="auto"))
    assert p.device.type == "cuda"
    assert p.device_note.startswith("cuda (") and torch.cuda.get_device_name(0) in p.device_note


@pytest.mark.parametrize("seed", [0, 1])
def test_device_histogram_matches_torch_histogram(seed):
    gen = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 16, (1000,), generator=gen).float() + 0.5  # bin centres: no edge ties
    t = torch.cat([k, torch.tensor([0.0, 16.0])])
    h = histogram(t.cuda(), 16).cpu()
    assert h[16:].tolist() == [0.0, 16.0, 0.0]
    torch.testing.assert_close(h[:16], torch.histogram(t, bins=16, range=(0.0, 16.0)).hist, rtol=0, atol=0)
    r = torch.randn(5000, generator=gen)
    r[7] = float("nan")
    r[8] = float("inf")
    h = histogram(r.cuda(), 32).cpu()
    finite = r[torch.isfinite(r)]
    lo, hi = finite.min().item(), finite.max().item()
    assert h[32:].tolist() == pytest.approx([lo, hi, 2.0])
    want = torch.histogram(finite, bins=32, range=(lo, hi)).hist
    assert h[:32].sum() == want.sum() and (h[:32] - want).abs().sum() <= 4  # at most a tie or two moved


@pytest.mark.parametrize(
    "case", ["manual", "manual-ce", "autograd", "custom_function", "nn", "optim-adam", "optim-cnn"]
)
def test_no_sync_between_flushes(small, case):
    """set_sync_debug_mode("error") raises on any host sync; only the flush may sync."""
    kw = case_config(case)
    p = build.prepare(small(device="cuda", steps=30, telemetry_every=7, **kw))
    mode, batches = build.build(p)
    tel = Telemetry(every=7, bins=16, flush_every=10, flush_seconds=1e9, device=p.device, batch_size=p.cfg.batch_size)
    trainer = Trainer(mode, batches, tel, 30)
    flushes = []
    trainer.add_callback("on_flush", flushes.append)
    trainer.run(max_steps=1)  # warm-up: first batch to the device, library init
    with syncs_refused_but_in_flush(trainer):
        trainer.run()
    assert trainer.step == 30
    assert sum(len(f.losses) for f in flushes) == 30


@pytest.mark.parametrize("case", ["manual", "autograd", "optim-adam"])
def test_nonfinite_loss_noticed_through_the_pinned_flag_without_a_sync(small, case):
    """The "all finite" flag is copied into pinned host memory with non_blocking=True behind a CUDA
    event, and a copy is read only once its event has completed: under set_sync_debug_mode("error"),
    with no flush due, a NaN from step 100 on is noticed within 50 steps (31 while the device keeps
    within a look of the host, as at these sizes) and recorded at step 100."""
    bad, steps = 100, 2000
    kw = case_config(case)
    p = build.prepare(small(device="cuda", steps=steps, telemetry_every=1000, **kw))
    mode, batches = build.build(p)
    mode = NanFrom(mode, bad)
    tel = Telemetry(
        every=1000, bins=16, flush_every=10**6, flush_seconds=1e9, device=p.device, batch_size=p.cfg.batch_size
    )
    assert tel.watch.every == LOOK_EVERY["cuda"] and len(tel.watch._free) == COPIES
    assert all(flag.device.type == "cpu" and flag.is_pinned() for flag, _ in tel.watch._free)
    owner = {id(flag): event for flag, event in tel.watch._free}
    trainer = Trainer(mode, batches, tel, steps, on_divergence="stop")
    real_read, reads = tel.watch._read_flag, []

    def read_flag(flag):
        assert owner[id(flag)].query(), "read a copy whose event had not completed"
        reads.append((trainer.step, real_read(flag)))
        return reads[-1][1]

    tel.watch._read_flag = read_flag
    trainer.run(max_steps=1)  # warm-up: first batch to the device, library init, the first flush
    with syncs_refused_but_in_flush(trainer):
        trainer.run()
    assert trainer.stopped and trainer.divergence["step"] == bad
    assert 0 <= trainer.divergence["ran_after"] < 50 and trainer.step == bad + 1 + trainer.divergence["ran_after"]
    assert [ok for s, ok in reads if s <= bad] and all(ok for s, ok in reads if s <= bad)  # finite reads first
    assert reads[-1][1] is False


@pytest.mark.parametrize("case", ["manual", "optim-adam"])
def test_a_cuda_run_resumed_from_its_checkpoint_goes_on_as_one_never_stopped(small, case, tmp_path):
    """The checkpoint holds the CUDA RNG and device tensors copied to the host; restored, they go back
    to the device and the run goes on as before (float64: the same kernels, the same results)."""
    from engine.loop import checkpoint
    from engine.loop.telemetry import Telemetry

    def trainer():
        p = build.prepare(small(device="cuda", dtype="float64", steps=STEPS, **case_config(case)))
        mode, batches = build.build(p)
        return p, mode, batches, Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), STEPS)

    p, mode, batches, whole = trainer()
    whole.run()
    p, first, batches, half = trainer()
    half.run(max_steps=STEPS // 2)
    snap = checkpoint.snapshot(first, half.step, p.cfg, batches)
    checkpoint.write(tmp_path / "c.pt", snap)
    p, second, batches, rest = trainer()
    rest.step = checkpoint.restore(checkpoint.load(tmp_path / "c.pt"), second, batches, p.cfg)
    rest.run()
    for (n, a), (_, b) in zip(mode.named_params(), second.named_params()):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=n)
