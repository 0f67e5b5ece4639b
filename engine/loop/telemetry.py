"""Telemetry computed on the device, brought to the host in one transfer per flush.

Per step, the hot loop only appends the loss tensor it already has to a Python list: no kernel,
no host sync. On the CPU, where the loss is on the host already and reading it waits for nothing, it
keeps the loss as a float: 2,000 tensors held until the flush, and a stack of them at every look,
cost the CPU loop more than its reads. Every K steps a snapshot computes, still on the device:
    per-layer weight and gradient histograms (explicit ranges: no histc min == max readback),
    weight and gradient norms, the update/weight ratio ||dw|| / ||w||,
    non-finite counts (histograms never raise on NaN or inf: those values are counted instead),
    and, where the mode has a reference, the gradient check's norm ratio per layer (grad_ratio).
`flush()` concatenates everything pending into one tensor, copies it once, and returns a Flush.

Between flushes, every few steps a look at the losses (engine/loop/guard.py NonFiniteWatch) makes a
flush due as soon as one is non-finite, without waiting for the device.

With a Lens (engine/loop/learned.py), a snapshot also measures what the net learned: dead ReLU units, the test
split's loss and accuracy, and for a playground set the pictures of its learned function (Flush.pictures).

Where each snapshot number goes in the flush's copy is a Piece: (step, kind, layer, size). Kinds are
HISTS (a histogram, a Flush.hists entry) or SCALARS (one number, a Flush.scalars entry stored as
"KIND/LAYER", the names the run store has always had).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import psutil
import torch

from engine.loop.guard import NonFiniteWatch
from engine.loop.learned import Lens, Picture

HISTS = ("grad", "weight")  # a layer's histograms: of its gradient, of its weights (Hist.kind)
SCALARS = ("grad_norm", "gradcheck", "weight_norm", "update_ratio")  # a layer's numbers, stored as "KIND/LAYER"


class Piece(NamedTuple):
    """Where one snapshot number or histogram sits in the flush's copy, and what it is."""

    step: int
    kind: str  # one of HISTS (counts, lo, hi, nonfinite) or of SCALARS (one number)
    layer: str
    size: int  # how many numbers it takes in the copy


@dataclass
class Hist:
    step: int
    layer: str
    kind: str  # "weight" | "grad"
    lo: float
    hi: float
    counts: list[float]  # len(counts) bins, evenly spaced over [lo, hi]
    nonfinite: int

    @property
    def edges(self) -> list[float]:
        n = len(self.counts)
        return [self.lo + (self.hi - self.lo) * i / n for i in range(n + 1)]


@dataclass
class Flush:
    """Everything measured since the previous flush; what the sinks consume."""

    first_step: int
    losses: list[float]  # losses[i] is step first_step + i
    scalars: list[tuple[int, str, float]] = field(default_factory=list)  # (step, key, value)
    hists: list[Hist] = field(default_factory=list)
    events: list[tuple[int, str, dict]] = field(default_factory=list)  # (step, kind, data)
    pictures: list[Picture] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        return self.first_step + len(self.losses) - 1

    def first_nonfinite(self) -> int | None:
        """The step of the first non-finite loss in this flush, or None."""
        return next((self.first_step + i for i, v in enumerate(self.losses) if not math.isfinite(v)), None)


def histogram(t: torch.Tensor, bins: int) -> torch.Tensor:
    """[counts (bins), lo, hi, nonfinite] of t's finite values, without reading back to the host
    on CUDA. On the CPU a readback costs nothing, so the common all-finite case takes the fast
    path: one aminmax pass and one histc pass with that explicit range."""
    t = t.detach().flatten().float()
    if t.device.type == "cpu":
        lo, hi = (v.item() for v in torch.aminmax(t))
        if math.isfinite(lo) and math.isfinite(hi):
            return torch.cat([torch.histc(t, bins, lo, hi), torch.tensor([lo, hi, 0.0])])
    finite = torch.isfinite(t)
    lo = torch.where(finite, t, float("inf")).amin()
    hi = torch.where(finite, t, float("-inf")).amax()
    lo = torch.where(torch.isfinite(lo), lo, 0.0)  # no finite value at all
    hi = torch.where(torch.isfinite(hi), hi, 0.0)
    span = (hi - lo).clamp_min(1e-30)
    idx = torch.nan_to_num((t - lo) / span * bins).clamp_(0, bins - 1).long()
    counts = torch.zeros(bins, device=t.device).index_add_(0, idx, finite.float())
    return torch.cat([counts, lo[None], hi[None], (~finite).sum()[None].float()])


