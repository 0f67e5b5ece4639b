"""A watched loop: what run.step(loss) does at each step, the viewers' commands, the guard, and the end.

The hot path, run.step(loss): keep the loss (engine/loop/telemetry.py: a device tensor on CUDA, a float on the
CPU, where reading it waits for nothing), count the step, flush when one is due, and take the viewers' commands
when one has arrived (one attribute read). No host sync, no I/O. A flush is due every flush_seconds, or at once
when a look at the telemetry's "all losses finite" flag (every 4 steps on the CPU, 16 on CUDA) sees a non-finite
loss. The snapshots (histograms, norms, update ratios) are taken in the optimizer's step hooks: the gradients
as optimizer.step() finds them (unscaled under GradScaler, clipped after clipping), the update ratio from the
weights before and after the step. A loop without an optimizer (the lecture's raw tensors, updated by hand)
has its gradients and weights copied as autograd accumulates each gradient (a post-accumulate-grad hook), and
its weights after the update read at run.step. Flushes go to the subscribers on their own threads: the store sink,
Visdom and TensorBoard (engine/sinks/).

Commands (engine/loop/control.py: Control, fed from the store by the store sink, and Steering, which applies
them as it does the engine's trainer's) apply at the step boundary, in run.step: pause blocks there until resume
or stop (the store sink's heartbeats go on; Ctrl-C still works), stop raises Stopped, set_lr scales every param
group (liveprop/steer.py). Under torchrun, rank 0 alone records and takes the commands, and every rank applies
them at the same step (the engine's lockstep, engine/loop/distributed.py Ranks).
Scheduled actions (watch's `at`, engine/loop/plan.py) apply in run.step at their step, found by comparing the
step with the next one's; rules (watch's `rules`, engine/loop/rules.py) are checked at each flush and send their
commands through the same control, as the engine's trainer does.

The guard: a non-finite loss, or a snapshot's non-finite gradient or weight, pauses the loop at the next
step boundary after the flush that brings it, names the first such layer, puts back the last weights (and
optimizer state) known finite, kept at each finite flush by the engine's DivergenceGuard (engine/loop/guard.py),
and Resume goes on from them with the loop's next batch (on_nonfinite "raise" raises NonFinite instead; "ignore"
goes on).

Nothing but Stopped and NonFinite reaches the user's loop from here: a failure of the watching itself costs
one line on stderr, the run is marked failed with it, and training goes on unwatched.
"""

from __future__ import annotations

import atexit
import math
import sys
from collections import defaultdict
from functools import partial

import torch

from engine.loop.control import Control, Refused, Steering
from engine.loop.distributed import Lockstep, commands_while_paused
from engine.loop.guard import DivergenceGuard
from engine.loop.plan import Plan
from engine.loop.rules import Rules
from engine.loop.telemetry import Flush, Telemetry
from engine.sinks import close as close_sinks
from engine.sinks import describe
from liveprop.ending import NonFinite, Stopped, ending
from liveprop.layers import Layers, Taken
from liveprop.record import Record, say
from liveprop.steer import set_lr

ON_NONFINITE = ("pause", "raise", "ignore")


class Subscribers:
    """The run's events, as the engine's sinks subscribe to a trainer's (engine/sinks/__init__.py attach):
    on_flush(flush) and on_status(status, info)."""

    def __init__(self):
        self.callbacks = defaultdict(list)

    def add_callback(self, event, fn):
        self.callbacks[event].append(fn)

    def trigger(self, event, *args):
        for fn in self.callbacks[event]:
            fn(*args)


