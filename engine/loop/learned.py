"""What the network learned, measured at a telemetry snapshot, on the device, with no host sync: the numbers join
the snapshot's pieces and reach the host with the flush's one copy (engine/loop/telemetry.py).

    dead/reluK       the share of the K-th ReLU's units that output zero for the whole batch (a unit: one output
                     feature, or one channel of a convolution); every run, the raw modes' h_relu too
    test/loss        the loss on the held-out test split (engine/build/data.py held_out); sse is scaled to a
                     batch of batch_size samples, so that it reads on the training loss's scale
    test/accuracy    the share of the test split classified right (classification)
    pictures         the playground sets' learned function (Picture): on a GRID x GRID square for a 2D set (the
                     probability of class 1: the decision regions), on a LINE for a 1D set (the prediction), and
                     for a net of at most MAX_TILED units a layer each hidden unit's output (one tile per neuron)
                     on a TILE x TILE square or the LINE; and once, the points shown over them

Every forward pass here runs under no_grad with an nn model in eval mode (BatchNorm's running statistics, no
dropout: the usual way to evaluate, and it draws nothing from the run's generators), then back in train mode.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch

from engine.config.canvas import EXTENT, GRID, LINE, TILE
from engine.modes import deep
from engine.modes.losses import LOSSES

MAX_TILED = 64  # units a layer at most for one tile per neuron
MAX_SHOWN = 1000  # training points drawn over the pictures at most


class Picture(NamedTuple):
    """A picture of the learned function at a snapshot: `name` is "regions" (GRID * GRID values, row by row from
    the square's bottom, the probability of class 1), "curve" (LINE values), "neurons/K" (the K-th hidden layer:
    units * TILE * TILE or units * LINE values, unit by unit), "points/train", "points/test" (x1, x2, label or
    x, y, point by point) or "points/target" (a 1D set's clean curve on the LINE). Where they lie:
    engine/config/canvas.py."""

    step: int
    name: str
    values: np.ndarray  # float16, as the store keeps them (a list of numbers will do)


def axis(n: int) -> torch.Tensor:
    """(n,) evenly spaced coordinates over EXTENT, both ends included."""
    return torch.linspace(*EXTENT, n)


def plane(n: int) -> torch.Tensor:
    """(n * n, 2) points of the square, row by row: x2 fixed along a row, x1 running."""
    a = axis(n)
    x2, x1 = torch.meshgrid(a, a, indexing="ij")
    return torch.stack([x1.reshape(-1), x2.reshape(-1)], 1)


def forward(mode, x: torch.Tensor, taps: list | None = None) -> torch.Tensor:
    """mode's prediction for x, and into taps, when given, each ReLU's output (N, units, ...) in the order the
    net computes them: the raw modes' h_relu of every hidden layer, an nn model's nn.ReLU modules (one module
    called twice, as in a ResNet block, taps twice)."""
    with torch.no_grad():
        if mode.model is None:  # w1..wN, the lecture's layout
            params = dict(mode.named_params())
            n = deep.depth(params)
            h_relu = x.reshape(len(x), -1)  # (N, D_in)
            for i in range(1, n):
                h_relu = deep.linear(h_relu, params[f"w{i}"], params.get(f"b{i}")).clamp(min=0)  # (N, H)
                if taps is not None:
                    taps.append(h_relu)
            return deep.linear(h_relu, params[f"w{n}"], params.get(f"b{n}"))  # (N, D_out)
        model, training = mode.model, mode.model.training
        hooks = []
        if taps is not None:
            relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
            hooks = [m.register_forward_hook(lambda _m, _i, out: taps.append(out)) for m in relus]
        model.eval()
        try:
            return model(x)
        finally:
            model.train(training)
            for h in hooks:
                h.remove()


@contextlib.contextmanager
def one_thread(device: torch.device):
    """On the CPU, torch's ops in one thread while the lens measures, then as many as before. Its ops are small (16,384
    points at most), and torch's parallel regions wait for their every thread: on this project's shared 2-core
    machine, two threads took 48 ms for the moons pictures and test split, one thread 2.3 ms (and the switch
    0.4 us)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def dead_shares(taps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per ReLU output (N, units, ...): the share of units that are zero for every sample (and every position of a
    channel), a 0-dim tensor each."""
    return [1 - (t > 0).reshape(t.shape[0], t.shape[1], -1).any(2).any(0).float().mean() for t in taps]


class Lens:
    """The snapshot's measures of what the net learned, for one run: see the module's docstring."""

    def __init__(
        self, device, dtype, loss: str, batch_size: int, test=None, picture: str = "", train=None, target=None
    ):
        """test: the held-out split (x, y) on the host, or None. picture: "plane" (a 2D set), "line" (1D) or "".
        train: the training points (x, y) on the host, drawn under the pictures (at most MAX_SHOWN of them).
        target: a 1D set's clean curve, a function of x, drawn on the LINE."""
        self.loss, self.batch_size, self.device = loss, batch_size, torch.device(device)
        self.test = None if test is None else (test[0].to(device, dtype), test[1].to(device))
        if self.test is not None and self.test[1].is_floating_point():
            self.test = (self.test[0], self.test[1].to(dtype))
        self.picture = picture
        self.points = []  # (name, device tensor): written once, at the first snapshot
        if picture:
            side = (GRID, TILE) if picture == "plane" else (LINE, LINE)
            make = plane if picture == "plane" else (lambda n: axis(n)[:, None])
            self.grid, self.tiles = (make(n).to(device, dtype) for n in side)
            for name, xy in (("train", train), ("test", test)):
                if xy is not None:
                    x, y = xy[0][:MAX_SHOWN], xy[1][:MAX_SHOWN]
                    xy = torch.cat([x.float(), y.float().reshape(len(x), -1)], 1)
                    self.points.append(("points/" + name, xy.to(device)))  # with the pieces, in one copy
            if target is not None:
                self.points.append(("points/target", target(axis(LINE)).to(device)))

    def measure(self, mode, x: torch.Tensor) -> list[tuple[str, str, torch.Tensor]]:
        """(kind, layer, device tensor) of every measure at this snapshot, x the step's batch; kind "picture" for a
        Picture (layer its name), else a scalar stored as "kind/layer"."""
        with one_thread(self.device):
            taps = []
            forward(mode, x, taps)
            out = [("dead", f"relu{k}", share) for k, share in enumerate(dead_shares(taps), start=1)]
            if self.test is not None:
                out += self._test(mode)
            if self.picture:
                out += self._pictures(mode)
            return out

    def _test(self, mode):
        x, y = self.test
        n = self.batch_size  # in batches of the run's size, so that it never takes more memory than a step's forward
        y_pred = torch.cat([forward(mode, x[i : i + n]) for i in range(0, len(x), n)])
        loss = LOSSES[self.loss](y_pred, y)
        if self.loss == "sse":
            loss = loss * self.batch_size / len(x)
        out = [("test", "loss", loss)]
        if not y.is_floating_point():  # classes
            out.append(("test", "accuracy", (y_pred.argmax(1) == y).float().mean()))
        return out

    def _pictures(self, mode):
        """The pictures, within half floats' range (the store keeps them so); NaN stays NaN."""
        return [(kind, name, t.float().clamp(-6e4, 6e4)) for kind, name, t in self._drawn(mode)]

    def _drawn(self, mode):
        out = [("picture", name, xy) for name, xy in self.points]
        self.points = []
        y_pred = forward(mode, self.grid)
        if self.picture == "plane":
            out.append(("picture", "regions", torch.softmax(y_pred.float(), 1)[:, 1]))
        else:
            out.append(("picture", "curve", y_pred[:, 0]))
        taps = []
        forward(mode, self.tiles, taps)
        for k, h in enumerate(taps, start=1):
            if h.dim() == 2 and h.shape[1] <= MAX_TILED:
                out.append(("picture", f"neurons/{k}", h.t()))  # (units, points)
        return out
