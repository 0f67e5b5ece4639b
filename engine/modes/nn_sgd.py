"""nn: a torch.nn model and a functional loss; the update is still written by hand.

What is different from autograd.py: the weights live in the model's Linear layers, so the forward
pass is model(x), and the update loops over model.parameters(), then calls model.zero_grad().
With precision bf16 (and in nn_optim.py, which inherits it), the forward pass and the loss run under
torch.autocast; the raw modes keep their dtype (engine/config/fields.py says why).
"""

import contextlib

import torch

from engine.modes.losses import LOSSES


def autocast(model, precision):
    """bf16: torch.autocast to bfloat16 on the model's device, CPU or CUDA. Inside it, matmuls and
    convolutions run in bfloat16 while mse and cross-entropy run in float32 (autocast's own op lists),
    and sse's y_pred - y takes y's float32, so the loss comes out in float32. fp32 and tf32: nothing
    (tf32 is a flag that build sets)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)


class Mode:
    def __init__(self, model, loss, lr, precision="fp32"):
        self.model = model
        self.net = model  # what the forward pass calls: the model, or DistributedDataParallel around it (--nproc)
        self.loss, self.lr = loss, lr
        self.autocast = autocast(model, precision)

    def forward_backward(self, x, y):
        with self.autocast:  # forward pass and loss only
            loss = LOSSES[self.loss](self.net(x), y)
        loss.backward()  # outside autocast, as torch's docs advise: each op's backward runs in its forward's dtype
        return loss.detach()

    def update(self):
        with torch.no_grad():
            for param in self.model.parameters():
                if param.grad is not None:  # frozen layers have none
                    param.add_(param.grad, alpha=-self.lr)  # param -= lr * param.grad

    def zero_grad(self):
        self.model.zero_grad()

    def named_params(self):
        return [(n, p.detach()) for n, p in self.model.named_parameters() if p.requires_grad]

    def named_grads(self):
        return [(n, p.grad) for n, p in self.model.named_parameters() if p.requires_grad]

    def reference_grads(self, x, y):
        return None

    def state_dict(self):
        return {"model": self.model.state_dict()}

    def load_weights(self, model):
        self.model.load_state_dict(model)  # the module's buffers too
