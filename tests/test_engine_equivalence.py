"""manual, autograd and custom_function from the same seed follow the same parameter trajectory.

Each mode is built the way a run builds it (engine.build.assemble.prepare + build, dtype float64), then
stepped 50 times; the parameters after every step must agree to 1e-6 relative. The trajectories
must also move far more than that tolerance, or the comparison would prove nothing.
"""

import pytest
import torch

from engine.build import assemble as build

RAW = ("manual", "autograd", "custom_function")
STEPS = 50

CASES = {
    # the lecture's shape: two_layer, randn weights, no bias, sum of squares, full batch
    "two_layer-sse": dict(arch="two_layer", bias=False, loss="sse", lr=2e-4),
    "mlp3-mse-bias": dict(arch="mlp", depth=3, bias=True, loss="mse", lr=0.05),
    # digits: minibatches through the DataLoader with shuffle, cross-entropy
    "mlp2-digits-ce": dict(arch="mlp", depth=2, dataset="digits", batch_size=32, lr=0.2),
}


def trajectory(small, mode, case):
    p = build.prepare(small(**{"mode": mode, "dtype": "float64", "dataset": "teacher", "steps": STEPS, **case}))
    m, batches = build.build(p)
    out = [{n: t.detach().clone() for n, t in m.named_params()}]
    for _ in range(STEPS):
        x, y = next(batches)
        m.forward_backward(x, y)
        m.update()
        m.zero_grad()
        out.append({n: t.detach().clone() for n, t in m.named_params()})
    return out


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_raw_modes_follow_the_same_trajectory(small, case):
    runs = {mode: trajectory(small, mode, CASES[case]) for mode in RAW}
    ref = runs["manual"]
    assert all(t.dtype == torch.float64 for t in ref[0].values())
    moved = max(((ref[-1][n] - ref[0][n]).norm() / ref[0][n].norm()).item() for n in ref[0])
    assert moved > 1e-3, f"the parameters barely moved ({moved:.2e}); the comparison would be vacuous"
    for mode in ("autograd", "custom_function"):
        assert runs[mode][0].keys() == ref[0].keys()
        for step, (a, b) in enumerate(zip(runs[mode], ref)):
            for name in b:
                err = ((a[name] - b[name]).abs().max() / b[name].abs().max()).item()
                assert err <= 1e-6, f"{mode} vs manual, step {step}, {name}: relative error {err:.2e}"


def test_nn_mode_starts_from_the_same_weights(small):
    """Every mode draws its weights from the MLP's Linear layers: raw w_i is Linear_i.weight.T."""
    cfg = dict(arch="mlp", depth=3, dtype="float64", dataset="teacher")
    raw, _ = build.build(build.prepare(small(mode="manual", **cfg)))
    nn_mode, _ = build.build(build.prepare(small(mode="nn", **cfg)))
    linears = [m for m in nn_mode.model.modules() if isinstance(m, torch.nn.Linear)]
    params = dict(raw.named_params())
    assert len(linears) == 3
    for i, lin in enumerate(linears, start=1):
        torch.testing.assert_close(params[f"w{i}"], lin.weight.detach().t(), rtol=0, atol=0)
        torch.testing.assert_close(params[f"b{i}"], lin.bias.detach(), rtol=0, atol=0)


def test_nn_and_autograd_take_the_same_step(small):
    """nn (model + manual update) and autograd on the same weights and batch: one identical step."""
    cfg = dict(arch="mlp", depth=2, dtype="float64", dataset="teacher", loss="mse", lr=0.1, init="torch")
    a, batches = build.build(build.prepare(small(mode="autograd", **cfg)))
    b, _ = build.build(build.prepare(small(mode="nn", **cfg)))
    x, y = next(batches)
    before = {k: v.detach().clone() for k, v in a.named_params()}
    for m in (a, b):
        m.forward_backward(x, y)
        m.update()
    linears = [m for m in b.model.modules() if isinstance(m, torch.nn.Linear)]
    params = dict(a.named_params())
    assert len(linears) == 2 and sorted(params) == ["b1", "b2", "w1", "w2"]  # depth 2: every layer compared
    for i, lin in enumerate(linears, start=1):
        torch.testing.assert_close(params[f"w{i}"], lin.weight.detach().t(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(params[f"b{i}"], lin.bias.detach(), rtol=1e-12, atol=1e-14)
    moved = {k: (params[k] - before[k]).abs().max().item() for k in params}
    assert all(d > 1e-6 for d in moved.values()), moved  # the step moved every weight, not only agreed


# ---------------------------------------------------------------------------------------------
# the engine's default against the lecture's first program, run literally


def test_default_run_is_the_lectures_two_layer_net():
    from engine import RunConfig

    p = build.prepare(RunConfig(device="cpu"))
    c = p.cfg
    assert (c.mode, c.arch, c.dataset, c.loss, c.lr) == ("manual", "two_layer", "random", "sse", 1e-6)
    assert (c.init, c.bias) == ("lecture", False)  # x, y, w1, w2 drawn as the lecture draws them, no biases
    assert (c.batch_size, c.d_in, c.hidden, c.d_out, c.n_samples, c.steps) == (64, 1000, 100, 10, 64, 500)


def test_manual_mode_steps_like_the_lecture_loop():
    """At the lecture's sizes, without biases, as the lecture's raw net: the engine's manual mode and
    the lecture's loop (copied from the notes, grad_h[h < 0] = 0 and all) take the same 30 steps."""
    from engine import RunConfig

    p = build.prepare(RunConfig(device="cpu", dtype="float64", bias=False, steps=30))
    mode, batches = build.build(p)
    x, y = next(batches)
    assert x.shape == (64, 1000) and y.shape == (64, 10)
    w1, w2 = (t.clone() for _, t in mode.named_params())
    assert w1.shape == (1000, 100) and w2.shape == (100, 10)
    learning_rate, losses = 1e-6, []
    for step in range(30):
        # the lecture's loop
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
        # the engine's
        got = mode.forward_backward(*next(batches))
        mode.update()
        mode.zero_grad()
        torch.testing.assert_close(got, loss, rtol=1e-10, atol=0, msg=f"loss at step {step}")
        losses.append(loss.item())
    params = dict(mode.named_params())
    torch.testing.assert_close(params["w1"], w1, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(params["w2"], w2, rtol=1e-9, atol=1e-12)
    assert losses[-1] < 0.5 * losses[0], "the lecture's loop did not learn: the comparison would be weak"
