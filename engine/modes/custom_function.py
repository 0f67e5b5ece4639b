"""custom_function: the autograd mode, but the ReLU is the lecture's MyReLU, a torch.autograd.Function.

What is different from autograd.py: only the ReLU. MyReLU (engine/modes/functions.py) saves its input
with ctx.save_for_backward and writes its own backward. The gradient check compares it with
autograd differentiating the same max(h, 0) built from torch ops (engine/modes/functions.py lecture_relu)
on the same weights and batch (engine/modes/raw.py autograd_grads).
"""

from engine.modes import autograd, deep
from engine.modes.functions import my_relu


class TwoLayer(autograd.TwoLayer):
    relu = staticmethod(my_relu)  # h_relu = my_relu(h)

    def reference_grads(self, x, y):
        """The same step with autograd's own derivative of the ReLU, for the gradient check (raw.py)."""
        return self.autograd_grads(x, y)


class Deep(TwoLayer):
    forward = autograd.Deep.forward  # the loop over w1..wN, with MyReLU


def Mode(params, loss, lr, group=None):
    """The lecture's TwoLayer when there are exactly two layers, Deep for any other number."""
    return (TwoLayer if deep.depth(params) == 2 else Deep)(params, loss, lr, group)
