"""--precision: bf16 (autocast) and tf32 in modes nn and optim; the raw modes refuse them in one line.

The bf16 loss curve is checked against the fp32 run of the same config and seed, built the way a run
builds it (engine.build.assemble), and once end to end through the worker and the store. The tolerances:

- bfloat16 keeps 8 significant bits, so one rounding moves a number by at most 2**-9 (0.2 %) of itself.
  At the first step (same weights, same batch) the two losses differ only by that rounding, of the
  inputs of each matmul or convolution, adding up over the layers: FIRST_STEP = 2 % of the loss is
  ten such roundings (measured: at most 0.05 % for the MLPs and parallel_block, 0.8 % for resnet18).
- After it the two trajectories separate, each step's gradient rounded a little differently, and on
  minibatches one batch's loss differs more from its neighbour than the precision moves it. So the
  curves are compared as means over windows of WINDOW steps, against the scale of the curve (its
  first loss): TRACK = 5 % of it at every window. Measured over 100 steps: at most 0.05 % (nn MLP),
  0.01 % (nn parallel_block), 0.8 % (optim cnn on digits) and 3.1 % (Adam on the MLP, whose loss falls
  to 3 % of its start, where bf16's rounding is a larger share of it). The fp32 curve must fall by
  more than DROP = 4 x TRACK, or a bf16 run that did not learn at all would pass.
"""

import os
import subprocess

import pytest
import torch
from conftest import cli_cmd, cli_env

from dashboard import rules
from engine import ConfigError, Store
from engine.build import assemble as build
from engine.config.fields import RAW_MODES

STEPS = 100
FIRST_STEP = 0.02  # relative, at step 0
WINDOW = 10
TRACK = 0.05  # of the first loss, window means
DROP = 4 * TRACK

CASES = {
    "nn-mlp": dict(mode="nn", arch="mlp", depth=3, dataset="teacher", lr=0.05),
    "nn-parallel_block": dict(mode="nn", arch="parallel_block", dataset="teacher", lr=0.05),
    "optim-adam-mlp": dict(mode="optim", arch="mlp", depth=3, dataset="teacher", optimizer="adam", lr=1e-2),
    "optim-cnn-digits": dict(mode="optim", arch="cnn", dataset="digits", batch_size=32, lr=1e-2),
}


def case_config(case):
    if CASES[case]["dataset"] == "digits":
        pytest.importorskip("sklearn", reason="scikit-learn (the digits dataset) is not installed here")
    return CASES[case]


def output_dtypes(model):
    """The dtype of every Linear and Conv2d output in the next forward passes, through forward hooks."""
    seen = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            m.register_forward_hook(lambda _m, _inp, out: seen.append(out.dtype))
    return seen


def curve(small, precision, steps=STEPS, **kw):
    """(losses, dtypes the layers computed in) of `steps` steps, each as the trainer takes it."""
    mode, batches = build.build(build.prepare(small(steps=steps, precision=precision, **kw)))
    dtypes = output_dtypes(mode.model)
    out = []
    for _ in range(steps):
        x, y = next(batches)
        loss = mode.forward_backward(x, y)
        assert loss.dtype == torch.float32, f"the telemetry gets a {loss.dtype} loss"
        out.append(loss)
        mode.update()
        mode.zero_grad()
    return torch.stack(out), set(dtypes)


def assert_tracks(fp32, bf16):
    first = ((bf16[0] - fp32[0]).abs() / fp32[0]).item()
    assert first <= FIRST_STEP, f"first step: bf16 {bf16[0]:.5f} vs fp32 {fp32[0]:.5f} ({first:.2%})"
    drop = ((fp32[0] - fp32.min()) / fp32[0]).item()
    assert drop > DROP, f"the fp32 loss fell by {drop:.1%} only; the comparison would prove nothing"
    a, b = fp32.unfold(0, WINDOW, WINDOW).mean(1), bf16.unfold(0, WINDOW, WINDOW).mean(1)
    off = ((b - a).abs() / fp32[0]).max().item()
    assert off <= TRACK, f"bf16's window means leave fp32's by {off:.2%} of the first loss"
    assert torch.isfinite(bf16).all()


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_loss_curve_tracks_fp32(small, case):
    kw = case_config(case)
    fp32, fp32_dtypes = curve(small, "fp32", **kw)
    bf16, bf16_dtypes = curve(small, "bf16", **kw)
    assert fp32_dtypes == {torch.float32}
    assert bf16_dtypes == {torch.bfloat16}, "autocast did not run the layers in bfloat16"
    assert not torch.equal(bf16, fp32)
    assert_tracks(fp32, bf16)


def test_bf16_first_step_of_a_torchvision_model(small):
    """resnet18 on digits: the forward pass in bfloat16, the first loss within FIRST_STEP of fp32's."""
    pytest.importorskip("sklearn", reason="scikit-learn (the digits dataset) is not installed here")
    kw = dict(mode="optim", arch="torchvision", tv_model="resnet18", dataset="digits", batch_size=8, lr=1e-3)
    fp32, _ = curve(small, "fp32", steps=1, **kw)
    bf16, dtypes = curve(small, "bf16", steps=1, **kw)
    assert dtypes == {torch.bfloat16}
    rel = ((bf16[0] - fp32[0]).abs() / fp32[0]).item()
    assert 0 < rel <= FIRST_STEP, f"bf16 {bf16[0]:.5f} vs fp32 {fp32[0]:.5f}"


