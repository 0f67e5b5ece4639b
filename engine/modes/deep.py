"""deep: the raw modes' step for any number of layers w1..wN (the lecture's net has exactly two).

What is different from manual.py and autograd.py: the layers are a list looped over, instead of the
lecture's named w1 and w2, so h and h_relu exist once per hidden layer. The step is the same:
tests/test_engine_lecture.py checks that on two layers it equals the lecture's, weight for weight.
The Deep class of each raw mode calls these functions; each mode's Mode picks it for depth != 2.
"""

import torch

from engine.modes.losses import LOSS_GRADS, LOSSES


def depth(params):
    """The number of layers: w1..wN (the biases b1..bN are optional)."""
    return sum(1 for n in params if n.startswith("w"))


def linear(x, w, b):
    return x.mm(w) if b is None else torch.addmm(b, x, w)  # x w + b in one kernel


def forward(params, x, relu):
    """y_pred, for autograd to differentiate: Linear, relu, ..., Linear."""
    n = depth(params)
    h_relu = x.reshape(len(x), -1)  # (N, D_in)
    for i in range(1, n):
        h = linear(h_relu, params[f"w{i}"], params.get(f"b{i}"))  # (N, H)
        h_relu = relu(h)  # (N, H)
    return linear(h_relu, params[f"w{n}"], params.get(f"b{n}"))  # (N, D_out)


def forward_backward(params, x, y, loss_name):
    """(loss, grads) by hand: the forward pass keeps every layer's input and h, then the backward
    pass applies the lecture's chain rule to them, last layer first."""
    # Forward pass: compute predictions and loss, keeping what the backward pass needs
    n = depth(params)
    h_relu = x.reshape(len(x), -1)  # (N, D_in)
    inputs, hs = [], []  # layer i's input and h, i = 1..n-1
    for i in range(1, n):
        inputs.append(h_relu)
        h = linear(h_relu, params[f"w{i}"], params.get(f"b{i}"))  # (N, H)
        hs.append(h)
        h_relu = h.clamp(min=0)  # (N, H)
    inputs.append(h_relu)
    y_pred = linear(h_relu, params[f"w{n}"], params.get(f"b{n}"))  # (N, D_out)
    loss = LOSSES[loss_name](y_pred, y)

    # Backward pass: manually compute gradients. grad_h is d loss / d (layer i's output before its ReLU),
    # which for the last layer is grad_y_pred.
    grads = {}
    grad_h = LOSS_GRADS[loss_name](y_pred, y)  # (N, D_out)
    for i in range(n, 0, -1):
        grads[f"w{i}"] = inputs[i - 1].t().mm(grad_h)  # (H, D_out), ..., (D_in, H)
        if f"b{i}" in params:
            grads[f"b{i}"] = grad_h.sum(0)
        if i > 1:
            grad_h_relu = grad_h.mm(params[f"w{i}"].t())  # (N, H)
            grad_h = grad_h_relu.masked_fill(hs[i - 2] < 0, 0)  # (N, H): see manual.py for masked_fill
    return loss, grads
