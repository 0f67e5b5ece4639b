"""The training loop. It raises events and knows nothing about stores, Visdom or progress bars.

Events (subscribe with add_callback):
    on_flush(flush)                 a batch of telemetry (engine/loop/telemetry.py Flush)
    on_status(status, info)         "running" | "paused" | "diverged" ...
    on_checkpoint()                 a scheduled checkpoint: the subscriber writes one (engine/runs/worker.py)

The hot path per step: next batch, forward_backward, update, zero_grad, keep the loss tensor.
No host sync, no I/O, no logging. Every K steps the telemetry snapshot adds device work; every
flush (flush_every steps or flush_seconds) the pending numbers come to the host in one copy. Every
few steps the telemetry also looks at the losses without waiting for the device (engine/loop/guard.py
NonFiniteWatch): a non-finite loss makes a flush due at once, and the flush hands the divergence to the
guard (engine/loop/guard.py DivergenceGuard), which puts back the last finite weights and names the first
layer whose gradient went non-finite; the trainer rewinds its batches with them.
Commands from viewers arrive through `control` (engine/loop/control.py), checked as one Python
attribute per step. On several processes (`ranks`, engine/loop/distributed.py), rank 0 alone decides the
flushes and takes the commands, and every rank applies them one step later, at the same step.
The scheduled actions (engine/loop/plan.py) apply at their steps, found by comparing the step with the next
one's; the rules (engine/loop/rules.py) are checked at each flush and send their commands through `control`.
With fast (engine/loop/fast.py), a block of steps, replays of the step captured as a CUDA graph, takes the
place of one step: commands, snapshots and flushes come between blocks.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

from engine.loop import layer_edit
from engine.loop.control import Control, Refused, Steering
from engine.loop.distributed import Lockstep, commands_while_paused
from engine.loop.fast import GraphStep
from engine.loop.guard import DivergenceGuard
from engine.loop.plan import Plan
from engine.loop.rules import Rules
from engine.loop.telemetry import Flush
from engine.modes import trace


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
        plan: Plan | None = None,
        rules: Rules | None = None,
    ):
        """total_steps None: until stopped. pace: at most that many steps a second (0: full speed).
        ranks: this process's place among several (engine/loop/distributed.py), or None. fast: the step captured
        as a CUDA graph and replayed in blocks (engine/loop/fast.py). plan, rules: the scheduled actions and the
        rules (engine/loop/plan.py, engine/loop/rules.py)."""
        self.mode, self.batches, self.tel = mode, batches, telemetry
        self.total_steps, self.step = math.inf if total_steps is None else total_steps, start_step
        self.pace = pace
        self._pace_origin = (0.0, 0)  # (time, step) the pace counts from
        self.on_divergence = on_divergence
        self.control = control or Control()
        self.ranks = ranks
        self.lockstep = None if ranks is None else Lockstep(ranks, self.control)
        self.callbacks = defaultdict(list)
        self.stopped = False  # a stop command ended the run early
        self.divergence = None  # {"step": s, "layer": name, "ran_after": n, "restored": r, the op: guard.Culprit.info}
        self.guard = None if on_divergence == "ignore" else DivergenceGuard(mode)
        self._events = []  # (step, kind, data) for the next flush
        more = {"set_plan": self._set_plan, "edit_layer": self._edit_layer, "step": self._step_command}
        self.steering = Steering(
            self.control, self._events, set_lr=self._set_lr, stop=self._stop, pause=self._pause, more=more
        )
        self.fast = GraphStep(mode, batches) if fast else None
        self.plan, self.rules = plan or Plan(), rules or Rules()

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
        if self.guard is not None:  # a divergence before the first flush restores these
            self.guard.save(self.step, self.batches.position())
        end = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        pace = self.pace
        self._pace_origin = (time.perf_counter(), self.step)
        self._scheduled()  # a new run's actions at step 0
        while self.step < end and not self.stopped:
            if self.ranks is not None:
                self._lockstep()
                if self.stopped:
                    break
            elif control.pending:
                self._handle_commands()
                continue
            if self.fast is not None:  # a block of steps: replays of the captured step
                self.step += self.fast.block(tel, self.step, min(end, self.plan.next), self.total_steps - 1)
                self._scheduled()
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
            if self.ranks is None:
                if self.step >= self.plan.next:  # before the flush that may checkpoint this step
                    self._scheduled()
                if tel.flush_due():
                    self.flush()
        if self.ranks is not None:
            self.ranks.take()  # the last word: every rank waits for it, none acts on it
            self._scheduled()
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
        self._events.clear()
        bad = f.first_nonfinite()
        if self.rules and bad is None and (self.ranks is None or self.ranks.leader):  # rank 0 sends the commands
            self.rules.apply(f, self.mode.lr, self.control)
        if self.guard is not None and bad is None and f.losses:
            self.guard.finite(self.step, self.batches.position())
        self.trigger("on_flush", f)
        if self.guard is not None and bad is not None and self.divergence is None:
            self._diverged(bad)

    # -- commands ----------------------------------------------------------------------------

    def _handle_commands(self):
        for cid, command, value in self.control.take():
            self._apply(cid, command, value, paused=False)

    def _lockstep(self):
        """Several processes: apply rank 0's word of the step before (a flush, its commands) on every rank, then post
        the next (engine/loop/distributed.py Lockstep)."""
        flush, commands = self.lockstep.take()
        self._scheduled()  # every rank has the plan, and applies it at the same step
        if flush:
            self.flush()
        for cid, command, value in commands:
            self._apply(cid, command, value, paused=False)
        if not self.stopped:
            self.lockstep.post(self.tel.flush_due())

    def _scheduled(self):
        """The plan's actions due at this step, each recorded as the event "scheduled" (engine/loop/plan.py)."""
        for command, value, data in self.plan.due(self.step):
            self._events.append((self.step, "scheduled", data))
            if command == "checkpoint":
                self.trigger("on_checkpoint")
            else:
                self._apply(None, command, value, paused=False)

    def _apply(self, cid, command, value, paused):
        """Apply one command (engine/loop/control.py Steering). Returns True when it ends a pause (resume or stop)."""
        return self.steering.apply(self.step, command, value, paused=paused, cid=cid)

    def _set_lr(self, lr: float) -> float:
        old, self.mode.lr = self.mode.lr, lr
        return old

    def _stop(self):
        self.stopped = True

    def _set_plan(self, step, value, paused):
        """The schedule's actions still to come, replaced (engine/loop/plan.py); every rank must hold the same plan."""
        if self.ranks is not None:
            raise Refused("a run on several processes keeps the schedule it started with")
        return "schedule", self.plan.replace(value, step)

    def _edit_layer(self, step, value, paused):  # engine/loop/layer_edit.py
        if not paused:
            raise Refused("edit_layer while running")
        try:
            return "layer_edit", layer_edit.apply(self.mode, value, step)
        except layer_edit.EditRefused as e:
            raise Refused(str(e)) from None

    def _step_command(self, step, value, paused):
        """One step of a paused run, its lecture's tensors traced (engine/modes/trace.py)."""
        if not paused:
            raise Refused("step while running")
        try:
            trace.check(self.mode)
        except trace.NotTraceable as e:
            raise Refused(str(e)) from None
        self._step_traced()

    def _step_traced(self):
        """The step command, while paused: one step as run() takes it, the lecture's tensors of it traced first."""
        step, (x, y) = self.step, next(self.batches)
        self._events.append((step, "step_trace", trace.lecture_step(self.mode, x, y)))
        loss = self.mode.forward_backward(x, y)
        self.mode.update()
        self.mode.zero_grad()
        self.tel.record_loss(step, loss)
        self.step = step + 1

    def _pause(self, kind, data, step=None):
        """Flush, report paused, and block until resume or stop; set_lr, edit_layer and step apply while paused. The
        event is recorded at `step` (default: the current step)."""
        self._events.append((self.step if step is None else step, kind, data))
        self.flush()
        self.trigger("on_status", "paused", {**data, "reason": data.get("reason", kind)})  # "divergence"
        while True:
            commands = commands_while_paused(self.control, self.lockstep)
            ended = [self._apply(cid, cmd, v, paused=True) for cid, cmd, v in commands]
            if self._events and not any(ended):  # an lr change while paused: recorded now, not at resume
                self.flush()
            if any(ended):
                self.tel.reset_clock(self.step)
                self._pace_origin = (time.perf_counter(), self.step)
                self.trigger("on_status", "stopping" if self.stopped else "running", {})
                return

    # -- divergence --------------------------------------------------------------------------

    def _diverged(self, step):
        """A non-finite loss at `step`, the first: the guard puts back the last finite weights, and the batches go
        back to their position then; the guard replays the steps the run took from there on those same batches,
        which names the first layer whose gradient went non-finite; then the weights and the batches go back again, to
        go on from the current step. Then pause or stop. The event says how many steps ran after `step` before
        the run noticed (ran_after), and the step whose weights came back (restored)."""
        ran_after = self.step - 1 - step
        saved = self.guard.restore()
        restored = layer = None
        found = {}
        if saved is not None:
            restored = saved.step
            self._rewind(saved.data)
            # the steps the run took from the restored weights, the diverged one and those after it (a loss can
            # overflow a step before any gradient does), each on its own batch: the replay stops at the first bad layer
            layer = self.guard.replay(next(self.batches) for _ in range(self.step - saved.step))
            found = self.guard.culprit.info(saved.step) if self.guard.culprit else {}  # the operation, its step
            self.guard.restore(at=self.step)
            self._rewind(saved.data)
        if self.fast is not None:  # the optimizer's load_state_dict replaced tensors that the captured step writes
            self.fast.forget()
        self.tel.rearm()  # the weights are finite again
        self.tel.after_update(self.step, self.mode)  # a snapshot of them: the last histograms shown are finite
        self.divergence = {"step": step, "layer": layer, "ran_after": ran_after, "restored": restored, **found}
        self.trigger("on_status", "diverged", self.divergence)
        if self.on_divergence == "stop":
            self._events.append((step, "divergence", self.divergence))
            self.stopped = True
            self.flush()
        else:
            self._pause("divergence", self.divergence, step)
            self.divergence = None if not self.stopped else self.divergence

    def _rewind(self, position):
        """The batches back where they were when the weights were saved (None: the one full batch, always the same)."""
        if position is not None:
            self.batches.seek(position)
