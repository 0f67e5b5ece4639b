"""nn: a torch.nn model and a functional loss; the update is still written by hand.

What is different from autograd.py: the weights live in the model's Linear layers, so the forward
pass is model(x), and the update loops over model.parameters(), then calls model.zero_grad().
The forward pass and the loss run in the autocast context that build gives (bf16, also in nn_optim.py,
which inherits it); the raw modes keep their dtype (engine/config/fields.py says why).
"""

import contextlib

import torch

from engine.modes.losses import LOSSES


class Mode:
    optimizer = None  # the update below is written by hand

    def __init__(self, model, loss, lr, net=None, autocast=None):
        """net: what the forward pass calls, the model or a wrapper around it (torch.compile, or
        DistributedDataParallel on several processes); autocast: the context of the forward pass (bf16's
        torch.autocast), or none. Both made by engine/build/assemble.py build()."""
        self.model, self.net = model, model if net is None else net
        self.loss, self.lr = loss, lr
        self.autocast = autocast or contextlib.nullcontext()

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
