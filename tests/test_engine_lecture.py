"""The raw modes against the lecture's own cells (seed/pytorch-lecture-notes.txt), run verbatim.

Each lecture cell below is copied from the notes with its names (N, D_in, H, D_out, x, y, w1, w2, h, h_relu,
y_pred, loss, grad_y_pred, ...), in float64 on the CPU, boolean-mask assignment and all. The engine's
two-layer step must take the same steps; its depth-N generalisation (engine/modes/deep.py) must take the
same step as the two-layer one on two layers; and the About page must show the engine's real code.
"""

import textwrap
from pathlib import Path

import pytest
import torch

from dashboard import about_text
from engine.modes import autograd, custom_function, manual

ROOT = Path(__file__).resolve().parents[1]
RAW = {"manual": manual, "autograd": autograd, "custom_function": custom_function}
STEPS = 10
TOL = 1e-12


def rel(a, b):
    """max |a - b| / max |b|: a relative error that elements near zero cannot blow up."""
    return ((a - b).abs().max() / b.abs().max()).item()


def lecture_data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    N, D_in, H, D_out = 64, 1000, 100, 10
    x = torch.randn(N, D_in, generator=gen, dtype=torch.float64)
    y = torch.randn(N, D_out, generator=gen, dtype=torch.float64)
    w1 = torch.randn(D_in, H, generator=gen, dtype=torch.float64)
    w2 = torch.randn(H, D_out, generator=gen, dtype=torch.float64)
    return x, y, w1, w2


# ---------------------------------------------------------------------------------------------
# the lecture's cells, as the notes write them (In [16], In [19], In [23])


def lecture_tensor_cell(x, y, w1, w2, steps):
    learning_rate = 1e-6
    losses = []
    for t in range(steps):  # noqa: B007 (the lecture names its unused step t)
        # Forward pass:compute predictions and loss
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss)

        # Backward pass: manually compute gradients
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)

        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return losses, w1, w2


def lecture_autograd_cell(x, y, w1, w2, steps, relu=lambda h: h.clamp(min=0)):
    w1, w2 = w1.requires_grad_(), w2.requires_grad_()
    learning_rate = 1e-6
    losses = []
    for t in range(steps):  # noqa: B007 (the lecture names its unused step t)
        # PyTorch keeps track of them in the graph
        h = x.mm(w1)
        h_relu = relu(h)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.detach())

        loss.backward()

        with torch.no_grad():
            w1 -= learning_rate * w1.grad
            w2 -= learning_rate * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return losses, w1.detach(), w2.detach()


def lecture_custom_function_cell(x, y, w1, w2, steps):
    class MyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_y):
            (x,) = ctx.saved_tensors
            grad_input = grad_y.clone()
            grad_input[x < 0] = 0
            return grad_input

    def my_relu(x):
        return MyReLU.apply(x)

    return lecture_autograd_cell(x, y, w1, w2, steps, relu=my_relu)


LECTURE_CELLS = {
    "manual": lecture_tensor_cell,
    "autograd": lecture_autograd_cell,
    "custom_function": lecture_custom_function_cell,
}


@pytest.mark.parametrize("name", list(RAW))
def test_two_layer_step_is_the_lectures_cell(name):
    x, y, w1, w2 = lecture_data()
    want_losses, want_w1, want_w2 = LECTURE_CELLS[name](x, y, w1.clone(), w2.clone(), STEPS)

    mode = RAW[name].Mode({"w1": w1.clone(), "w2": w2.clone()}, "sse", 1e-6)
    assert type(mode) is RAW[name].TwoLayer
    got_losses = []
    for _ in range(STEPS):
        got_losses.append(mode.forward_backward(x, y))
        mode.update()
        mode.zero_grad()
    got = dict(mode.named_params())

    for step, (a, b) in enumerate(zip(got_losses, want_losses)):
        assert rel(a, b) <= TOL, f"loss at step {step}: {a.item()} != {b.item()}"
    assert rel(got["w1"], want_w1) <= TOL and rel(got["w2"], want_w2) <= TOL
    # the comparison means something only if the lecture's loop moved and learned
    assert rel(want_w1, w1) > 1e-6 and rel(want_w2, w2) > 1e-6
    assert want_losses[-1] < 0.9 * want_losses[0]


# ---------------------------------------------------------------------------------------------
# the depth-N generalisation against the two-layer step


def make_params(depth, bias, gen, D_in=20, H=8, D_out=5):
    widths = [D_in] + [H] * (depth - 1) + [D_out]
    params = {}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        params[f"w{i}"] = torch.randn(a, b, generator=gen, dtype=torch.float64) / a**0.5
        if bias:
            params[f"b{i}"] = torch.randn(b, generator=gen, dtype=torch.float64)
    return params


def make_batch(loss, gen, N=16, D_in=20, D_out=5):
    x = torch.randn(N, D_in, generator=gen, dtype=torch.float64)
    if loss == "cross_entropy":
        return x, torch.randint(0, D_out, (N,), generator=gen)
    return x, torch.randn(N, D_out, generator=gen, dtype=torch.float64)