def grad_ratio(g: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """||g - ref|| / ||ref|| as a 0-dim float64 tensor on g's device, with no host sync: the gradient
    check (engine/modes/gradcheck.py has the tolerance it is judged by, and why a norm ratio).

    The norms are accumulated in float64, so that float32 gradients near overflow (just before a
    divergence) neither overflow the sum of squares nor read as NaN. A reference of exactly zero
    reads 0 when g is zero too, else 1 (then ||g - ref|| / ||g||). NaN when either gradient is
    non-finite: that is a divergence, which the verdict does not count against the gradient code."""
    diff = torch.linalg.vector_norm(g.detach() - ref.detach(), dtype=torch.float64)
    norm = torch.linalg.vector_norm(ref.detach(), dtype=torch.float64)
    ratio = torch.where(norm > 0, diff / norm, (diff > 0).double())
    return torch.where(torch.isfinite(diff) & torch.isfinite(norm), ratio, torch.nan)


def memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return psutil.Process().memory_info().rss  # resident set size


class Telemetry:
    def __init__(
        self,
        *,
        device: torch.device,
        batch_size: int,
        every: int = 0,
        seconds: float = 1.0,
        bins: int = 64,
        flush_every: int = 2000,
        flush_seconds: float = 0.5,
        look_every: int = 0,
        losses_on_host: bool | None = None,
        ranks=None,
        lens: Lens | None = None,
    ):
        """every: steps between snapshots, or 0 for about one every `seconds` of training; bins per
        histogram; a flush every flush_every steps or flush_seconds, whichever comes first, or as soon as
        a look (every look_every steps, 0 for the device's guard.LOOK_EVERY) sees a non-finite loss.
        losses_on_host: keep the losses as floats (default: on the CPU), else as device tensors. ranks: several
        processes (engine/loop/distributed.py), whose losses a flush reduces and whose rate is rank 0's. lens: what
        the net learned, measured at each snapshot (engine/loop/learned.py), or None."""
        self.every, self.seconds, self.bins = every, seconds, bins  # every == 0: about every `seconds`
        self._next_snapshot = 0
        self._rate = 0.0  # steps/s at the last flush
        self._warmup_gap = 1  # snapshot gap while the rate is unknown (_snapshot_gap)
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self.device, self.batch_size = device, batch_size
        self.on_host = device.type == "cpu" if losses_on_host is None else losses_on_host
        self._losses: list = []  # since the last flush: floats on the host, else 0-dim device tensors
        self._first_step = 0
        self._pieces: list[torch.Tensor] = []  # device vectors of pending snapshots
        self._layout: list[Piece] = []  # how to read them back
        self._pictures: list[tuple[int, str, torch.Tensor]] = []  # (step, name, device vector), after the pieces
        self._host_scalars: list[tuple[int, str, float]] = []
        self._before: dict[str, torch.Tensor] = {}
        self._batch = None  # the snapshot step's x, between before_update and after_update
        self._last_flush_time = time.perf_counter()
        self._done = None  # steps completed at the last flush
        self.ranks = ranks
        self.watch = NonFiniteWatch(device, look_every, self.on_host)
        self.lens = lens

    @classmethod
    def from_config(cls, cfg, device: torch.device, ranks=None, lens: Lens | None = None) -> Telemetry:
        return cls(
            ranks=ranks,
            lens=lens,
            device=device,
            batch_size=cfg.batch_size,
            every=cfg.telemetry_every,
            seconds=cfg.telemetry_seconds,
            bins=cfg.hist_bins,
            flush_every=cfg.flush_every,
            flush_seconds=cfg.flush_seconds,
        )

    # -- the hot loop ------------------------------------------------------------------------

    def due(self, step: int) -> bool:
        return step >= self._next_snapshot

    def record_loss(self, step: int, loss: torch.Tensor) -> None:
        if not self._losses:
            self._first_step = step
        self._losses.append(float(loss) if self.on_host else loss)

    def record_losses(self, first_step: int, losses: torch.Tensor) -> None:
        """Several steps' losses at once, a (n,) device tensor of its own (the fast path's, engine/loop/fast.py)."""
        if not self._losses:
            self._first_step = first_step
        self._losses.extend(losses.tolist() if self.on_host else losses.unbind())

    def steps_to_snapshot(self, step: int) -> int:
        """How many steps from `step` until the next snapshot is due (0 or less: due now)."""
        return self._next_snapshot - step

    def flush_due(self) -> bool:
        n = len(self._losses)
        return (
            self._done is None  # the first step shows up at once
            or n >= self.flush_every
            or self.watch.look(self._losses)
            or time.perf_counter() - self._last_flush_time >= self.flush_seconds
        )

    def rearm(self) -> None:
        """After finite weights were put back (a divergence handled): the looks resume (guard.py)."""
        self.watch.rearm(len(self._losses))

    # -- snapshots, every K steps ------------------------------------------------------------

    def _put(self, step: int, kind: str, layer: str, t: torch.Tensor) -> None:
        t = t.detach().reshape(-1).float()
        self._pieces.append(t)
        self._layout.append(Piece(step, kind, layer, t.numel()))

    def _snapshot_gap(self) -> int:
        """Steps to the next snapshot: `every`, or about `seconds` at the measured rate. Until the rate is
        measured (the second flush), the gap doubles from 1: a few snapshots at the start, not one
        per step (which made a start-up flush of 1,500 snapshots, 6 MB of histograms)."""
        if self.every:
            return self.every
        if self._rate:
            return max(1, int(self._rate * self.seconds))
        self._warmup_gap *= 2
        return self._warmup_gap // 2

    def before_update(self, step: int, mode, x, y, lr: float) -> None:
        """After backward, before the update: gradients, the gradient check, weights kept for the ratio."""
        self._next_snapshot = step + self._snapshot_gap()
        self._host_scalars.append((step, "lr", float(lr)))
        ref = mode.reference_grads(x, y)
        for name, g in mode.named_grads():
            if g is None:
                continue
            self._put(step, "grad", name, histogram(g, self.bins))
            self._put(step, "grad_norm", name, torch.linalg.vector_norm(g.float()))
            if ref is not None and ref.get(name) is not None:
                self._put(step, "gradcheck", name, grad_ratio(g, ref[name]))
        self._before = {n: p.clone() for n, p in mode.named_params()}
        self._batch = x  # the lens measures on it after the update

    def after_update(self, step: int, mode) -> None:
        """After the update: weight histograms, norms and the update/weight ratio."""
        for name, p in mode.named_params():
            self._put(step, "weight", name, histogram(p, self.bins))
            norm = torch.linalg.vector_norm(p.float())
            self._put(step, "weight_norm", name, norm)
            if name in self._before:
                dw = torch.linalg.vector_norm((p - self._before[name]).float())
                self._put(step, "update_ratio", name, dw / norm.clamp_min(1e-30))
        if self.lens is not None and self._batch is not None:  # what the updated net learned
            for kind, layer, t in self.lens.measure(mode, self._batch):
                if kind == "picture":
                    self._pictures.append((step, layer, t.detach().reshape(-1)))
                else:
                    self._put(step, kind, layer, t)
        self._before, self._batch = {}, None

    # -- the flush: one transfer -------------------------------------------------------------

    def flush(self) -> Flush | None:
        if not self._losses and not self._pieces:
            return None
        n_loss = len(self._losses)
        if self.on_host:  # floats
            parts = [torch.tensor(self._losses, dtype=torch.float64)] if self._losses else []
        else:
            parts = [torch.stack(self._losses).double()] if self._losses else []
        if parts and self.ranks is not None:  # the whole batch's losses, still on the device
            parts[0] = self.ranks.reduce_losses(parts[0])
        parts += [torch.cat(self._pieces).double()] if self._pieces else []
        n_numbers = n_loss + sum(piece.size for piece in self._layout)
        parts += [torch.cat([t for _, _, t in self._pictures]).double()] if self._pictures else []
        copied = torch.cat(parts).cpu()  # the one device -> host copy
        host = copied[:n_numbers].tolist()
        losses, rest = host[:n_loss], host[n_loss:]
        out = Flush(self._first_step, losses, scalars=list(self._host_scalars))
        i = 0
        for piece in self._layout:
            v = rest[i : i + piece.size]
            i += piece.size
            if piece.kind in HISTS:
                out.hists.append(Hist(piece.step, piece.layer, piece.kind, v[-3], v[-2], v[:-3], int(v[-1])))
            else:
                out.scalars.append((piece.step, f"{piece.kind}/{piece.layer}", v[0]))
        for step, name, t in self._pictures:  # as half floats, which the store keeps, never as Python floats
            out.pictures.append(Picture(step, name, copied[n_numbers : n_numbers + len(t)].half().numpy()))
            n_numbers += len(t)
        # throughput and memory, measured on the host across the flush interval
        now = time.perf_counter()
        if losses:
            end = out.last_step + 1
            done = end - (self._done if self._done is not None else out.first_step)
            dt = now - self._last_flush_time
            if dt > 0 and done > 0 and self._done is not None:  # the first flush's interval is start-up, not steps
                self._rate = done / dt if self.ranks is None else self.ranks.from_leader(done / dt)
                out.scalars.append((out.last_step, "steps_per_s", done / dt))
                out.scalars.append((out.last_step, "samples_per_s", done * self.batch_size / dt))
            out.scalars.append((out.last_step, "mem_bytes", float(memory_bytes(self.device))))
            self._done = end
        self._last_flush_time = now
        self._losses, self._pieces, self._layout, self._host_scalars, self._pictures = [], [], [], [], []
        self.watch.flushed()
        return out

    def reset_clock(self, step: int) -> None:
        """After a pause: throughput counts from now."""
        self._last_flush_time, self._done = time.perf_counter(), step
