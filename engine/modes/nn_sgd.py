"""nn: a torch.nn model and a functional loss; the update is still written by hand.

What is different from autograd.py: the weights live in the model's Linear layers, so the forward
pass is model(x), and the update loops over model.parameters(), then calls model.zero_grad().
"""

import torch

from ..losses import LOSSES


class Mode:
    def __init__(self, model, loss, lr):
        self.model = model
        self.loss, self.lr = loss, lr

    def forward_backward(self, x, y):
        loss = LOSSES[self.loss](self.model(x), y)
        loss.backward()
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
