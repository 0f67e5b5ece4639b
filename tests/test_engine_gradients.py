"""Hand-written gradients against torch autograd, the way micrograd's test_engine.py checks its engine.

The reference here is written in the test with torch.nn.functional and loss.backward(): it shares
no code with engine/modes/manual.py, so a wrong chain rule there cannot hide in both.
"""

import pytest
import torch
import torch.nn.functional as F

from engine.modes import manual
from engine.modes.functions import MyReLU, my_relu
from engine.modes.losses import LOSS_GRADS, LOSSES

N, D_IN, H, D_OUT = 16, 20, 8, 5
TOL = dict(rtol=1e-10, atol=1e-12)


def make_params(depth, bias, gen):
    widths = [D_IN] + [H] * (depth - 1) + [D_OUT]
    params = {}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        params[f"w{i}"] = torch.randn(a, b, generator=gen, dtype=torch.float64) / a**0.5
        if bias:
            params[f"b{i}"] = torch.randn(b, generator=gen, dtype=torch.float64)
    return params


def make_batch(loss, gen):
    x = torch.randn(N, D_IN, generator=gen, dtype=torch.float64)
    if loss == "cross_entropy":
        y = torch.randint(0, D_OUT, (N,), generator=gen)
    else:
        y = torch.randn(N, D_OUT, generator=gen, dtype=torch.float64)
    return x, y


def reference(params, x, y, loss, depth):
    """(loss, grads) by autograd, with torch's own relu and losses."""
    p = {n: t.clone().requires_grad_() for n, t in params.items()}
    h = x
    for i in range(1, depth + 1):
        h = h @ p[f"w{i}"] + (p[f"b{i}"] if f"b{i}" in p else 0)
        if i < depth:
            h = torch.relu(h)
    value = {
        "sse": lambda: ((h - y) ** 2).sum(),
        "mse": lambda: F.mse_loss(h, y),
        "cross_entropy": lambda: F.cross_entropy(h, y),
    }[loss]()
    value.backward()
    return value.detach(), {n: t.grad for n, t in p.items()}


@pytest.mark.parametrize("loss", ["sse", "mse", "cross_entropy"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_manual_gradients_match_autograd(depth, bias, loss):
    gen = torch.Generator().manual_seed(100 * depth + 10 * bias + len(loss))
    params = make_params(depth, bias, gen)
    x, y = make_batch(loss, gen)
    want_loss, want = reference(params, x, y, loss, depth)

    mode = manual.Mode({n: t.clone() for n, t in params.items()}, loss, lr=0.1)
    got_loss = mode.forward_backward(x, y)
    got = dict(mode.named_grads())

    torch.testing.assert_close(got_loss, want_loss, **TOL)
    assert set(got) == set(want) == set(params)
    for name in params:
        assert got[name] is not None, name
        assert want[name].abs().max() > 0, f"{name}: a zero reference gradient would prove nothing"
        torch.testing.assert_close(got[name], want[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("depth", [1, 3])
def test_manual_update_is_plain_gradient_descent(depth):
    """update() does w -= lr * grad with the gradient it computed, for every parameter."""
    gen = torch.Generator().manual_seed(7)
    params = make_params(depth, True, gen)
    x, y = make_batch("mse", gen)
    _, grads = reference(params, x, y, "mse", depth)
    mode = manual.Mode({n: t.clone() for n, t in params.items()}, "mse", lr=0.05)
    mode.forward_backward(x, y)
    mode.update()
    for name, p in mode.named_params():
        torch.testing.assert_close(p, params[name] - 0.05 * grads[name], **TOL)


@pytest.mark.parametrize("loss", ["sse", "mse", "cross_entropy"])
def test_loss_grads_match_autograd_of_losses(loss):
    gen = torch.Generator().manual_seed(3)
    x, y = make_batch(loss, gen)
    y_pred = torch.randn(N, D_OUT, generator=gen, dtype=torch.float64, requires_grad=True)
    LOSSES[loss](y_pred, y).backward()
    torch.testing.assert_close(LOSS_GRADS[loss](y_pred.detach(), y), y_pred.grad, **TOL)


@pytest.mark.parametrize("loss", ["sse", "mse"])
def test_losses_are_the_lectures(loss):
    """sse is the lecture's (y_pred - y).pow(2).sum(); mse is its F.mse_loss."""
    gen = torch.Generator().manual_seed(4)
    a, b = (torch.randn(N, D_OUT, generator=gen, dtype=torch.float64) for _ in range(2))
    want = ((a - b) ** 2).sum() if loss == "sse" else ((a - b) ** 2).mean()
    torch.testing.assert_close(LOSSES[loss](a, b), want, **TOL)


def away_from_zero(shape, gen):
    """Random values at least 0.1 from ReLU's kink, where finite differences are well defined."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    return x.sign() * (x.abs() + 0.1)


def test_myrelu_passes_gradcheck():
    x = away_from_zero((6, 7), torch.Generator().manual_seed(5)).requires_grad_()
    assert torch.autograd.gradcheck(MyReLU.apply, (x,), eps=1e-6, atol=1e-8, raise_exception=True)


def test_gradcheck_would_catch_a_wrong_backward():
    """The gradcheck above can fail: a ReLU whose backward forgets the mask does not pass it."""

    class Unmasked(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_y):
            return grad_y

    x = away_from_zero((6, 7), torch.Generator().manual_seed(5)).requires_grad_()
    assert not torch.autograd.gradcheck(Unmasked.apply, (x,), eps=1e-6, atol=1e-8, raise_exception=False)


def test_myrelu_matches_torch_relu_forward_and_backward():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(32, 9, generator=gen, dtype=torch.float64) * 0.01  # many values close to the kink
    assert (x != 0).all()  # where the two may differ
    upstream = torch.randn(32, 9, generator=gen, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = my_relu(a), torch.relu(b)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    ya.backward(upstream)
    yb.backward(upstream)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert (a.grad == 0).any() and (a.grad != 0).any()  # both sides of the kink were exercised


def test_myrelu_saves_its_input_for_backward():
    """The lecture's MyReLU keeps its input with ctx.save_for_backward."""
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = my_relu(x)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 1 and torch.equal(saved[0], x.detach())
