"""A training loop's two guards against divergence, each its own class and neither tied to the engine's trainer.

    NonFiniteWatch(device)    has a non-finite loss been seen? asked every few losses, answered without ever
                              waiting for the device: a divergence is noticed within a few steps, not at the
                              next flush
    DivergenceGuard(steps)    the last weights known to give a finite loss, kept in two sets of copies that take
                              turns; put back after a divergence with the optimizer's state; and a replay of the
                              steps that diverged, on their own batches, that names the first layer whose
                              gradient went non-finite and the first operation that produced a non-finite value
    FirstNonFinite()          that operation: a torch dispatch mode that looks at every operation's result, on
                              in the replay only, with autograd's anomaly mode (which keeps, for each backward
                              operation, the forward line that made it)

The watch needs only the losses; the guard needs only a Steps (engine/modes/protocol.py): the weights and
gradients by name, the step in its parts and the optimizer, which every mode is and which a wrapper around a
user's own model and optimizer can be. engine/loop/trainer.py drives both for the engine's runs, and rewinds its
data to the position saved with the weights (engine/build/batches.py Batches.position and seek).
"""

from __future__ import annotations

import copy
import math
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from engine.modes.protocol import Steps

# losses between looks. On the CPU a look costs about 10 us and its read is free: a non-finite loss is seen at
# most 3 steps after it. On CUDA a look is a few kernels and one non-blocking copy, read at the first look that
# finds it done: a non-finite loss is seen at most 31 steps after it while the device finishes each copy by the
# next look (it keeps within 16 steps of the host), 47 while it keeps within 32, 16 more for each look it lags.
LOOK_EVERY = {"cpu": 4, "cuda": 16}
COPIES = 4  # pinned copies of the flag in flight at most, on CUDA


class NonFiniteWatch:
    """The flag "all losses finite so far", on the device, folded and read every `every` losses."""

    def __init__(self, device: torch.device, every: int = 0, on_host: bool = False):
        """every: losses between looks (0: the device's LOOK_EVERY). on_host: the losses come as floats (a CPU run
        keeps them so), else as 0-dim device tensors."""
        self.every = every or LOOK_EVERY.get(device.type, LOOK_EVERY["cpu"])
        self.on_host = on_host
        self.watching = True  # False once a look has seen a non-finite loss, until rearm()
        self._looked = 0  # how many of the pending losses the flag covers
        self._ok = torch.ones((), dtype=torch.bool, device=device)
        self._in_flight = deque()  # (pinned host flag, CUDA event recorded after the copy into it), oldest first
        self._free = None  # the CPU: no copies, the flag is on the host already
        if device.type == "cuda":
            self._free = [
                (torch.ones((), dtype=torch.bool, pin_memory=True), torch.cuda.Event()) for _ in range(COPIES)
            ]

    def look(self, losses: list) -> bool:
        """losses: those pending since the last flush, of which the ones past the last look are new. Fold the
        new ones into the flag, when there are `every` of them, and say whether a non-finite loss has been seen,
        without ever waiting for the device.

        On the CPU there is no device to wait for: the flag is read at once, so a non-finite loss is seen at the
        first look after it. On CUDA each look copies the flag into a pinned host flag with non_blocking=True
        and records an event after it; a copy is read only at a later look that finds its event completed
        (event.query()), and a read of finished pinned memory is not a sync. The flag only ever goes from True
        to False, so the newest finished copy says all there is to say. Up to COPIES are in flight at once (a
        device that lags several looks behind the host still gets a copy at every look). Once seen, looks stop
        until rearm()."""
        if not self.watching or len(losses) - self._looked < self.every:
            return False
        new = losses[self._looked :]
        self._looked = len(losses)
        if self.on_host:  # floats: nothing to fold, nothing to wait for
            self.watching = all(map(math.isfinite, new))
            return not self.watching
        self._ok.logical_and_(torch.isfinite(torch.stack(new)).all())
        if self._free is None:  # the CPU
            seen = not self._read_flag(self._ok)
        else:
            seen = False
            while self._in_flight and self._in_flight[0][1].query():  # finished copies, oldest first
                done = self._in_flight.popleft()
                seen = seen or not self._read_flag(done[0])
                self._free.append(done)
            if self._free and not seen:
                host, copied = slot = self._free.pop()
                host.copy_(self._ok, non_blocking=True)
                copied.record()  # on the current stream, after the copy
                self._in_flight.append(slot)
        self.watching = not seen
        return seen

    def _read_flag(self, flag: torch.Tensor) -> bool:
        """A host copy of the flag, complete (on CUDA its event has completed): reading it never waits."""
        return bool(flag)

    def flushed(self) -> None:
        """The pending losses went with a flush: the next look starts from the first one after it."""
        self._looked = 0

    def rearm(self, pending: int = 0) -> None:
        """After finite weights were put back (a divergence handled): the flag reads "all finite" again and the
        looks resume after the `pending` losses not flushed yet. Off the hot path: it waits for the copies still
        in flight."""
        while self._in_flight:
            slot = self._in_flight.popleft()
            slot[1].synchronize()
            self._free.append(slot)
        self._ok.fill_(True)
        self._looked = pending
        self.watching = True


