"""The training loop. It raises events and knows nothing about stores, Visdom or progress bars.

Events (subscribe with add_callback):
    on_flush(flush)                 a batch of telemetry (engine/loop/telemetry.py Flush)
    on_status(status, info)         "running" | "paused" | "diverged" ...

The hot path per step: next batch, forward_backward, update, zero_grad, keep the loss tensor.
No host sync, no I/O, no logging. Every K steps the telemetry snapshot adds device work; every
flush (flush_every steps or flush_seconds) the pending numbers come to the host in one copy. Every
few steps the telemetry also looks at a device flag, "all losses finite so far", without waiting for
the device (engine/loop/telemetry.py `_nonfinite_seen`): a non-finite loss makes a flush due at once, and
the flush starts the divergence path, within 4 steps on the CPU and a few dozen on CUDA.
Commands from viewers arrive through `control` (engine/loop/control.py), checked as one Python
attribute per step. On several processes (`ranks`, engine/loop/distributed.py), rank 0 alone decides the
flushes and takes the commands, and every rank applies them one step later, at the same step.
With fast (engine/loop/fast.py), a block of steps, replays of the step captured as a CUDA graph, takes the
place of one step: commands, snapshots and flushes come between blocks.
"""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict

import torch

from engine.loop.control import Control
from engine.loop.fast import GraphStep
from engine.loop.telemetry import Flush


