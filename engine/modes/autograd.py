"""autograd: raw tensors with requires_grad=True; loss.backward() computes the gradients.

What is different from manual.py: no hand-written backward pass. PyTorch records the graph as
the forward pass runs, and the update happens under torch.no_grad(), then grad.zero_(), because
gradients accumulate.

On several processes (--nproc), sum_over_ranks (raw.py) adds the processes' p.grad with dist.all_reduce
after backward, as manual.py does with its hand-written gradients.
"""

import torch

from engine.modes import deep
from engine.modes.losses import LOSSES
from engine.modes.raw import Raw


class TwoLayer(Raw):
    """The lecture's two-layer net, with its names; the biases b1, b2 are optional."""

    relu = staticmethod(lambda h: h.clamp(min=0))  # custom_function.py swaps in MyReLU

    def __init__(self, params, loss, lr, group=None):
        super().__init__({n: p.requires_grad_() for n, p in params.items()}, loss, lr, group)

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
        self.sum_over_ranks(w.grad for w in self.params.values())
        return loss.detach()

    def update(self):
        with torch.no_grad():  # the update is not part of the graph
            for w in self.params.values():
                w.add_(w.grad, alpha=-self.lr)  # w1 -= learning_rate * w1.grad

    def zero_grad(self):
        for w in self.params.values():
            w.grad.zero_()  # gradients accumulate otherwise

    def named_grads(self):
        return [(n, p.grad) for n, p in self.params.items()]


class Deep(TwoLayer):
    """Any number of layers w1..wN: the same step, looped over the layers (deep.py)."""

    def forward(self, x):
        return deep.forward(self.params, x, self.relu)


def Mode(params, loss, lr, group=None):
    """The lecture's TwoLayer when there are exactly two layers, Deep for any other number."""
    return (TwoLayer if deep.depth(params) == 2 else Deep)(params, loss, lr, group)
