"""Architectures: a plain dict from name to constructor, parts before the whole.

Every constructor takes (cfg, in_shape, out_dim) and returns an nn.Module. The raw-tensor modes
(manual, autograd, custom_function) take their weights from the MLP family's Linear layers, so
every mode starts from the same weights for the same seed.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping

import torch
import torch.nn as nn

from engine.errors import ConfigError


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


def _head_name(model: nn.Module) -> str:
    """The last nn.Linear: the classifier's head, replaced for the dataset's classes."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def _replace_head(model: nn.Module, out_dim: int) -> str:
    """Swap the last nn.Linear for one with out_dim outputs; returns the head's module name."""
    name = _head_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, out_dim))
    return name


def check_name(name: str) -> None:
    if name not in torchvision_names():
        raise ConfigError(
            f"unknown torchvision model {name!r}; e.g. resnet18, resnet34, "
            f"resnet50, resnet101, resnet152 (any of torchvision.models.list_models())"
        )


def architecture(name: str) -> nn.Module:
    """torchvision's model `name`, without weights and with its own head (on the meta device under
    `with torch.device("meta")`)."""
    import torchvision

    check_name(name)
    model = torchvision.models.get_model(name, weights=None)
    if not any(isinstance(m, nn.Linear) for m in model.modules()):  # squeezenet's head is a convolution
        raise ConfigError(f"torchvision model {name!r} has no nn.Linear head to resize for the dataset's classes")
    return model


def pretrained_error(name: str, why: str) -> ConfigError:
    return ConfigError(
        f"could not get torchvision's pretrained weights for {name} ({why}); download them on a "
        f"machine with internet and pass the file with --pretrained FILE"
    )


def read_weights(path: str) -> dict:
    """A state_dict from a file, checked to be one: a mapping of names to tensors (a Liveprop checkpoint's
    "model" entry is taken). torch.load with weights_only=True: a pickle that would run code is refused, never
    executed. A zip archive (torch.save's format) is memory-mapped, so reading the shapes copies nothing."""
    if os.path.getsize(path) == 0:
        raise ConfigError(f"cannot read weights from {path}: the file is empty")
    try:
        with warnings.catch_warnings():  # torch prints warnings about some files' pickle protocol
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:  # torch's own text for it suggests weights_only=False: not here
        raise ConfigError(
            f"cannot read weights from {path}: it holds Python objects other than tensors, or is damaged, "
            "and only a plain state_dict is unpickled; save one with torch.save(model.state_dict(), FILE)"
        ) from None
    except Exception as e:  # truncated (EOFError, a zip without its directory), or not torch's at all
        first = (str(e).strip().splitlines() or [""])[0][:200]
        why = type(e).__name__ + (f": {first}" if first else "")
        raise ConfigError(f"cannot read weights from {path}: {why}") from None
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):  # a Liveprop checkpoint
        state = state["model"]
    if not isinstance(state, Mapping):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state_dict (parameter names to tensors)")
    for k, v in state.items():
        if not (isinstance(k, str) and isinstance(v, torch.Tensor)):
            raise ConfigError(f"{path}: entry {str(k)[:80]!r} is a {type(v).__name__}, not a tensor")
    return dict(state)


def _first_mismatch(model: nn.Module, state: dict, name: str) -> str | None:
    """The first way state does not fit model (torchvision's `name`), or None. The head may have another
    shape (it is replaced for the dataset's classes anyway) or be absent; every other entry must be there,
    with the model's shape."""
    own, head = model.state_dict(), _head_name(model) + "."
    for k, v in state.items():
        if k not in own:
            return f"it has {k!r}, which {name} has not"
        if v.shape != own[k].shape and not k.startswith(head):
            return f"{k!r} is {tuple(v.shape)} there, {tuple(own[k].shape)} in {name}"
    # a BatchNorm fills in its num_batches_tracked when a file from before it lacks it
    missing = [k for k in own if k not in state and not k.startswith(head) and not k.endswith("num_batches_tracked")]
    return f"it lacks {missing[0]!r}" if missing else None


def check_pretrained(cfg) -> None:
    """--pretrained FILE read and matched against the model built on the meta device (shapes only, nothing
    allocated): a bad file is refused before a launch, with one line naming the first mismatch."""
    state = read_weights(cfg.pretrained)
    with torch.device("meta"):
        model = architecture(cfg.tv_model)
    _check_fit(model, state, cfg)


def _check_fit(model, state, cfg):
    why = _first_mismatch(model, state, cfg.tv_model)
    if why:
        raise ConfigError(f"{cfg.pretrained} does not hold {cfg.tv_model} weights: {why}")


def load_pretrained(model: nn.Module, cfg) -> None:
    """Load weights from a local file (read_weights: never unpickles code) or torchvision's API."""
    import torchvision

    if cfg.pretrained == "torchvision":
        try:
            weights = torchvision.models.get_model_weights(cfg.tv_model).DEFAULT
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # no network, or no weights for this model
            raise pretrained_error(cfg.tv_model, type(e).__name__) from None
    else:
        state = read_weights(cfg.pretrained)
    _check_fit(model, state, cfg)
    own = model.state_dict()
    # a head trained for another number of classes is dropped: it is replaced anyway
    model.load_state_dict({k: v for k, v in state.items() if v.shape == own[k].shape}, strict=False)


def torchvision_model(cfg, in_shape, out_dim):
    """A torchvision classifier by name, optionally pretrained, its head resized to out_dim."""
    model = architecture(cfg.tv_model)
    if len(in_shape) != 3:
        raise ConfigError(
            "torchvision models need an image dataset (digits, mnist, fashion_mnist, cifar10, imagefolder)"
        )
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
