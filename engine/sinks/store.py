"""The run store as a sink: the worker's only store connection, on its own thread.

It writes each flush in one transaction and the run's status, beats the heartbeat every POLL_S,
passes the viewers' commands (control rows) to the training loop through Control, and writes
their acknowledgements back. The store is the record, so nothing is dropped:

- Writes happen in order, from a backlog. A write that fails because the disk is full (DiskFull)
  stays at the head of the backlog and is tried again every RETRY_S; nothing behind it is written
  first, so the stored series never has a hole and runs.step never claims more than is stored.
- When the disk stays full for PAUSE_AFTER_S, the sink pauses the run (a "pause" command with the
  reason "disk full", as a viewer's would be) and says so on stderr (the run's log). Once the
  backlog is written, it resumes the run, unless a viewer paused it meanwhile.
- Memory stays bounded: the sink takes no more from its queue while MAX_BACKLOG items wait, and the
  queue blocks when full, which holds the training loop (it is paused by then anyway).
"""

from __future__ import annotations

import collections
import contextlib
import queue
import sys
import threading
import time

from engine.errors import DiskFull
from engine.loop.control import Control
from engine.store.db import Store

POLL_S = 0.25  # the heartbeat and the control poll
RETRY_S = 0.5  # a write that found the disk full is tried again this often
PAUSE_AFTER_S = 1.0  # the disk full this long: pause the run
MAX_BACKLOG = 64  # writes waiting for space; then the queue fills and holds the loop


def status_fields(status: str, info: dict) -> dict:
    """The run's row for a loop's status event: its status, and why a paused run waits (PAUSE_REASONS in
    engine/store/schema.py: the loop's pause says command, divergence, disk_full, schedule or rule)."""
    paused = status in ("paused", "diverged")
    return {"status": "paused" if paused else "running", "pause_reason": info.get("reason") if paused else None}


class StoreSink:
    """The worker's only store connection, on its own thread: writes flushes and status, beats the
    heartbeat, passes viewers' commands to the loop and writes their acknowledgements."""

    def __init__(self, store_path: str, run_id: str, control: Control, close_wait_s: float = 60.0):
        self.store_path, self.run_id, self.control = store_path, run_id, control
        self.q = queue.Queue(maxsize=256)  # bounded: the store is the record, so it blocks when full
        self.backlog = collections.deque()  # flushes, written in order
        self.run_fields = {}  # the run's status (and reason) to write next: only the latest counts
        self.error = None
        self.disk_full_since = None  # time.monotonic() of the first write the full disk refused
        self.close_wait_s = close_wait_s  # at the end, how long to wait for space before giving up
        self._paused_for_space = False
        self._seen = set()
        self._thread = threading.Thread(target=self._loop, name="liveprop-store", daemon=True)
        self._thread.start()

    def on_flush(self, flush):
        self.q.put(flush)

    def on_status(self, status, info):
        self.q.put(status_fields(status, info))

    def close(self):
        self.q.put(None)
        self._thread.join(timeout=self.close_wait_s + 30)

    def _loop(self):
        store = Store(self.store_path)
        last_beat, closing, closed_at = 0.0, False, None
        while True:
            if not closing and len(self.backlog) < MAX_BACKLOG:
                try:
                    item = self.q.get(timeout=RETRY_S if self.backlog else 0.2)
                except queue.Empty:
                    item = ()
                if item is None:
                    closing, closed_at = True, time.monotonic()
                elif isinstance(item, dict):
                    self.run_fields.update(item)
                elif item:
                    self.backlog.append(item)
            else:
                time.sleep(RETRY_S if self.backlog else 0)
            try:
                self._write_backlog(store)
            except DiskFull:
                self._disk_full()
            except Exception as e:  # never silent: the worker reports it as the run's error
                self.error = f"store sink: {type(e).__name__}: {e}"
                self.backlog.clear()
            if time.time() - last_beat >= POLL_S or closing:
                last_beat = time.time()
                self._poll(store)
            if closing and not self.backlog:
                break
            if closing and time.monotonic() - closed_at > self.close_wait_s:
                self._give_up()
                break
        store.close()

    def _write_backlog(self, store):
        """Write the waiting flushes in order; the first that fails stops the rest (it raises)."""
        while self.backlog:
            store.write_flush(self.run_id, self.backlog[0])
            self.backlog.popleft()
        if self.disk_full_since is not None:
            self._space_again()

    def _poll(self, store):
        """The heartbeat, the acknowledgements, and the viewers' new commands for the loop. On a full
        disk the writes wait (the heartbeat is skipped), but the commands are still read."""
        try:
            with contextlib.suppress(DiskFull):  # a status and a heartbeat may fit where a flush does not
                store.update_run(self.run_id, **self.run_fields, heartbeat=time.time())
                self.run_fields = {}
                while self.control.acks:
                    cid, result = self.control.acks[0]
                    store.ack_control(cid, result)
                    self.control.acks.pop(0)
            new = [c for c in store.pending_control(self.run_id) if c["id"] not in self._seen]
        except Exception as e:
            self.error = f"store sink: {type(e).__name__}: {e}"
            return
        for c in new:
            self._seen.add(c["id"])
            if c["command"] in ("pause", "resume", "stop"):  # a viewer's command outlives ours
                self._paused_for_space = False
                if c["command"] == "resume" and self.disk_full_since is not None:
                    self.disk_full_since = time.monotonic()  # still full: pause again after PAUSE_AFTER_S
            self.control.put(c["id"], c["command"], c["value"])

    def _disk_full(self):
        now = time.monotonic()
        if self.disk_full_since is None:
            self.disk_full_since = now
            _say(f"the disk holding the run store is full: {self._waiting()} wait, tried every {RETRY_S} s")
        if now - self.disk_full_since >= PAUSE_AFTER_S and not self._paused_for_space:
            self._paused_for_space = True
            self.control.put(None, "pause", "disk_full")
            self.run_fields.update(
                status="paused", pause_reason="disk_full", error=f"disk full: {self._waiting()} wait for space"
            )
            _say("run paused until there is space again (it resumes by itself)")

    def _space_again(self):
        waited = time.monotonic() - self.disk_full_since
        self.disk_full_since = None
        _say(f"space again after {waited:.0f} s: every waiting write is stored")
        if self._paused_for_space:
            self._paused_for_space = False
            self.control.put(None, "resume")
            self.run_fields.update(error=None, pause_reason=None)

    def _waiting(self) -> str:
        """'8 flushes (steps 1-7316)': what the backlog holds."""
        steps = [f for f in self.backlog if f.losses]
        where = f" (steps {steps[0].first_step}-{steps[-1].last_step})" if steps else ""
        return f"{len(self.backlog)} flush(es){where}"

    def _give_up(self):
        self.error = f"the disk stayed full: {self._waiting()} could not be stored"
        _say(self.error)


def _say(line: str):
    """One line on the worker's stderr, which is the run's log (not the hot path: the sink's thread)."""
    try:
        print(f"liveprop: store: {line}", file=sys.stderr, flush=True)
    except OSError:  # the log is on the full disk too
        pass
