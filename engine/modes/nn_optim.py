"""optim: a torch.nn model with a torch.optim optimizer (the lecture prefers Adam).

What is different from nn_sgd.py: optimizer.step() does the update, with momentum, adaptive
rates or weight decay as configured (engine/build/optimizers.py), and optimizer.zero_grad() clears.
"""

import contextlib

from engine.modes import nn_sgd


class Mode(nn_sgd.Mode):
    def __init__(self, model, loss, optimizer, net=None, autocast=None):
        self.model, self.net = model, model if net is None else net
        self.loss, self.optimizer = loss, optimizer  # the lr lives in the optimizer's param groups
        self.autocast = autocast or contextlib.nullcontext()

    @property
    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for group in self.optimizer.param_groups:
            group["lr"] = value

    def update(self):
        self.optimizer.step()

    def zero_grad(self):
        self.optimizer.zero_grad()

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
