"""custom_function: the autograd mode, but the ReLU is the lecture's MyReLU, a torch.autograd.Function.

What is different from autograd.py: only the ReLU. MyReLU (engine/functions.py) saves its input
with ctx.save_for_backward and writes its own backward. The gradient check compares it with the
built-in torch.relu on the same weights and batch.
"""
import torch

from ..functions import my_relu
from . import autograd


class Mode(autograd.Mode):
    relu = staticmethod(my_relu)

    def reference_grads(self, x, y):
        """The same step with the built-in ReLU, for the gradient check."""
        ref = BuiltinReLU({n: p.detach().clone() for n, p in self.params.items()}, self.loss, self.lr)
        ref.forward_backward(x, y)
        return dict(ref.named_grads())


class BuiltinReLU(autograd.Mode):
    relu = staticmethod(torch.relu)
