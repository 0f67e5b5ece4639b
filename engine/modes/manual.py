"""manual: raw tensors, the forward and the backward pass written by hand (the lecture's first program).

What is different: no autograd at all. The forward pass keeps h and h_relu, and the backward pass
applies the chain rule to them, last layer first. The lecture's grad_h[h < 0] = 0 is a boolean-mask
assignment that syncs with the host; masked_fill does not.

On several processes (--nproc) the step is made data-parallel by hand: each process runs it on its
share of the batch, then sum_over_ranks (raw.py) adds the shares' gradients with dist.all_reduce.
"""

import torch

from engine.modes import deep
from engine.modes.losses import LOSS_GRADS, LOSSES
from engine.modes.raw import Raw


class TwoLayer(Raw):
    """The lecture's two-layer net, with its names; the biases b1, b2 are optional."""

    def __init__(self, params, loss, lr, group=None):
        super().__init__(params, loss, lr, group)
        self.grads = {}  # the backward pass below writes them, every step

    def forward_backward(self, x, y):
        w1, w2 = self.params["w1"], self.params["w2"]
        b1, b2 = self.params.get("b1"), self.params.get("b2")  # None without biases
        x = x.reshape(len(x), -1)  # (N, D_in)

        # Forward pass: compute predictions
        h = x.mm(w1) if b1 is None else torch.addmm(b1, x, w1)  # (N, H)
        h_relu = h.clamp(min=0)  # (N, H)
        y_pred = h_relu.mm(w2) if b2 is None else torch.addmm(b2, h_relu, w2)  # (N, D_out)
        loss = LOSSES[self.loss](y_pred, y)

        # Backward pass: manually compute gradients
        grad_y_pred = LOSS_GRADS[self.loss](y_pred, y)  # (N, D_out)
        grad_w2 = h_relu.t().mm(grad_y_pred)  # (H, D_out)
        grad_h_relu = grad_y_pred.mm(w2.t())  # (N, H)
        # the lecture: grad_h = grad_h_relu.clone(); grad_h[h < 0] = 0. A boolean-mask assignment
        # syncs with the host on CUDA; masked_fill computes the same thing on the device.
        grad_h = grad_h_relu.masked_fill(h < 0, 0)  # (N, H)
        grad_w1 = x.t().mm(grad_h)  # (D_in, H)
        self.grads = {"w1": grad_w1, "w2": grad_w2}
        if b1 is not None:
            self.grads["b1"] = grad_h.sum(0)  # (H,)
        if b2 is not None:
            self.grads["b2"] = grad_y_pred.sum(0)  # (D_out,)
        self.sum_over_ranks(self.grads.values())
        return loss

    def update(self):
        for name, w in self.params.items():
            w.add_(self.grads[name], alpha=-self.lr)  # w1 -= learning_rate * grad_w1

    def zero_grad(self):
        pass  # grads are rebuilt each step

    def named_grads(self):
        return [(n, self.grads.get(n)) for n in self.params]

    def reference_grads(self, x, y):
        """autograd's gradients at the same weights and batch, for the gradient check (raw.py)."""
        return self.autograd_grads(x, y)


class Deep(TwoLayer):
    """Any number of layers w1..wN: the same step, looped over the layers (deep.py)."""

    def forward_backward(self, x, y):
        loss, self.grads = deep.forward_backward(self.params, x, y, self.loss)
        self.sum_over_ranks(self.grads.values())
        return loss


def Mode(params, loss, lr, group=None):
    """The lecture's TwoLayer when there are exactly two layers, Deep for any other number."""
    return (TwoLayer if deep.depth(params) == 2 else Deep)(params, loss, lr, group)
