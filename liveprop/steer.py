"""A viewer's new learning rate, applied to a user's optimizer so that its scheduler goes on from it.

What torch's schedulers keep (torch/optim/lr_scheduler.py, torch 2.x): LRScheduler.__init__ stores each group's
starting rate as group["initial_lr"] and in scheduler.base_lrs. StepLR's get_lr multiplies the group's current
group["lr"] by gamma at each step_size (it chains from the rate it finds), so it goes on from a new rate as it
is. OneCycleLR writes group["initial_lr"], group["max_lr"] and group["min_lr"] and computes every step's rate
by annealing between two of them (linear or cosine in both ends), so with the three scaled by the same factor its
cycle goes on from the new rate: every later rate is the old schedule's times the factor. The closed forms
(step(epoch)), LambdaLR and CosineAnnealingLR read base_lrs, which only a scheduler passed to watch(scheduler=)
can have scaled.
"""

from __future__ import annotations

import torch

# the rates a param group holds: its own, and those the schedulers keep in it
GROUP_RATES = ("lr", "initial_lr", "max_lr", "min_lr")


def _scaled(value, factor: float):
    """value * factor; a tensor rate (capturable and fused optimizers) is scaled in place, so that what holds
    it (a captured graph) sees the new rate."""
    if isinstance(value, torch.Tensor):
        return value.mul_(factor)
    return value * factor


def set_lr(optimizer: torch.optim.Optimizer, lr: float, schedulers=()) -> float:
    """Give the first param group the rate lr and scale every group's rates by the same factor, so that
    groups with different rates keep their ratios, and the schedulers' rates with them; returns the first
    group's rate before."""
    old = float(optimizer.param_groups[0]["lr"])
    factor = lr / old if old else None
    for group in optimizer.param_groups:
        for key in GROUP_RATES:
            if key in group:
                group[key] = _scaled(group[key], factor) if factor is not None else lr
    for scheduler in schedulers:
        scheduler.base_lrs = [_scaled(r, factor) if factor is not None else lr for r in scheduler.base_lrs]
    return old
