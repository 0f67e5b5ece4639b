"""Edit while paused: re-initialise or scale one layer's weights between two steps, as TensorFlow Playground lets a
learner change a weight and watch what training does next.

    apply(mode, edit, step)   the edit ({"layer": name, "action": "reinit" | "scale", "factor": f}, as JSON text, the
                              control row's value) done in place on the mode's weights -> the event's data: the layer,
                              the action, the factor, the weights' norm before and after

A layer is one trained tensor as named_params() names it (the raw modes' w1, b1, ...; an nn model's "0.weight"), the
names the Per-layer charts use. reinit draws new weights as torch.nn.Linear and Conv initialise theirs, uniform in
+-1/sqrt(fan_in), fan_in being the inputs of one unit, from a generator seeded with the step: every process of a run
on several draws the same. A 1-D tensor (a bias, a norm's scale) has no fan-in and is only scaled. The optimizer's
state (Adam's moments) is left as it is. The trainer records the event, and the worker checkpoints the edited weights
(engine/runs/worker.py), so that a resume or a fork from this step has them.
"""

from __future__ import annotations

import json
import math

import torch

ACTIONS = ("reinit", "scale")


class EditRefused(ValueError):
    """An edit that names no layer of the run, or re-initialises a 1-D tensor."""


def fan_in(mode, w: torch.Tensor) -> int:
    """The inputs of one unit: the rows of the raw modes' (in, out) w; a filter's size in torch.nn's (out, in, ...)."""
    return w.shape[0] if mode.model is None else w[0].numel()


def apply(mode, edit: str, step: int) -> dict:
    e = json.loads(edit)
    layer, action, factor = e["layer"], e["action"], float(e.get("factor", 1.0))
    weights = dict(mode.named_params())
    if action not in ACTIONS:
        raise EditRefused(f"an edit is one of {', '.join(ACTIONS)}, not {action!r}")
    if layer not in weights:
        raise EditRefused(f"the run has no layer {layer!r}; its layers are {', '.join(weights)}")
    w = weights[layer]
    if action == "reinit" and w.dim() < 2:
        raise EditRefused(f"{layer} is 1-D (a bias or a scale): it has no fan-in to re-initialise from; scale it")
    before = float(w.norm())
    with torch.no_grad():
        if action == "scale":
            w.mul_(factor)
        else:
            bound = 1.0 / math.sqrt(fan_in(mode, w))
            g = torch.Generator().manual_seed(step)
            w.copy_(torch.empty(w.shape, dtype=w.dtype).uniform_(-bound, bound, generator=g))
    data = {"layer": layer, "action": action, "norm_before": before, "norm_after": float(w.norm())}
    return {**data, "factor": factor} if action == "scale" else data