def clone(params):
    return {n: p.clone() for n, p in params.items()}


@pytest.mark.parametrize("name", list(RAW))
def test_mode_picks_the_two_layer_step_for_two_layers_only(name):
    gen = torch.Generator().manual_seed(1)
    for depth in (1, 2, 3, 4):
        for bias in (False, True):
            mode = RAW[name].Mode(make_params(depth, bias, gen), "mse", 0.1)
            assert type(mode) is (RAW[name].TwoLayer if depth == 2 else RAW[name].Deep), (depth, bias)


@pytest.mark.parametrize("loss", ["sse", "mse", "cross_entropy"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("name", list(RAW))
def test_deep_takes_the_two_layer_step_on_two_layers(name, bias, loss):
    gen = torch.Generator().manual_seed(10 * bias + len(loss))
    params = make_params(2, bias, gen)
    two, deep = RAW[name].TwoLayer(clone(params), loss, 0.1), RAW[name].Deep(clone(params), loss, 0.1)
    for step in range(3):
        x, y = make_batch(loss, gen)
        a, b = two.forward_backward(x, y), deep.forward_backward(x, y)
        assert rel(a, b) <= TOL, f"loss at step {step}"
        grads_two, grads_deep = dict(two.named_grads()), dict(deep.named_grads())
        assert grads_two.keys() == grads_deep.keys() == params.keys()
        for n in params:
            assert rel(grads_deep[n], grads_two[n]) <= TOL, f"grad {n} at step {step}"
        for m in (two, deep):
            m.update()
            m.zero_grad()
    got_two, got_deep = dict(two.named_params()), dict(deep.named_params())
    for n in params:
        assert rel(got_deep[n], got_two[n]) <= TOL, n
        assert rel(got_two[n], params[n]) > 1e-6, f"{n} did not move: the comparison would be vacuous"


@pytest.mark.parametrize("loss", ["sse", "mse", "cross_entropy"])
@pytest.mark.parametrize("depth", [1, 3, 4])
def test_deep_manual_gradients_equal_autograds(depth, loss):
    gen = torch.Generator().manual_seed(100 * depth + len(loss))
    params = make_params(depth, True, gen)
    x, y = make_batch(loss, gen)
    got = manual.Deep(clone(params), loss, 0.1)
    want = autograd.Deep(clone(params), loss, 0.1)
    assert rel(got.forward_backward(x, y), want.forward_backward(x, y)) <= TOL
    got, want = dict(got.named_grads()), dict(want.named_grads())
    assert got.keys() == want.keys() == params.keys()
    for n in params:
        assert want[n].abs().max() > 0, f"{n}: a zero reference gradient would prove nothing"
        assert rel(got[n], want[n]) <= 1e-10, n


@pytest.mark.parametrize("depth", [2, 3])
def test_custom_function_reference_is_the_builtin_relu(depth):
    """custom_function's gradient check compares MyReLU's gradients with autograd's, at any depth."""
    gen = torch.Generator().manual_seed(depth)
    params = make_params(depth, True, gen)
    x, y = make_batch("mse", gen)
    mode = custom_function.Mode(clone(params), "mse", 0.1)
    mode.forward_backward(x, y)
    ref = mode.reference_grads(x, y)
    assert ref.keys() == params.keys()
    for n, g in mode.named_grads():
        assert rel(g, ref[n]) <= TOL, n


# ---------------------------------------------------------------------------------------------
# the About page shows the engine's code, not a copy of it


def engine_lines():
    return {line.strip() for path in (ROOT / "engine").rglob("*.py") for line in path.read_text().splitlines()}


def test_about_page_code_is_the_engines_source():
    assert [title.split(":")[0] for title, _, _ in about_text.MODES] == [
        "manual",
        "autograd",
        "custom Function",
        "nn",
        "nn + optim",
    ]
    source = engine_lines()
    for title, code, doc in about_text.MODES:
        assert code.strip() and doc.strip(), title
        for line in code.splitlines():
            assert line.strip() in source, f"{title}: {line!r} is not in the engine's source"


def test_about_page_shows_the_lectures_lines():
    code = {title.split(":")[0]: code for title, code, _ in about_text.MODES}
    for line in (
        "h_relu = h.clamp(min=0)",
        "grad_h_relu = grad_y_pred.mm(w2.t())",
        "grad_h = grad_h_relu.masked_fill(h < 0, 0)",
        "grad_w1 = x.t().mm(grad_h)",
    ):
        assert line in code["manual"], line
    for line in ("loss.backward()", "with torch.no_grad():", "w.grad.zero_()"):
        assert line in code["autograd"], line
    # MyReLU.backward as engine/modes/functions.py spells it, read from the file, not through inspect
    text = (ROOT / "engine" / "modes" / "functions.py").read_text()
    start = text.index("    def backward(ctx, grad_y):")
    backward = text[start : text.index("\n\n", start)]
    assert "class MyReLU(torch.autograd.Function):" in code["custom Function"]
    assert "masked_fill" in backward
    assert backward in code["custom Function"] or textwrap.dedent(backward) in code["custom Function"]
