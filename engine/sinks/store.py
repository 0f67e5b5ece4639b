"""The run store as a sink: the worker's only store connection, on its own thread.

It writes each flush in one transaction and the run's status, beats the heartbeat every POLL_S,
passes the viewers' commands (control rows) to the training loop through Control, and writes
their acknowledgements back. The queue is bounded and blocks when full: the store is the record,
so a flush is never dropped (the trainer flushes every 0.5 s, far below what the store can take).
"""

from __future__ import annotations

import queue
import threading
import time

from ..control import Control
from ..store import Store

POLL_S = 0.25  # the heartbeat and the control poll


class StoreSink:
    """The worker's only store connection, on its own thread: writes flushes and status, beats the
    heartbeat, passes viewers' commands to the loop and writes their acknowledgements."""

    def __init__(self, store_path: str, run_id: str, control: Control):
        self.store_path, self.run_id, self.control = store_path, run_id, control
        self.q = queue.Queue(maxsize=256)  # bounded: the store is the record, so it blocks when full
        self.error = None
        self._seen = set()
        self._thread = threading.Thread(target=self._loop, name="liveprop-store", daemon=True)
        self._thread.start()

    def on_flush(self, flush):
        self.q.put(("flush", flush))

    def on_status(self, status, info):
        self.q.put(("status", status))

    def close(self):
        self.q.put(None)
        self._thread.join(timeout=60)

    def _loop(self):
        store = Store(self.store_path)
        last_beat = 0.0
        while True:
            try:
                item = self.q.get(timeout=0.2)
            except queue.Empty:
                item = ()
            try:
                if item is None:
                    self._acks(store)
                    break
                if item and item[0] == "flush":
                    store.write_flush(self.run_id, item[1])
                elif item and item[0] == "status":
                    store.set_status(self.run_id, "paused" if item[1] in ("paused", "diverged") else "running")
                if time.time() - last_beat >= POLL_S:
                    last_beat = time.time()
                    store.update_run(self.run_id, heartbeat=last_beat)
                    self._acks(store)
                    for c in store.pending_control(self.run_id):
                        if c["id"] not in self._seen:
                            self._seen.add(c["id"])
                            self.control.put(c["id"], c["command"], c["value"])
            except Exception as e:  # never silent: the worker reports it as the run's error
                self.error = f"store sink: {type(e).__name__}: {e}"
        store.close()

    def _acks(self, store):
        while self.control.acks:
            cid, result = self.control.acks.pop(0)
            store.ack_control(cid, result)
