"""manual: raw tensors, the forward and the backward pass written by hand (the lecture's first program).

What is different: no autograd at all. The forward pass keeps h and h_relu, and the backward pass
applies the chain rule to them, last layer first. The lecture's grad_h[h < 0] = 0 is a boolean-mask
assignment that syncs with the host; masked_fill does not.

On several processes (--nproc) the step is made data-parallel by hand: each process runs it on its
share of the batch, then sum_over_ranks adds the shares' gradients with dist.all_reduce.
"""

import torch
import torch.distributed as dist

from engine.modes import autograd, deep
from engine.modes.functions import lecture_relu
from engine.modes.losses import LOSS_GRADS, LOSSES


class TwoLayer:
    """The lecture's two-layer net, with its names; the biases b1, b2 are optional."""

    group = None  # several processes: their process group (engine/loop/distributed.py); None in one

    def __init__(self, params, loss, lr):
        self.params = params  # {"w1": (D_in, H), "w2": (H, D_out)}, with biases "b1": (H,), "b2": (D_out,)
        self.loss, self.lr = loss, lr
        self.grads = {}

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
        self.sum_over_ranks()
        return loss

    def sum_over_ranks(self):
        """Data-parallel by hand: each process took its share of the batch, and the whole batch's gradient
        is the sum of the shares' gradients (their mean, for a mean loss). Every process then holds it and
        takes the same update. Nothing to do in one process."""
        if self.group is None:
            return
        for grad in self.grads.values():
            dist.all_reduce(grad, group=self.group)  # in place: the sum over the processes
            if self.loss != "sse":
                grad.div_(dist.get_world_size(self.group))

    def update(self):
        for name, w in self.params.items():
            w.add_(self.grads[name], alpha=-self.lr)  # w1 -= learning_rate * grad_w1

    def zero_grad(self):
        pass  # grads are rebuilt each step

    def named_params(self):
        return list(self.params.items())

    def named_grads(self):
        return [(n, self.grads.get(n)) for n in self.params]

    def reference_grads(self, x, y):
        """autograd's gradients at the same weights and batch, for the gradient check (through
        lecture_relu: the same derivative at h == 0 as the mask below)."""
        ref = autograd.Mode({n: p.detach().clone() for n, p in self.params.items()}, self.loss, self.lr)
        ref.relu, ref.group = lecture_relu, self.group  # the whole batch's gradients too
        ref.forward_backward(x, y)
        return dict(ref.named_grads())

    def state_dict(self):
        return {"model": dict(self.params)}

    def load_weights(self, model):
        """The weights of a state_dict()["model"], put in place (a resume, engine/loop/checkpoint.py)."""
        for name, w in self.params.items():
            w.copy_(model[name])


class Deep(TwoLayer):
    """Any number of layers w1..wN: the same step, looped over the layers (deep.py)."""

    def forward_backward(self, x, y):
        loss, self.grads = deep.forward_backward(self.params, x, y, self.loss)
        self.sum_over_ranks()
        return loss


def Mode(params, loss, lr):
    """The lecture's TwoLayer when there are exactly two layers, Deep for any other number."""
    return (TwoLayer if deep.depth(params) == 2 else Deep)(params, loss, lr)