@dataclass
class Saved:
    """One set of copies: the weights, the optimizer's state, and the data's position with them."""

    step: int  # the loop's step at which these weights stand
    weights: list[torch.Tensor]  # in the order of named_params()
    optimizer: dict | None  # the optimizer's state_dict(), copied; None without an optimizer
    data: object  # the loop's data position there (Batches.position()), handed back as it was given


@dataclass
class Culprit:
    """The first operation of a replay that made a non-finite value out of finite ones."""

    phase: str  # "forward", "backward" (autograd's) or "update"
    op: str  # the autograd node in the backward ("MulBackward0"), else the aten operation ("mm")
    produced: str  # "nan" or "inf"
    where: str | None  # the source line that ran it: for a backward node, the forward line that made the node
    index: int  # the replayed step it happened in, counted from 0

    def info(self, first_step: int) -> dict:
        """As a divergence event holds it, its step counted from first_step, the replay's first."""
        return {"op": self.op, "phase": self.phase, "produced": self.produced, "op_step": first_step + self.index,
                "where": self.where}  # fmt: skip


def _floats(tree) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _kind(ts: list[torch.Tensor]) -> str | None:
    """ "nan" or "inf" for the first tensor that holds one (a host check: off the hot path only), else None."""
    for t in ts:
        if torch.isnan(t).any():
            return "nan"
        if torch.isinf(t).any():
            return "inf"
    return None


def _outside_torch(frames) -> str | None:
    """The innermost frame that is neither torch's nor this module's, as "file:line: code"."""
    skip = (str(Path(torch.__file__).parent), __file__)
    for f in reversed(frames):
        if not f.filename.startswith(skip):
            return f"{Path(f.filename).name}:{f.lineno}: {(f.line or '').strip()}"
    return None


class FirstNonFinite(TorchDispatchMode):
    """Runs every operation and, until it finds one, looks for the first whose result is non-finite while its
    inputs are all finite: the operation that produced it, not one that passed it on. `phase` is set by the
    caller (forward_backward, update); inside forward_backward, autograd's current node tells the backward apart.
    The backward's node comes with the forward line that made it while anomaly mode records them."""

    def __init__(self):
        super().__init__()
        self.found: Culprit | None = None
        self.phase, self.index = "forward", 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.found is not None:
            return func(*args, **(kwargs or {}))
        finite = _kind(_floats((args, kwargs))) is None  # before it runs: an in-place operation changes its input
        out = func(*args, **(kwargs or {}))
        if finite:
            produced = _kind(_floats(out))
            if produced:
                node = torch._C._current_autograd_node()
                if node is not None:
                    made = node.metadata.get("traceback_") or []
                    where = " ".join(made[-1].split()) if made else None
                    self.found = Culprit("backward", node.name(), produced, where, self.index)
                else:
                    where = _outside_torch(traceback.extract_stack())
                    self.found = Culprit(self.phase, func.overloadpacket.__name__, produced, where, self.index)
        return out


