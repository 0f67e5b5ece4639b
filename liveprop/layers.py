"""The user's model as the engine's telemetry reads a training mode (engine/loop/telemetry.py): its trainable
parameters and their gradients by layer name, and the first layer that holds a NaN or an inf. A model is an
nn.Module, or a dict of named tensors (the lecture's raw w1 and w2)."""

from __future__ import annotations

import sys

import torch
from torch import nn


def unwrapped(model: nn.Module) -> nn.Module:
    """The user's own module inside DistributedDataParallel's and torch.compile's wrappers, whose parameter names
    carry a prefix ("module.", "_orig_mod."): the layers are named as in the user's model."""
    dynamo = sys.modules.get("torch._dynamo.eval_frame")  # imported by torch.compile; never imported here
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif dynamo is not None and isinstance(model, dynamo.OptimizedModule):
            model = model._orig_mod
        else:
            return model


class Layers:
    """named_params, named_grads and reference_grads, as the telemetry reads a mode: the model's trainable
    parameters, named as in its state_dict. A user's loop has no reference gradients (no gradient check). With
    the optimizer, the weights and the state that the divergence guard keeps and puts back (engine/loop/guard.py
    DivergenceGuard: save, finite and restore; its replay needs the loop's own step, which only the loop has)."""

    def __init__(self, model: nn.Module | dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None):
        named = model.items() if isinstance(model, dict) else unwrapped(model).named_parameters()
        self.params = [(name, p) for name, p in named if p.requires_grad]
        self.optimizer = optimizer

    def named_params(self) -> list[tuple[str, torch.Tensor]]:
        return self.params

    def named_grads(self) -> list[tuple[str, torch.Tensor | None]]:
        return [(name, p.grad) for name, p in self.params]

    def reference_grads(self, x, y) -> None:
        return None

    def first_nonfinite(self) -> str | None:
        """The first layer, in the model's order, whose gradient holds a NaN or an inf, else the first whose
        weights do; None when all are finite. It reads from the device: only once the guard has fired."""
        for tensors in (self.named_grads(), self.params):
            for name, t in tensors:
                if t is not None and not bool(torch.isfinite(t).all()):
                    return name
        return None

    def order(self, layer: str) -> int:
        """The layer's place in the model (a layer the model does not have goes last)."""
        return next((i for i, (name, _) in enumerate(self.params) if name == layer), len(self.params))


class Taken:
    """The gradients and the weights as they were when autograd accumulated each gradient (copies): what the
    telemetry's before_update reads in a loop without an optimizer, which zeroes its gradients itself."""

    def __init__(self, taken: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        self.taken = taken  # name -> (gradient, weights)

    def named_params(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, w) for name, (_, w) in self.taken.items()]

    def named_grads(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, g) for name, (g, _) in self.taken.items()]

    def reference_grads(self, x, y) -> None:
        return None