class Run:
    """A user's training loop watched: step(loss) after each optimizer step, finish() at the end, or use it
    as a context manager. Made by liveprop.watch."""

    def __init__(
        self,
        *,
        layers: Layers,
        optimizer: torch.optim.Optimizer | None,
        telemetry: Telemetry,
        control: Control,
        record: Record | None,
        run_id: str,
        subscribers: Subscribers,
        sinks: list,
        on_nonfinite: str = "pause",
        schedulers: tuple = (),
        batch_size: int | None = None,
        link: str = "",
        plan: Plan | None = None,
        rules: Rules | None = None,
        ranks=None,
        guard: DivergenceGuard | None = None,
        resumable: bool = True,
    ):
        """ranks: this process's place under torchrun (engine/loop/distributed.py Ranks), or None. guard: the last
        finite weights, put back when the guard pauses (None: not kept). resumable: a pause can be resumed (rank
        0 has a record), the same on every rank."""
        self.layers, self.optimizer, self.tel, self.control, self.record = layers, optimizer, telemetry, control, record
        self.id = run_id  # the run's id in the store, or the id it would have had (record None: unrecorded)
        self.on_nonfinite, self.schedulers, self.batch_size, self.link = on_nonfinite, schedulers, batch_size, link
        self.ranks, self.guard, self.resumable = ranks, guard, resumable
        self.steps = 0  # steps taken: the next step's number
        self.status = "running"  # then "paused", ...; at the end, how the run ended
        self.subscribers = subscribers  # of the flushes and the status: the sinks, the store's last
        self.sinks = sinks  # [(kind, sink)] of engine/sinks/__init__.py attach: Visdom, TensorBoard
        self._events = []  # (step, kind, data) for the next flush
        self.steering = Steering(
            control, self._events, set_lr=self._set_lr, stop=self._stop, pause=self._pause,
            more={"set_plan": self._set_plan},
        )  # fmt: skip
        self.lockstep = None if ranks is None else Lockstep(ranks, control)
        self._snapshot = False  # the optimizer's step in progress takes a snapshot
        self._stopping = False  # a stop command arrived: the next step raises Stopped
        self._watching = True  # False once the watching failed or the run ended
        self._failure = None  # why the watching failed in an optimizer hook, for the next step to report
        self._said = set()  # the sinks whose error has been said
        self._taken = {}  # without an optimizer, at a snapshot step: name -> (gradient, weights) as accumulated
        self.plan, self.rules = plan or Plan(), rules or Rules()  # engine/loop/plan.py, engine/loop/rules.py
        if optimizer is not None:
            self._hooks = [
                optimizer.register_step_pre_hook(self._before_step),
                optimizer.register_step_post_hook(self._after_step),
            ]
        else:
            self._hooks = [p.register_post_accumulate_grad_hook(partial(self._take, n)) for n, p in layers.params]
        self._excepthook = sys.excepthook
        sys.excepthook = self._uncaught
        atexit.register(self._at_exit)

    # -- the hot path ------------------------------------------------------------------------

    def step(self, loss) -> None:
        """After the optimizer's step: this step's loss kept, a flush when one is due, the viewers' commands
        taken (a pause waits here; a stop raises Stopped)."""
        if not self._watching:
            if self._failure is not None:
                self._unwatch(self._failure)
            return
        try:
            if not isinstance(loss, torch.Tensor):
                loss = torch.tensor(float(loss), device=self.tel.device)
            else:  # without its graph (kept until the flush on CUDA); a loss per sample: their mean
                loss = loss.detach().mean() if loss.dim() else loss.detach()
            if self._taken:  # a loop without an optimizer, at a snapshot step: its update is done
                self.tel.before_update(self.steps, Taken(self._taken), None, None, math.nan)
                self.tel.after_update(self.steps, self.layers)
                self._taken = {}
            self.tel.record_loss(self.steps, loss)
            self.steps += 1
            if self.steps >= self.plan.next:  # the scheduled actions, before the step they name (every rank)
                self._scheduled()
            if self.ranks is not None:
                self._lockstep()
            else:
                if self.tel.flush_due():
                    self._flush()
                if self.control.pending:
                    self._commands()
        except (Stopped, NonFinite):
            raise
        except Exception as e:
            self._unwatch(e)
            return
        if self._stopping:
            raise Stopped(f"run {self.id} was stopped at step {self.steps}")

    def _before_step(self, optimizer, args, kwargs):
        """The optimizer's step pre-hook: at a snapshot step, the gradients and the weights before the update."""
        if self._watching and self.tel.due(self.steps):
            try:
                self._snapshot = True
                self.tel.before_update(self.steps, self.layers, None, None, optimizer.param_groups[0]["lr"])
            except Exception as e:  # reported by the next step: a hook cannot remove hooks
                self._failure, self._watching = e, False

    def _after_step(self, optimizer, args, kwargs):
        """The optimizer's step post-hook: at a snapshot step, the weights after the update and its ratio."""
        if self._snapshot:
            self._snapshot = False
            try:
                self.tel.after_update(self.steps, self.layers)
            except Exception as e:
                self._failure, self._watching = e, False

    def _take(self, name: str, p: torch.Tensor):
        """A parameter's post-accumulate-grad hook, in a loop without an optimizer: at a snapshot step, copies of
        its gradient and its weights before the loop updates them and zeroes the gradient."""
        if self._watching and self.tel.due(self.steps):
            try:
                self._taken[name] = (p.grad.detach().clone(), p.detach().clone())
            except Exception as e:
                self._failure, self._watching = e, False

    # -- flushes and the guard ---------------------------------------------------------------

    def _flush(self):
        f = self.tel.flush()
        if f is None and not self._events:
            return
        f = f or Flush(self.steps, [])
        f.events.extend(self._events)
        self._events.clear()
        if not self.batch_size:  # samples/s would be steps/s times a batch size nobody gave
            f.scalars[:] = [s for s in f.scalars if s[1] != "samples_per_s"]
        bad = self._first_nonfinite(f)
        if self.rules and bad is None and (self.ranks is None or self.ranks.leader):  # rank 0 sends the commands
            self.rules.apply(f, self.optimizer.param_groups[0]["lr"] if self.optimizer else math.nan, self.control)
        if bad is None and f.losses and self.guard is not None:
            self._keep_finite()
        self.subscribers.trigger("on_flush", f)
        if self.sinks:
            self._say_errors([(kind, sink.status_info()) for kind, sink in self.sinks])
        if bad is not None and self.on_nonfinite != "ignore":
            self._guard(*bad)

    def _say_errors(self, infos: list[tuple[str, dict]]):
        """A sink's first error (a Visdom server gone, a folder that cannot be written), said once; the sink goes
        on buffering or dropping, as it does for any run (engine/sinks/)."""
        for kind, info in infos:
            if info["error"] and kind not in self._said:
                self._said.add(kind)
                say(f"{describe(kind, info)}; training goes on")

    def _first_nonfinite(self, f: Flush) -> tuple[int, str | None] | None:
        """(step, layer) of the first non-finite number the flush brings: a loss, or a snapshot's gradient or
        weight (the layer, from the snapshot, first in the model's order); None when all are finite."""
        step = next((f.first_step + i for i, v in enumerate(f.losses) if not math.isfinite(v)), None)
        hists = [h for h in f.hists if h.nonfinite]
        if hists:
            first = min(h.step for h in hists)
            if step is None or first <= step:
                at = [h for h in hists if h.step == first]
                grads = [h for h in at if h.kind == "grad"] or at
                return first, min(grads, key=lambda h: self.layers.order(h.layer)).layer
        return None if step is None else (step, None)

    def _guard(self, step: int, layer: str | None):
        """A non-finite number at `step`: name the first layer, put back the last finite weights (when kept), then
        pause, or raise NonFinite."""
        layer = layer or self.layers.first_nonfinite()
        info = {"step": step, "layer": layer, "ran_after": self.steps - 1 - step, "restored": None}
        if self.guard is not None and self.on_nonfinite == "pause" and self.resumable and self.status != "paused":
            saved = self.guard.restore()
            info["restored"] = saved and saved.step
            self.tel.after_update(self.steps, self.layers)  # the last histograms shown are the finite weights
        self.tel.rearm()
        if self.status == "paused":  # found by the flush that starts a pause: recorded, the pause goes on
            self._events.append((step, "divergence", info))
            return
        what = f"a non-finite loss or gradient at step {step} (first layer: {layer or 'none; the loss alone'})"
        if self.on_nonfinite == "raise":
            self._events.append((step, "divergence", info))
            raise NonFinite(f"run {self.id}: {what}")
        if not self.resumable:  # no store: nobody could resume it
            say(f"{what}; training goes on")
            return
        back = f"; the weights of step {info['restored']} are back" if info["restored"] is not None else ""
        if self.record is not None:
            say(f"{what}{back}; paused: Resume at {self.link}, or: python -m engine resume {self.id}")
        self._pause("divergence", info, step, status="diverged")

    # -- commands ----------------------------------------------------------------------------

    def _commands(self):
        for cid, command, value in self.control.take():
            self._apply(cid, command, value, paused=False)

    def _scheduled(self):
        """The plan's actions at this step, each recorded as the event "scheduled"; a watched loop keeps no
        checkpoints, so a scheduled one is recorded as left out."""
        for command, value, data in self.plan.due(self.steps):
            left_out = {"left_out": "a watched loop keeps no checkpoints"} if command == "checkpoint" else {}
            self._events.append((self.steps, "scheduled", {**data, **left_out}))
            if not left_out:
                self._apply(None, command, value, paused=False)

    def _lockstep(self):
        """Under torchrun: apply rank 0's word of the step before (a flush, its commands) on every rank, then post
        the next, as the engine's trainer does (engine/loop/distributed.py Lockstep)."""
        flush, commands = self.lockstep.take()
        if flush:
            self._flush()
        for cid, command, value in commands:
            self._apply(cid, command, value, paused=False)
        if not self._stopping:
            self.lockstep.post(self.tel.flush_due())

    def _apply(self, cid, command, value, paused: bool) -> bool:
        """Apply one command (engine/loop/control.py Steering); True when it ends a pause (resume or stop)."""
        return self.steering.apply(self.steps, command, value, paused=paused, cid=cid)

    def _set_lr(self, lr: float) -> float:
        if self.optimizer is None:
            raise Refused("the loop has no optimizer whose rate could be set")
        return set_lr(self.optimizer, lr, self.schedulers)

    def _stop(self):
        self._stopping = True

    def _keep_finite(self):
        """The weights now, known finite by this flush's losses, kept by the guard; if they cannot be (no memory
        left for the copies), one line, and the guard pauses without putting weights back."""
        try:
            self.guard.finite(self.steps)
        except Exception as e:
            self.guard = None
            say(f"the last finite weights are not kept: {type(e).__name__}: {e}; training goes on")

    def _set_plan(self, step, value, paused):
        """The schedule's actions still to come, replaced (engine/loop/plan.py)."""
        return "schedule", self.plan.replace(value, step)

    def _pause(self, kind: str, data: dict, step: int | None = None, status: str = "paused"):
        """Flush, report paused, and wait for resume or stop; set_lr applies while paused. The commands are
        looked at every half second, so Ctrl-C interrupts the wait."""
        self._events.append((self.steps if step is None else step, kind, data))
        self.status = "paused"
        self._flush()
        self.subscribers.trigger("on_status", status, {**data, "reason": data.get("reason", kind)})  # "divergence"
        while True:
            commands = commands_while_paused(self.control, self.lockstep)
            ended = [self._apply(cid, cmd, v, paused=True) for cid, cmd, v in commands]
            if self._events and not any(ended):  # an lr change while paused: recorded now, not at resume
                self._flush()
            if any(ended):
                break
        self.status = "running"
        self.tel.reset_clock(self.steps)
        self.subscribers.trigger("on_status", "stopping" if self._stopping else "running", {})

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> None:
        """End the run: the last flush, and its status (finished, or stopped after a Stop). Once; later calls
        do nothing."""
        self._end(*ending(None, self._stopping))

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        """Mark the run as the block ended; a Stop ends it quietly (the exception is swallowed)."""
        self._end(*ending(exc, self._stopping))
        return isinstance(exc, Stopped)

    def _uncaught(self, kind, exc, tb):
        """sys.excepthook while the run is watched: the run is marked (failed with the exception's last line,
        stopped on Ctrl-C), then the hook before it prints the traceback."""
        self._end(*ending(exc))
        self._excepthook(kind, exc, tb)

    def _at_exit(self):
        """The interpreter exits with the run still watched (no finish, no exception): it ran to its end."""
        if self._failure is not None:
            self._unwatch(self._failure)
        self._end(*ending(None, self._stopping))

    def _end(self, status: str, error: str | None = None):
        if self.status not in ("running", "paused"):
            return
        self.status = status
        for h in self._hooks:
            h.remove()
        atexit.unregister(self._at_exit)
        if sys.excepthook == self._uncaught:
            sys.excepthook = self._excepthook
        events = []
        try:
            if self._watching and (self.ranks is None or self._stopping or status == "finished"):  # every rank
                self.on_nonfinite = "ignore"  # the last flush is recorded, not acted on: the run is over
                if self.ranks is not None:
                    self.ranks.take()  # the last word: every rank waits for it, none acts on it
                self._flush()
            events = close_sinks(self.sinks, status)
            self._say_errors(events)
        except Exception as e:  # the script ends as it would have without liveprop
            say(f"the run's last numbers are not recorded: {type(e).__name__}: {e}")
        finally:
            self._watching = False
            if self.record:
                self.record.end(status, error, events)

    def _unwatch(self, e: Exception):
        """The watching failed: say so once, mark the run failed with the reason, and let training go on."""
        self._watching, self._failure = False, None
        say(f"stopped watching the run: {type(e).__name__}: {e}; training goes on")
        self._end("failed", f"liveprop: {type(e).__name__}: {e}")