class DivergenceGuard:
    """The last weights known to give a finite loss, their restore, and the replay that finds the first bad layer.

    A loop calls save() when it starts, finite() at each flush whose losses were all finite, and after a
    divergence restore(), replay() of the steps from the restored weights to the first non-finite loss on their
    own batches, then restore() again. Why two sets: the weights saved at a flush (the candidate) are vouched for
    only by the next flush's first loss; until then the last good set is the one to fall back on. The sets take
    turns: a flush copies into the tensors the old last good no longer needs, so that it allocates nothing."""

    def __init__(self, steps: Steps):
        self.steps = steps
        self.last_good: Saved | None = None  # weights known to give a finite loss
        self.candidate: Saved | None = None  # weights at the last flush, not yet vouched for
        self.culprit: Culprit | None = None  # the last replay's first operation to produce a non-finite value

    def save(self, step: int, data=None) -> None:
        """Where the loop starts (a divergence before the first flush restores these), unless saved already."""
        if self.candidate is None:
            self.candidate = self._copy(step, data)

    def finite(self, step: int, data=None) -> None:
        """A flush whose losses were all finite: the candidate's weights produced its first loss, so they become
        the last good; the weights now, at `step` with the data at `data`, become the candidate, copied into the
        old last good's tensors (a set restored is both: then new copies)."""
        spare = self.last_good if self.last_good is not self.candidate else None
        self.last_good, self.candidate = self.candidate, self._copy(step, data, into=spare)

    def restore(self, at: int | None = None) -> Saved | None:
        """Put back the last good weights (the candidate, if none is vouched for yet) and the optimizer's state of
        that moment: its moments, while its lr and settings stay those of now, the ones the run diverged with,
        until the loop changes them. `at`: the loop's step from which these weights go on (a second divergence
        replays from there). Returns the set put back, whose data the loop rewinds to; None if nothing was saved."""
        saved = self.last_good or self.candidate
        if saved is None:
            return None
        with torch.no_grad():
            for (_, p), w in zip(self.steps.named_params(), saved.weights):
                p.copy_(w)
        optimizer = self.steps.optimizer
        if saved.optimizer is not None:
            settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            optimizer.load_state_dict(copy.deepcopy(saved.optimizer))  # the saved copy stays as it was
            for group, setting in zip(optimizer.param_groups, settings):
                group.update(setting)
        self.candidate = saved
        if at is not None:
            saved.step = at
        return saved

    def replay(self, batches) -> str | None:
        """Train on `batches`, those that followed the restored weights, in order, until a gradient goes
        non-finite; returns the first such layer (in named_params' order), or None. On the way, `culprit` becomes
        the first operation that produced a non-finite value (FirstNonFinite, with autograd's anomaly mode on for
        the replay only), or None. Host checks are allowed here: a divergence is off the hot path."""
        names = [n for n, _ in self.steps.named_params()]
        layer = None
        watch = FirstNonFinite()
        with torch.autograd.detect_anomaly(check_nan=False), watch:
            for watch.index, (x, y) in enumerate(batches):
                watch.phase = "forward"
                self.steps.forward_backward(x, y)
                grads = dict(self.steps.named_grads())
                bad = [n for n in names if grads.get(n) is not None and not torch.isfinite(grads[n]).all()]
                if bad:
                    layer = bad[0]
                    break
                watch.phase = "update"
                self.steps.update()
                self.steps.zero_grad()
            self.steps.zero_grad()
        self.culprit = watch.found
        return layer

    def _copy(self, step: int, data, into: Saved | None = None) -> Saved:
        """The weights now, and the optimizer's state with them (Adam's moments: a resume at a lower lr must not
        start from moments that a replay stepped on towards the divergence); copied into the tensors of `into`,
        a set no longer needed, where it has them."""
        optimizer = self.steps.optimizer
        state = optimizer.state_dict() if optimizer is not None else None
        if into is None or (into.optimizer is None) != (state is None):
            weights = [p.detach().clone() for _, p in self.steps.named_params()]
            return Saved(step, weights, copy.deepcopy(state), data)
        with torch.no_grad():
            for w, (_, p) in zip(into.weights, self.steps.named_params()):
                w.copy_(p)
        if state is not None:
            into.optimizer = _copy_state(state, into.optimizer)
        into.step, into.data = step, data
        return into


def _copy_state(state, into):
    """An optimizer's state_dict copied into the tensors of an earlier copy of it, where they match in shape;
    anything new (the first step's moments) is cloned."""
    if isinstance(state, torch.Tensor):
        if isinstance(into, torch.Tensor) and into.shape == state.shape and into.dtype == state.dtype:
            return into.copy_(state)
        return state.clone()
    if isinstance(state, dict):
        into = into if isinstance(into, dict) else {}
        return {k: _copy_state(v, into.get(k)) for k, v in state.items()}
    if isinstance(state, list):
        into = into if isinstance(into, list) and len(into) == len(state) else [None] * len(state)
        return [_copy_state(v, i) for v, i in zip(state, into)]
    return copy.deepcopy(state)
