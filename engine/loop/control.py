"""Commands from another thread to the training loop: pause, resume, stop, set_lr, and while paused
edit_layer and step.

The worker's store thread (engine/sinks/store.py) puts the viewers' commands here; the trainer
checks one Python attribute (`pending`) per step and takes them at the next step boundary. Each
command is acknowledged (`ack`), and the store thread writes the acknowledgements back.
"""

from __future__ import annotations

import threading


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
