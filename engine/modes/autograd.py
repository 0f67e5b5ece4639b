"""autograd: raw tensors with requires_grad=True; loss.backward() computes the gradients.

What is different from manual.py: no hand-written backward pass. PyTorch records the graph as
the forward pass runs, and the update happens under torch.no_grad(), then grad.zero_(), because
gradients accumulate.
"""

import torch

from ..losses import LOSSES
from . import deep


class TwoLayer:
    """The lecture's two-layer net, with its names; the biases b1, b2 are optional."""

    relu = staticmethod(lambda h: h.clamp(min=0))  # custom_function.py swaps in MyReLU

    def __init__(self, params, loss, lr):
        self.params = {n: p.requires_grad_() for n, p in params.items()}  # w1: (D_in, H), w2: (H, D_out), ...
        self.loss, self.lr = loss, lr

    def forward(self, x):
        w1, w2 = self.params["w1"], self.params["w2"]
        b1, b2 = self.params.get("b1"), self.params.get("b2")  # None without biases
        x = x.reshape(len(x), -1)  # (N, D_in)

        # Forward pass: compute predictions
        h = x.mm(w1) if b1 is None else torch.addmm(b1, x, w1)  # (N, H)
        h_relu = self.relu(h)  # (N, H)
        y_pred = h_relu.mm(w2) if b2 is None else torch.addmm(b2, h_relu, w2)  # (N, D_out)
        return y_pred

    def forward_backward(self, x, y):
        loss = LOSSES[self.loss](self.forward(x), y)
        loss.backward()  # fills w.grad for every param
        return loss.detach()

    def update(self):
        with torch.no_grad():  # the update is not part of the graph
            for w in self.params.values():
                w.add_(w.grad, alpha=-self.lr)  # w1 -= learning_rate * w1.grad

    def zero_grad(self):
        for w in self.params.values():
            w.grad.zero_()  # gradients accumulate otherwise

    def named_params(self):
        return [(n, p.detach()) for n, p in self.params.items()]

    def named_grads(self):
        return [(n, p.grad) for n, p in self.params.items()]

    def reference_grads(self, x, y):
        return None  # autograd is the reference

    def state_dict(self):
        return {"model": {n: p.detach() for n, p in self.params.items()}}

    def load_weights(self, model):
        with torch.no_grad():
            for name, w in self.params.items():
                w.copy_(model[name])


class Deep(TwoLayer):
    """Any number of layers w1..wN: the same step, looped over the layers (deep.py)."""

    def forward(self, x):
        return deep.forward(self.params, x, self.relu)


def Mode(params, loss, lr):
    """The lecture's TwoLayer when there are exactly two layers, Deep for any other number."""
    return (TwoLayer if deep.depth(params) == 2 else Deep)(params, loss, lr)
