"""autograd: raw tensors with requires_grad=True; loss.backward() computes the gradients.

What is different from manual.py: no hand-written backward pass. PyTorch records the graph as
the forward pass runs, and the update happens under torch.no_grad(), then grad.zero_(), because
gradients accumulate.
"""
import torch

from ..losses import LOSSES


class Mode:
    relu = staticmethod(lambda h: h.clamp(min=0))                    # the lecture's h.clamp(min=0)

    def __init__(self, params, loss, lr):
        self.params = {n: p.requires_grad_() for n, p in params.items()}   # w1, b1, w2, ...
        depth = sum(1 for n in params if n.startswith("w"))
        self.layers = [(self.params[f"w{i}"], self.params.get(f"b{i}")) for i in range(1, depth + 1)]
        self.loss, self.lr = loss, lr

    def forward(self, x):
        h = x.reshape(len(x), -1)                                   # (N, D_in)
        for i, (w, b) in enumerate(self.layers, start=1):
            h = h.mm(w) if b is None else torch.addmm(b, h, w)     # (N, H)
            if i < len(self.layers):
                h = self.relu(h)
        return h                                                    # (N, D_out)

    def forward_backward(self, x, y):
        loss = LOSSES[self.loss](self.forward(x), y)
        loss.backward()                                             # fills p.grad for every param
        return loss.detach()

    def update(self):
        with torch.no_grad():
            for w in self.params.values():
                w.add_(w.grad, alpha=-self.lr)                      # w -= lr * w.grad

    def zero_grad(self):
        for w in self.params.values():
            w.grad.zero_()

    def named_params(self):
        return [(n, p.detach()) for n, p in self.params.items()]

    def named_grads(self):
        return [(n, p.grad) for n, p in self.params.items()]

    def reference_grads(self, x, y):
        return None                                                 # autograd is the reference

    def state_dict(self):
        return {"model": {n: p.detach() for n, p in self.params.items()}}
