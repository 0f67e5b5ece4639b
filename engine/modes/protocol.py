"""What the loop asks of a mode: two typing.Protocol classes, the only place the interface is written.

    Steps   the training step in its parts, and the weights and gradients by name: all the divergence guard
            (engine/loop/guard.py) needs to put weights back and replay steps, from a mode or from a wrapper
            around a user's own model and optimizer
    Mode    Steps, and what the engine's trainer, telemetry and checkpoints need besides: the lr, the gradient
            check's reference, the weights as a checkpoint holds them

Every mode in engine/modes/MODES implements Mode (tests/test_mode_protocol.py checks each one, built). The loop
calls these members and nothing else: it never asks a mode what it has (hasattr, getattr), and never sets an
attribute on one but the lr, which Mode declares writable. What a mode is built with (a compiled or
DistributedDataParallel net, an autocast context, the process group of several processes) is decided once, in
engine/build/assemble.py build(), and passed to its constructor.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Steps(Protocol):
    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The torch.optim optimizer whose step() is update(); None for an update written by hand."""

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's loss, a 0-dim tensor left on the device, with the gradients of the weights computed."""

    def update(self) -> None:
        """One step of the weights against their gradients, at the lr."""

    def zero_grad(self) -> None:
        """Clear the gradients for the next step."""

    def named_params(self) -> list[tuple[str, torch.Tensor]]:
        """(name, weight) of every trained weight (frozen ones left out): the tensors themselves, detached."""

    def named_grads(self) -> list[tuple[str, torch.Tensor | None]]:
        """(name, gradient) in the order of named_params; None for a weight that got no gradient."""


@runtime_checkable
class Mode(Steps, Protocol):
    lr: float  # the learning rate of the next update; the trainer writes it (a set_lr command, a checkpoint's)
    loss: str  # the loss's name in engine/modes/losses.py LOSSES (read by the step trace and the loss landscape)

    @property
    def model(self) -> torch.nn.Module | None:
        """The nn.Module trained (nn, optim), unwrapped; None for the raw modes' plain tensors."""

    def reference_grads(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The gradient check's reference: autograd's gradients of the same step at the same weights and batch,
        or None when the mode's own gradients are autograd's."""

    def state_dict(self) -> dict:
        """{"model": the weights by name} and, with an optimizer, {"optimizer": its state_dict()}: a checkpoint's."""

    def load_weights(self, model: dict) -> None:
        """Put the weights of a state_dict()["model"] in place (engine/loop/checkpoint.py restore)."""
