"""What the three raw modes (manual, autograd, custom_function) share besides their step: the weights as a dict
of plain tensors in the lecture's layout, the lr, the sum of the gradients over several processes, the gradient
check's reference, and the weights as a checkpoint holds them. The step itself (forward_backward, update,
zero_grad, where the gradients live) is each mode's own, in its own file.
"""

import torch
import torch.distributed as dist

from engine.modes import deep
from engine.modes.functions import lecture_relu
from engine.modes.losses import LOSSES


class Raw:
    optimizer = None  # the update is written by hand
    model = None  # plain tensors, no nn.Module (engine/tools/to_onnx.py puts them in one to export them)

    def __init__(self, params, loss, lr, group=None):
        """params: {"w1": (D_in, H), "w2": (H, D_out)}, with biases "b1": (H,), "b2": (D_out,); w1..wN for Deep.
        group: on several processes, the process group whose gradients sum_over_ranks adds (built by
        engine/build/assemble.py, engine/loop/distributed.py); None in one process."""
        self.params = params
        self.loss, self.lr = loss, lr
        self.group = group

    def sum_over_ranks(self, grads):
        """Data-parallel by hand: each process took its share of the batch, and the whole batch's gradient is the
        sum of the shares' gradients (their mean, for a mean loss). Every process then holds it and takes the
        same update. Nothing to do in one process."""
        if self.group is None:
            return
        for grad in grads:
            dist.all_reduce(grad, group=self.group)  # in place: the sum over the processes
            if self.loss != "sse":
                grad.div_(dist.get_world_size(self.group))

    def autograd_grads(self, x, y):
        """autograd's gradients at the same weights and batch, summed over the processes as the mode's own: the
        gradient check's reference for manual's hand-written backward and MyReLU's. The forward pass is the same
        (deep.forward), through lecture_relu, which has the lecture's derivative at h == 0."""
        params = {n: p.detach().clone().requires_grad_() for n, p in self.params.items()}
        loss = LOSSES[self.loss](deep.forward(params, x, lecture_relu), y)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        self.sum_over_ranks(grads.values())
        return grads

    def reference_grads(self, x, y):
        return None  # autograd's own gradients need no reference

    def named_params(self):
        return [(n, p.detach()) for n, p in self.params.items()]

    def state_dict(self):
        return {"model": {n: p.detach() for n, p in self.params.items()}}

    def load_weights(self, model):
        """The weights of a state_dict()["model"], put in place (a resume, engine/loop/checkpoint.py)."""
        with torch.no_grad():
            for name, w in self.params.items():
                w.copy_(model[name])
