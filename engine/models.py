"""Architectures: a plain dict from name to constructor, parts before the whole.

Every constructor takes (cfg, in_shape, out_dim) and returns an nn.Module. The raw-tensor modes
(manual, autograd, custom_function) take their weights from the MLP family's Linear layers, so
every mode starts from the same weights for the same seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import ConfigError


class ParallelBlock(nn.Module):
    """The lecture's ParalleBlock: two Linear maps of the same input, multiplied, then ReLU."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out)
        self.linear2 = nn.Linear(d_in, d_out)

    def forward(self, x):  # x: (N, D_in)
        h1 = self.linear1(x)  # (N, D_out)
        h2 = self.linear2(x)  # (N, D_out)
        return (h1 * h2).clamp(min=0)


def _flatten_if_needed(in_shape):
    return [nn.Flatten()] if len(in_shape) > 1 else []


def mlp_widths(cfg, in_shape, out_dim) -> list[int]:
    """[D_in, H, ..., H, D_out]: two_layer is the depth-2 case."""
    depth = 2 if cfg.arch == "two_layer" else cfg.depth
    return [math.prod(in_shape)] + [cfg.hidden] * (depth - 1) + [out_dim]


def mlp(cfg, in_shape, out_dim):
    """Linear, ReLU, ..., Linear. With depth 2 and the lecture's sizes this is its two-layer net."""
    widths = mlp_widths(cfg, in_shape, out_dim)
    layers = _flatten_if_needed(in_shape)
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=cfg.bias))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    # init torch, and init lecture for nn and optim: nn.Linear's own init, as the lecture's nn.Sequential
    # (the raw modes' lecture weights are drawn in build.lecture_draws, with x and y)
    if cfg.init == "randn":  # the lecture's w = torch.randn(D_in, H)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_()
                    if m.bias is not None:
                        m.bias.zero_()
    return model


def parallel_block(cfg, in_shape, out_dim):
    """The lecture's network: ParallelBlock(D_in, H), ParallelBlock(H, H), Linear(H, D_out)."""
    d_in, h = math.prod(in_shape), cfg.hidden
    return nn.Sequential(
        *_flatten_if_needed(in_shape), ParallelBlock(d_in, h), ParallelBlock(h, h), nn.Linear(h, out_dim)
    )


def cnn(cfg, in_shape, out_dim):
    """A small CNN for images (C, H, W): two conv blocks, then an MLP head."""
    if len(in_shape) != 3:
        raise ConfigError("arch cnn needs an image dataset (digits, mnist, fashion_mnist, cifar10, imagefolder)")
    c = in_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),  # (N, 16, H/2, W/2)
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),  # (N, 32, 4, 4)
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, out_dim),
    )


# torchvision ----------------------------------------------------------------------------------


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _replace_head(model: nn.Module, out_dim: int) -> str:
    """Swap the last nn.Linear for one with out_dim outputs; returns the head's module name."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, out_dim))
    return name


def load_pretrained(model: nn.Module, cfg) -> None:
    """Load weights from a local file (weights_only: never unpickles code) or torchvision's API."""
    import torchvision

    if cfg.pretrained == "torchvision":
        try:
            weights = torchvision.models.get_model_weights(cfg.tv_model).DEFAULT
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # no network, or no weights for this model
            raise ConfigError(
                f"could not get torchvision's pretrained weights for {cfg.tv_model} "
                f"({type(e).__name__}); download them on a machine with internet and "
                f"pass the file with --pretrained FILE"
            ) from None
    else:
        try:
            state = torch.load(cfg.pretrained, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"cannot read weights from {cfg.pretrained}: {str(e).splitlines()[0]}") from None
        if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a Liveprop checkpoint
            state = state["model"]
    own = model.state_dict()
    # a head trained for another number of classes is dropped: it is replaced anyway
    state = {k: v for k, v in state.items() if not (k in own and own[k].shape != v.shape)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or len(missing) > 2:
        raise ConfigError(
            f"{cfg.pretrained} does not hold {cfg.tv_model} weights "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys)"
        )


def torchvision_model(cfg, in_shape, out_dim):
    """A torchvision classifier by name, optionally pretrained, its head resized to out_dim."""
    import torchvision

    if cfg.tv_model not in torchvision_names():
        raise ConfigError(
            f"unknown torchvision model {cfg.tv_model!r}; e.g. resnet18, resnet34, "
            f"resnet50, resnet101, resnet152 (any of torchvision.models.list_models())"
        )
    if len(in_shape) != 3:
        raise ConfigError(
            "torchvision models need an image dataset (digits, mnist, fashion_mnist, cifar10, imagefolder)"
        )
    model = torchvision.models.get_model(cfg.tv_model, weights=None)
    if cfg.pretrained:
        load_pretrained(model, cfg)
    head = _replace_head(model, out_dim)
    if cfg.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(head + "."))
    return model


FLAT_ARCHS = ("two_layer", "mlp", "parallel_block")  # Linear layers of mlp_widths

ARCHS = {
    "two_layer": mlp,
    "mlp": mlp,
    "parallel_block": parallel_block,
    "cnn": cnn,
    "torchvision": torchvision_model,
}


def build(cfg, in_shape, out_dim) -> nn.Module:
    return ARCHS[cfg.arch](cfg, tuple(in_shape), out_dim)