def test_bf16_run_through_the_worker_stores_a_curve_that_tracks_fp32(small, run_inprocess, store):
    """The whole path: the worker, telemetry, the store; the stored losses are compared."""
    got = {}
    for precision in ("fp32", "bf16"):
        cfg = small(**CASES["optim-adam-mlp"], steps=STEPS, precision=precision, telemetry_every=25, flush_every=50)
        run_id, status = run_inprocess(cfg, store)
        assert status == "finished"
        s = Store(store)
        try:
            got[precision] = torch.tensor([v for _, v in s.scalars(run_id, "loss")])
        finally:
            s.close()
    assert len(got["bf16"]) == STEPS
    assert_tracks(got["fp32"], got["bf16"])


def test_tf32_changes_nothing_on_the_cpu(small):
    """tf32 sets cuBLAS's and cuDNN's flags only, which the CPU does not read: the same losses, bit for bit."""
    kw = CASES["nn-mlp"]
    fp32, _ = curve(small, "fp32", steps=20, **kw)
    tf32, _ = curve(small, "tf32", steps=20, **kw)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    torch.testing.assert_close(tf32, fp32, rtol=0, atol=0)
    build.build(build.prepare(small(mode="nn")))  # fp32 sets the process-global flags back
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


# ---------------------------------------------------------------------------------------------
# refused in one line


@pytest.mark.parametrize("mode", RAW_MODES)
@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_raw_modes_keep_their_dtype(small, mode, precision):
    with pytest.raises(ConfigError) as e:
        build.prepare(small(mode=mode, precision=precision))
    msg = str(e.value)
    assert "\n" not in msg and f"precision {precision}" in msg and "nn and optim" in msg and mode in msg


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_float64_refuses_lower_precision(small, precision):
    with pytest.raises(ConfigError, match=f"precision {precision} .*float64"):
        build.prepare(small(mode="nn", dtype="float64", precision=precision))


def test_cli_refuses_bf16_for_manual_and_writes_nothing(tmp_path):
    store = tmp_path / "store" / "liveprop.db"
    r = subprocess.run(
        cli_cmd("train", "--mode", "manual", "--precision", "bf16", "--store", store),
        cwd=tmp_path,
        env=cli_env(str(store)),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("liveprop: error: precision bf16 applies to modes nn and optim")
    assert r.stdout == ""
    assert os.listdir(tmp_path) == [], "the CLI wrote something"


def test_sidebar_greys_out_precision_for_the_raw_modes():
    for mode in RAW_MODES:
        why = rules.disabled_reasons({"mode": mode, "precision": "bf16"})
        assert "hand-written" in why["precision"]
        assert rules.config_from_values({"mode": mode, "precision": "bf16", "lr": 1e-6}).precision == "fp32"
    assert "precision" in rules.disabled_reasons({"mode": "nn", "dtype": "float64"})
    for mode in ("nn", "optim"):
        assert "precision" not in rules.disabled_reasons({"mode": mode, "dtype": "float32"})
        assert rules.config_from_values({"mode": mode, "precision": "bf16", "lr": 1e-3}).precision == "bf16"


# ---------------------------------------------------------------------------------------------
# CUDA


cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here; bench/gpu_check.sh runs this on the GPU machine"
)


@cuda
def test_bf16_autocast_runs_the_matmuls_in_bf16_on_cuda(small):
    """Each Linear's output under the mode's autocast equals the same matmul done by hand on bfloat16
    copies of its input, weight and bias, and differs from the float32 one; the loss and the gradients
    stay in float32."""
    mode, batches = build.build(build.prepare(small(**CASES["nn-mlp"], device="cuda", precision="bf16")))
    calls = []
    for m in mode.model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda m, inp, out: calls.append((m, inp[0].detach(), out.detach())))
    x, y = next(batches)
    loss = mode.forward_backward(x, y)
    assert loss.dtype == torch.float32 and loss.device.type == "cuda"
    assert calls and all(p.grad.dtype == torch.float32 for p in mode.model.parameters())
    for m, inp, out in calls:
        assert out.dtype == torch.bfloat16
        by_hand = torch.nn.functional.linear(inp.bfloat16(), m.weight.detach().bfloat16(), m.bias.detach().bfloat16())
        torch.testing.assert_close(out, by_hand, rtol=0, atol=0)
        assert not torch.equal(out.float(), torch.nn.functional.linear(inp.float(), m.weight, m.bias).detach())


@cuda
def test_bf16_curve_tracks_fp32_on_cuda(small):
    fp32, _ = curve(small, "fp32", device="cuda", **CASES["optim-adam-mlp"])
    bf16, dtypes = curve(small, "bf16", device="cuda", **CASES["optim-adam-mlp"])
    assert dtypes == {torch.bfloat16}
    assert_tracks(fp32.cpu(), bf16.cpu())


@cuda
def test_tf32_flag_takes_effect_on_cuda(small):
    """A float32 matmul against its float64 result: TensorFloat-32 keeps 10 mantissa bits (relative error
    about 1e-3 on 1024-long sums), IEEE float32 23 (about 1e-6). Where the GPU has no TF32 (before
    Ampere), the flag is accepted and changes nothing."""
    a, b = torch.randn(1024, 1024, device="cuda"), torch.randn(1024, 1024, device="cuda")
    exact = a.double() @ b.double()

    def error(precision):
        build.build(build.prepare(small(mode="nn", device="cuda", precision=precision)))
        return ((a @ b).double() - exact).norm().item() / exact.norm().item()

    fp32, tf32 = error("fp32"), error("tf32")
    build.build(build.prepare(small(mode="nn", device="cuda")))  # back to fp32 for the tests after this one
    assert fp32 < 1e-5
    if torch.cuda.get_device_capability() >= (8, 0):
        assert tf32 > 1e-4, f"tf32 was asked for, but the matmul kept float32's precision ({tf32:.1e})"
