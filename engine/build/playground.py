"""Playground datasets, drawn here from the seed, TensorFlow Playground's kind: small enough to see what a
network learns (the decision regions of a 2D set, the learned function of a 1D one).

    2D classification, two classes, points in about [-1, 1]^2:
        moons      two interleaved half circles
        circles    a disc inside a ring
        spiral     two arms winding around each other (needs a wide net)
        xor        the four quadrants, the sign of x1 * x2 (no straight line separates them)
        gaussians  two round blobs
    1D regression, x in [-1, 1]:
        sine       sin(pi x)
        abs        |x|
        step       0 left of 0, 1 right of it
        poly       x^3 - x / 2, a noisy polynomial

`noise` is the spread added to every point (2D: to the coordinates, 1D: to the target), in units of the
set's own scale. SETS is a plain dict, name -> draw(n, noise, generator) -> (x, y); the split into the
points trained on and the held-out test points is engine/build/data.py's, as for every dataset.
"""

from __future__ import annotations

import math

import torch

from engine.config.fields import PLAYGROUND_1D, PLAYGROUND_2D


def _labels(n, g):
    return torch.randint(0, 2, (n,), generator=g)  # (n,) the class of each point


def moons(n, noise, g):
    y = _labels(n, g)
    t = torch.rand(n, generator=g) * math.pi  # along each half circle
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)  # (n, 2)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(y[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25])
    return (x + noise * torch.randn(n, 2, generator=g)) / 1.2, y


def circles(n, noise, g):
    y = _labels(n, g)
    r = torch.where(y == 0, torch.rand(n, generator=g) * 0.4, 0.65 + torch.rand(n, generator=g) * 0.3)
    a = torch.rand(n, generator=g) * 2 * math.pi
    x = torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)
    return x + noise * torch.randn(n, 2, generator=g), y


def spiral(n, noise, g):
    y = _labels(n, g)
    t = torch.rand(n, generator=g)  # 0 at the centre, 1 at the outer end
    a = 3 * math.pi * t + math.pi * y  # the second arm is the first turned half a circle
    x = torch.stack([t * torch.cos(a), t * torch.sin(a)], 1)
    return x + noise * torch.randn(n, 2, generator=g), y


def xor(n, noise, g):
    x = torch.rand(n, 2, generator=g) * 2 - 1
    x = x + 0.05 * torch.sign(x)  # a small margin around the axes
    y = (x[:, 0] * x[:, 1] < 0).long()
    return x + noise * torch.randn(n, 2, generator=g), y


def gaussians(n, noise, g):
    y = _labels(n, g)
    centre = torch.where(y[:, None] == 0, torch.tensor([-0.5, -0.5]), torch.tensor([0.5, 0.5]))
    return centre + (0.15 + noise) * torch.randn(n, 2, generator=g), y


TARGETS = {  # the clean curve of each 1D set
    "sine": lambda x: torch.sin(math.pi * x),
    "abs": torch.abs,
    "step": lambda x: (x > 0).to(x.dtype),
    "poly": lambda x: x**3 - x / 2,
}


def _curve(name):
    def draw(n, noise, g):
        x = torch.rand(n, 1, generator=g) * 2 - 1  # (n, 1)
        return x, TARGETS[name](x) + noise * torch.randn(n, 1, generator=g)

    return draw


SETS = {
    "moons": moons,
    "circles": circles,
    "spiral": spiral,
    "xor": xor,
    "gaussians": gaussians,
    **{name: _curve(name) for name in TARGETS},
}
assert tuple(SETS) == PLAYGROUND_2D + PLAYGROUND_1D
EXTENT = (-1.5, 1.5)  # the square (2D) or the line (1D) the learned function is drawn over


def draw(name: str, n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): n points of set `name`, drawn from the seed; x (n, 2) or (n, 1) float32, y (n,) classes or (n, 1)."""
    x, y = SETS[name](n, noise, torch.Generator().manual_seed(seed))
    return x.float(), y if y.dtype == torch.long else y.float()
