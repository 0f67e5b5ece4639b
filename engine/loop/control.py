"""Commands to a training loop, from another thread or from the loop itself: pause, resume, stop, set_lr.

Control       the mailbox: the worker's store thread (engine/sinks/store.py) puts the viewers' commands
              here; the loop checks one Python attribute (`pending`) per step and takes them at the next
              step boundary; each command is acknowledged (`ack`), and the store thread writes the
              acknowledgements back.
Steering      the one place a command is applied to a loop and recorded as an event: the engine's trainer
              (engine/loop/trainer.py) and a watched loop of a user's own (liveprop/run.py) both apply
              theirs through it, and so can anything that decides commands itself (a scheduled action, a
              rule), calling apply(step, command, value).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Control:
    """Commands from another thread to the loop: pause, resume, stop, set_lr, edit_layer, step."""

    def __init__(self):
        self.pending = False
        self._lock = threading.Lock()
        self._commands = []  # (id, command, value)
        self._wake = threading.Event()
        self.acks = []  # (id, result), read by the store thread

    def put(self, cid, command, value=None):
        with self._lock:
            self._commands.append((cid, command, value))
            self.pending = True
        self._wake.set()

    def take(self):
        with self._lock:
            cmds, self._commands, self.pending = self._commands, [], False
            self._wake.clear()
            return cmds

    def wait(self, timeout=None):
        self._wake.wait(timeout)

    def ack(self, cid, result="ok"):
        if cid is not None:
            self.acks.append((cid, result))


class Refused(Exception):
    """A command that this loop cannot apply (a loop without an optimizer given a rate): the reason, acknowledged
    as "ignored: <reason>"."""


class Steering:
    """Applies a loop's commands at a step boundary and records each as an event (step, kind, data) in the loop's
    list of events for its next flush:

        set_lr V    the loop's set_lr(V) returns the rate before; event "lr_change" {"old", "new"}
        stop        the loop's stop(): it ends at its next boundary; event "stop"
        pause R     the loop's pause("pause", {"reason": R or "command"}), which records the event, flushes and
                    blocks until a resume or a stop, applied through here with paused=True
        resume      ends a pause; event "resume"
        the loop's own (`more`: the trainer's set_plan, edit_layer, step): more[command](step, value, paused)
                    applies it and returns the event (kind, data) to record, or None (it records its own)

    A command the loop's state does not allow (resume while running, pause while paused) or cannot apply
    (Refused) changes nothing and is acknowledged "ignored: ..."; the others "ok". The loop keeps `events` as
    one list for its life (it empties it in place)."""

    def __init__(
        self,
        control: Control,
        events: list,
        *,
        set_lr: Callable[[float], float],
        stop: Callable[[], None],
        pause: Callable[[str, dict], None],
        more: dict[str, Callable[[int, object, bool], tuple | None]] | None = None,
    ):
        self.control, self.events = control, events
        self._set_lr, self._stop, self._pause = set_lr, stop, pause
        self.more = more or {}

    def apply(self, step: int, command: str, value=None, *, paused: bool = False, cid=None) -> bool:
        """Apply one command at the boundary before `step` (cid: its id in the store, acknowledged; None for a
        command the loop gave itself). Returns True when it ends a pause (resume or stop)."""
        if command == "set_lr":
            try:
                old = self._set_lr(float(value))
            except Refused as e:
                self.control.ack(cid, f"ignored: {e}")
                return False
            self.events.append((step, "lr_change", {"old": old, "new": float(value)}))
        elif command == "stop":
            self._stop()
            self.events.append((step, "stop", {}))
        elif command == "resume" and paused:
            self.events.append((step, "resume", {}))
        elif command == "pause" and not paused:
            self.control.ack(cid)
            self._pause("pause", {"reason": value or "command"})  # a viewer's, or the store sink's "disk_full"
            return False
        elif command in self.more:
            try:
                event = self.more[command](step, value, paused)
            except Refused as e:
                self.control.ack(cid, f"ignored: {e}")
                return False
            if event is not None:
                self.events.append((step, *event))
        else:
            self.control.ack(cid, f"ignored: {command} while {'paused' if paused else 'running'}")
            return False
        self.control.ack(cid)
        return command in ("stop", "resume")