class Trainer:
    def __init__(
        self,
        mode,
        batches,
        telemetry,
        total_steps: int | None,
        start_step: int = 0,
        on_divergence: str = "pause",
        control: Control | None = None,
        pace: float = 0.0,
        ranks=None,
        fast: bool = False,
    ):
        """total_steps None: until stopped. pace: at most that many steps a second (0: full speed).
        ranks: this process's place among several (engine/loop/distributed.py), or None. fast: the step captured
        as a CUDA graph and replayed in blocks (engine/loop/fast.py)."""
        self.mode, self.batches, self.tel = mode, batches, telemetry
        self.total_steps, self.step = math.inf if total_steps is None else total_steps, start_step
        self.pace = pace
        self._pace_origin = (0.0, 0)  # (time, step) the pace counts from
        self.on_divergence = on_divergence
        self.control = control or Control()
        self.ranks = ranks
        self._sent = []  # rank 0: the commands in the word it posted last, applied with their ids
        self.callbacks = defaultdict(list)
        self.stopped = False  # a stop command ended the run early
        self.divergence = None  # {"step": s, "layer": name, "ran_after": n} once diverged
        self._last_good = None  # weights known to give a finite loss
        self._candidate = None  # weights at the last flush, not yet vouched for
        self._events = []  # (step, kind, data) for the next flush
        self.fast = GraphStep(mode, batches) if fast else None

    @property
    def outcome(self) -> str:
        """How the run ended: "diverged", "stopped" (a stop command) or "finished"."""
        return "diverged" if self.divergence else "stopped" if self.stopped else "finished"

    def add_callback(self, event, fn):
        self.callbacks[event].append(fn)

    def trigger(self, event, *args):
        for fn in self.callbacks[event]:
            fn(*args)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, max_steps: int | None = None):
        """Train to total_steps (or max_steps more, for benchmarks that interleave), then flush."""
        mode, tel, control = self.mode, self.tel, self.control
        # a divergence before the first flush restores these
        if self._candidate is None and self.on_divergence != "ignore":
            self._candidate = self._weights()
        end = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        pace = self.pace
        self._pace_origin = (time.perf_counter(), self.step)
        while self.step < end and not self.stopped:
            if self.ranks is not None:
                self._lockstep()
                if self.stopped:
                    break
            elif control.pending:
                self._handle_commands()
                continue
            if self.fast is not None:  # a block of steps: replays of the captured step
                self.step += self.fast.block(tel, self.step, end, self.total_steps - 1)
                if tel.flush_due():
                    self.flush()
                continue
            step = self.step
            x, y = next(self.batches)
            snapshot = tel.due(step) or step == self.total_steps - 1
            loss = mode.forward_backward(x, y)
            if snapshot:
                tel.before_update(step, mode, x, y, mode.lr)
            mode.update()
            if snapshot:
                tel.after_update(step, mode)
            mode.zero_grad()
            tel.record_loss(step, loss)
            self.step = step + 1
            if pace:
                self._keep_pace()
            if self.ranks is None and tel.flush_due():
                self.flush()
        if self.ranks is not None:
            self.ranks.take()  # the last word: every rank waits for it, none acts on it
        self.flush()

    def _keep_pace(self):
        """Sleep until this step's time at `pace` steps a second. A run that falls behind (slow
        steps, a snapshot) is not made to catch up in a burst: the pace counts from now again."""
        t0, step0 = self._pace_origin
        wait = t0 + (self.step - step0) / self.pace - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif wait < -1.0:
            self._pace_origin = (time.perf_counter(), self.step)

    def flush(self):
        f = self.tel.flush()
        if f is None and not self._events:
            return
        f = f or Flush(self.step, [])
        f.events.extend(self._events)
        self._events = []
        bad = next((i for i, v in enumerate(f.losses) if not math.isfinite(v)), None)
        if bad is None and f.losses and self.on_divergence != "ignore":
            # the candidate's weights produced this flush's first loss, which is finite; the old last good's
            # copies take the new candidate (one restored is both: then new copies)
            spare = self._last_good if self._last_good is not self._candidate else None
            self._last_good, self._candidate = self._candidate, self._weights(into=spare)
        self.trigger("on_flush", f)
        if bad is not None and self.divergence is None and self.on_divergence != "ignore":
            self._diverged(f.first_step + bad)

    # -- commands ----------------------------------------------------------------------------

    def _handle_commands(self):
        for cid, command, value in self.control.take():
            self._apply(cid, command, value, paused=False)

    def _lockstep(self):
        """Several processes: apply rank 0's word of the step before (a flush, its commands) on every rank,
        then post the next. Rank 0 applies its commands with their ids, so that they are acknowledged."""
        word = self.ranks.take()
        if word is not None:
            flush, commands = word
            if flush:
                self.flush()
            for cid, command, value in self._sent if self.ranks.leader else commands:
                self._apply(cid, command, value, paused=False)
        if not self.stopped:
            leader = self.ranks.leader
            self._sent = self.control.take() if leader and self.control.pending else []
            self.ranks.post(leader and self.tel.flush_due(), self._sent)

    def _commands_while_paused(self):
        """The commands that reach a paused loop, every half second; on several processes, rank 0's."""
        leader = self.ranks is None or self.ranks.leader
        commands = []
        if leader:
            self.control.wait(0.5)
            commands = self.control.take()
        if self.ranks is None:
            return commands
        self.ranks.post(False, commands)
        _, received = self.ranks.take()
        return commands if leader else received

    def _apply(self, cid, command, value, paused):
        """Apply one command. Returns True when it ends a pause (resume or stop)."""
        if command == "set_lr":
            old, self.mode.lr = self.mode.lr, float(value)
            self._events.append((self.step, "lr_change", {"old": old, "new": float(value)}))
        elif command == "stop":
            self.stopped = True
            self._events.append((self.step, "stop", {}))
        elif command == "resume" and paused:
            self._events.append((self.step, "resume", {}))
        elif command == "pause" and not paused:
            self.control.ack(cid)
            self._pause("pause", {"reason": value} if value else {})  # the store sink's: "disk full"
            return False
        else:
            self.control.ack(cid, f"ignored: {command} while {'paused' if paused else 'running'}")
            return False
        self.control.ack(cid)
        return command in ("stop", "resume")

    def _pause(self, kind, data, step=None):
        """Flush, report paused, and block until resume or stop; set_lr applies while paused. The
        event is recorded at `step` (default: the current step)."""
        self._events.append((self.step if step is None else step, kind, data))
        self.flush()
        self.trigger("on_status", "paused", data)
        while True:
            ended = [self._apply(cid, cmd, v, paused=True) for cid, cmd, v in self._commands_while_paused()]
            if self._events and not any(ended):  # an lr change while paused: recorded now, not at resume
                self.flush()
            if any(ended):
                self.tel.reset_clock(self.step)
                self._pace_origin = (time.perf_counter(), self.step)
                self.trigger("on_status", "stopping" if self.stopped else "running", {})
                return

    # -- divergence --------------------------------------------------------------------------

    def _diverged(self, step):
        """A non-finite loss at `step`, the first: find the first layer whose gradient went non-finite
        by replaying, from the last finite weights, the steps up to `step` on their own batches; restore
        those weights and the data's position with them, then pause or stop. The event says how many
        steps ran after `step` before the run noticed (ran_after)."""
        ran_after = self.step - 1 - step
        restored = (self._last_good or self._candidate or {}).get("step")
        layer = self._first_bad_layer(step)
        self.tel.rearm()  # the weights are finite again
        self.divergence = {"step": step, "layer": layer, "ran_after": ran_after, "restored": restored}
        self.trigger("on_status", "diverged", self.divergence)
        if self.on_divergence == "stop":
            self._events.append((step, "divergence", self.divergence))
            self.stopped = True
            self.flush()
        else:
            self._pause("divergence", self.divergence, step)
            self.divergence = None if not self.stopped else self.divergence

    def _weights(self, into: dict | None = None):
        """The weights now, and the optimizer's state with them (Adam's moments: a resume at a lower lr
        must not start from moments that the replay below stepped on towards the divergence). Copied
        into the tensors of `into`, a copy no longer needed, so that a flush allocates nothing: two sets
        of copies, the last good and the candidate, take turns."""
        optimizer = self.mode.optimizer
        state = optimizer.state_dict() if optimizer else None
        if into is None or (into["optimizer"] is None) != (state is None):
            return {
                "step": self.step,
                "weights": [p.detach().clone() for _, p in self.mode.named_params()],
                "optimizer": copy.deepcopy(state),
                "data": self.batches.position(),
            }
        with torch.no_grad():
            for w, (_, p) in zip(into["weights"], self.mode.named_params()):
                w.copy_(p)
        if state is not None:
            into["optimizer"] = _copy_state(state, into["optimizer"])
        into["step"], into["data"] = self.step, self.batches.position()
        return into

    def _restore_last_good(self):
        """Put back the last weights known to give a finite loss (or the first ones, if none), the
        optimizer's state of that moment (its moments; its lr and settings stay those of now, the ones the
        run diverged with, until a command changes them) and the data's position (None: the one full batch)."""
        saved = self._last_good or self._candidate
        if saved is None:
            return False
        with torch.no_grad():
            for (_, p), w in zip(self.mode.named_params(), saved["weights"]):
                p.copy_(w)
        if saved["optimizer"] is not None:
            groups = self.mode.optimizer.param_groups
            settings = [{k: v for k, v in g.items() if k != "params"} for g in groups]
            self.mode.optimizer.load_state_dict(copy.deepcopy(saved["optimizer"]))  # ours stays as it was
            for group, setting in zip(self.mode.optimizer.param_groups, settings):
                group.update(setting)
        if saved["data"] is not None:
            self.batches.seek(saved["data"])
        if self.fast is not None:  # load_state_dict replaced tensors that the captured step writes
            self.fast.forget()
        self._candidate = saved
        return True

    def _first_bad_layer(self, bad_step):
        """Replay the steps from the restored weights to bad_step, the first non-finite loss, on the same
        batches (the data's position was restored with the weights); the first layer whose gradient is
        non-finite, or None. The weights and the data's position are restored again afterwards, and
        stand at the current step from then on: a second divergence replays from here."""
        if not self._restore_last_good():
            return None
        saved = self._candidate
        layer = None
        names = [n for n, _ in self.mode.named_params()]
        for _ in range(bad_step - saved["step"] + 1):  # host checks allowed here
            x, y = next(self.batches)
            self.mode.forward_backward(x, y)
            grads = dict(self.mode.named_grads())
            bad = [n for n in names if grads.get(n) is not None and not torch.isfinite(grads[n]).all()]
            if bad:
                layer = bad[0]
                break
            self.mode.update()
            self.mode.zero_grad()
        self.mode.zero_grad()
        self._restore_last_good()
        saved["step"] = self.step
        # a snapshot of the finite weights, so the last histograms shown are finite
        self.tel.after_update(self.step, self.mode)
        return layer


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
