"""One step of the lecture's two-layer net, every named tensor of its code kept: what the Code tab's Step shows.

    lecture_step(mode, x, y)   -> {name: summary} for h, h_relu, y_pred, loss, grad_y_pred, grad_w2, grad_h_relu,
                                  the h < 0 mask, grad_h, grad_w1 (and grad_b1, grad_b2 with biases): each one's shape,
                                  its first values and its norm, and beside each gradient autograd's own
    tensors(w, x, y, loss)     the same tensors, whole: the lecture's forward and backward written out, and autograd's

It computes on copies of the mode's weights at the batch the step takes, and leaves the mode alone: the trainer takes
the step itself (engine/loop/trainer.py, the step command). Autograd's gradients of the intermediate tensors come from
retain_grad() on them, through lecture_relu (engine/modes/functions.py), which has the lecture's derivative at h == 0.
"""

from __future__ import annotations

import torch

from engine.modes import deep
from engine.modes.functions import lecture_relu
from engine.modes.losses import LOSS_GRADS, LOSSES

FIRST = 4  # values shown of each tensor
# each gradient of the lecture's backward pass, and the tensor whose .grad autograd fills with the same
AUTOGRAD_OF = {
    "grad_y_pred": "y_pred",
    "grad_w2": "w2",
    "grad_h_relu": "h_relu",
    "grad_h": "h",
    "grad_w1": "w1",
    "grad_b2": "b2",
    "grad_b1": "b1",
}


class NotTraceable(ValueError):
    """A mode without the lecture's names: nn and optim (an nn.Module), or a raw net of other than two layers."""


def tensors(w: dict, x, y, loss_name: str) -> tuple[dict, dict]:
    """(the lecture's tensors, autograd's gradients by the lecture's name), for the weights w (w1, w2, b1, b2)."""
    w1, w2, b1, b2 = w["w1"], w["w2"], w.get("b1"), w.get("b2")
    x = x.reshape(len(x), -1)  # (N, D_in)
    t = {}
    # Forward pass: compute predictions and loss
    t["h"] = h = deep.linear(x, w1, b1)  # (N, H)
    t["h_relu"] = h_relu = h.clamp(min=0)  # (N, H)
    t["y_pred"] = y_pred = deep.linear(h_relu, w2, b2)  # (N, D_out)
    t["loss"] = LOSSES[loss_name](y_pred, y)
    # Backward pass: manually compute gradients
    t["grad_y_pred"] = grad_y_pred = LOSS_GRADS[loss_name](y_pred, y)  # (N, D_out)
    t["grad_w2"] = h_relu.t().mm(grad_y_pred)  # (H, D_out)
    t["grad_h_relu"] = grad_h_relu = grad_y_pred.mm(w2.t())  # (N, H)
    t["h < 0"] = h < 0  # the mask of grad_h[h < 0] = 0
    t["grad_h"] = grad_h = grad_h_relu.masked_fill(h < 0, 0)  # (N, H)
    t["grad_w1"] = x.t().mm(grad_h)  # (D_in, H)
    if b2 is not None:
        t["grad_b2"] = grad_y_pred.sum(0)
    if b1 is not None:
        t["grad_b1"] = grad_h.sum(0)
    # autograd on copies of the weights, its intermediate tensors' gradients kept
    leaves = {n: p.detach().clone().requires_grad_() for n, p in w.items()}
    a = {"h": deep.linear(x, leaves["w1"], leaves.get("b1"))}
    a["h_relu"] = lecture_relu(a["h"])
    a["y_pred"] = deep.linear(a["h_relu"], leaves["w2"], leaves.get("b2"))
    for v in a.values():
        v.retain_grad()
    LOSSES[loss_name](a["y_pred"], y).backward()
    both = {**a, **leaves}
    auto = {g: both[of].grad for g, of in AUTOGRAD_OF.items() if g in t}
    return t, auto


def _summary(t: torch.Tensor) -> dict:
    v = t.detach().double()
    return {"shape": list(t.shape), "first": v.flatten()[:FIRST].tolist(), "norm": float(v.norm())}


def check(mode) -> None:
    """NotTraceable unless the mode holds the lecture's two-layer net of raw tensors."""
    if mode.model is not None or deep.depth(dict(mode.named_params())) != 2:
        raise NotTraceable("Step traces the lecture's two-layer net of raw tensors (manual, autograd, custom Function)")


def lecture_step(mode, x, y) -> dict:
    """{name: {"shape", "first", "norm"}}, gradients with {"autograd": the same of autograd's, "rel_diff":
    ||grad - autograd|| / ||autograd||}, and the mask with {"share": the share of h < 0}."""
    check(mode)
    t, auto = tensors(dict(mode.named_params()), x, y, mode.loss)
    out = {}
    with torch.no_grad():
        for name, v in t.items():
            out[name] = _summary(v)
            if name == "h < 0":
                out[name]["share"] = float(v.double().mean())
            if name in auto:
                a = auto[name].double()
                diff = float((v.double() - a).norm() / a.norm()) if float(a.norm()) else float((v.double() - a).norm())
                out[name].update(autograd=_summary(a), rel_diff=diff)
    return out
