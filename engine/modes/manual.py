"""manual: raw tensors, the forward and the backward pass written by hand (the lecture's first program).

What is different: no autograd at all. Each layer keeps its input and its pre-activation from the
forward pass, and the backward pass applies the chain rule to them, last layer first. The lecture's
grad_h[h < 0] = 0 is a boolean-mask assignment that syncs with the host; masked_fill does not.
"""
import torch

from ..losses import LOSS_GRADS, LOSSES


class Mode:
    def __init__(self, params, loss, lr):
        self.params = params            # {"w1": (D_in, H), "b1": (H,), "w2": (H, D_out), ...}
        depth = sum(1 for n in params if n.startswith("w"))
        self.layers = [(f"w{i}", f"b{i}" if f"b{i}" in params else None) for i in range(1, depth + 1)]
        self.loss, self.lr = loss, lr
        self.grads = {}

    def forward_backward(self, x, y):
        # Forward pass: compute predictions and loss, keeping what the backward pass needs
        h = x.reshape(len(x), -1)                                   # (N, D_in)
        inputs, pre = [], []
        for i, (w, b) in enumerate(self.layers, start=1):
            w, b = self.params[w], self.params.get(b)
            inputs.append(h)
            z = h.mm(w) if b is None else torch.addmm(b, h, w)    # (N, H)
            pre.append(z)
            h = z.clamp(min=0) if i < len(self.layers) else z
        y_pred = h                                                  # (N, D_out)
        loss = LOSSES[self.loss](y_pred, y)

        # Backward pass: manually compute gradients
        grad = LOSS_GRADS[self.loss](y_pred, y)                     # d loss / d y_pred
        for i in range(len(self.layers) - 1, -1, -1):
            w, b = self.layers[i]
            self.grads[w] = inputs[i].t().mm(grad)                  # (D_in, H)
            if b is not None:
                self.grads[b] = grad.sum(0)
            if i > 0:
                grad = grad.mm(self.params[w].t())                  # d loss / d h_relu
                grad = grad.masked_fill(pre[i - 1] < 0, 0)          # d loss / d h: ReLU passes h >= 0
        return loss

    def update(self):
        for name, w in self.params.items():
            w.add_(self.grads[name], alpha=-self.lr)                # w -= lr * grad

    def zero_grad(self):
        pass                                                        # grads are rebuilt each step

    def named_params(self):
        return list(self.params.items())

    def named_grads(self):
        return [(n, self.grads.get(n)) for n in self.params]

    def reference_grads(self, x, y):
        """autograd's gradients at the same weights and batch, for the gradient check."""
        from .autograd import Mode as Autograd
        ref = Autograd({n: p.detach().clone() for n, p in self.params.items()}, self.loss, self.lr)
        ref.forward_backward(x, y)
        return dict(ref.named_grads())

    def state_dict(self):
        return {"model": dict(self.params)}
