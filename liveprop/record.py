"""A watched loop's record in the run store, as an engine run's: the run's row, its store sink, how it ended.

The row's config describes the script instead of a RunConfig: "mode" is "script", with the script's path,
its arguments and git commit, the user's `config=` as given (under "config"), the model's and the
optimizer's class names ("arch", "optimizer") and the first group's starting rate ("lr"; NaN for a loop
without an optimizer). The pid is this process's, so that the engine's reaper (engine/runs/api.py) marks
the run failed once the process is gone, as it does a worker's. Nothing here may break the user's training:
a store that cannot be opened or written costs one line on stderr, and the loop runs on.
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import subprocess
import sys
import time
from pathlib import Path

import torch

from engine import LivepropError, Store
from engine.loop.control import Control
from engine.sinks.store import StoreSink, status_fields

CLOSE_WAIT_S = 5.0  # at the end, how long the store sink's last writes wait for a full disk to have space


def say(line: str) -> None:
    """One line for the person running the script, on stderr."""
    try:
        print(f"liveprop: {line}", file=sys.stderr, flush=True)
    except OSError:  # no terminal left to say it on
        pass


def _git(folder: Path, *args) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=2)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        return None


def script_config(name: str, config, model, optimizer: torch.optim.Optimizer | None, extra: dict) -> dict:
    """The run's config: what the Runs page and the CLI show of a script's run (the module docstring)."""
    argv0 = sys.argv[0] if sys.argv else ""
    script = Path(argv0).resolve() if argv0 and argv0 != "-c" and Path(argv0).is_file() else None
    folder = script.parent if script else Path.cwd()
    commit = _git(folder, "rev-parse", "HEAD")
    return {
        "mode": "script",
        "name": name,
        "script": str(script) if script else argv0,
        "argv": sys.argv[1:],
        "git": commit,
        "git_changes": None if commit is None else bool(_git(folder, "status", "--porcelain", "--untracked-files=no")),
        "config": json.loads(json.dumps(dict(config or {}), default=str)),  # as given; what JSON cannot hold as str
        "arch": "tensors" if isinstance(model, dict) else type(model).__name__,
        "optimizer": type(optimizer).__name__ if optimizer else None,
        "lr": float(optimizer.param_groups[0]["lr"]) if optimizer else math.nan,  # the loop's own, unknown here
        **extra,
    }


class ScriptSink(StoreSink):
    """The engine's store sink (its thread writes the flushes, beats the heartbeat and passes the viewers'
    commands to Control), for a loop that is the user's: a flush that finds the queue full (the disk has
    been full a while) is dropped and counted instead of holding the loop, and a full disk is said once
    without pausing the loop."""

    def __init__(self, store_path: str, run_id: str, control: Control):
        super().__init__(store_path, run_id, control, close_wait_s=CLOSE_WAIT_S)
        self.dropped = 0  # steps whose flush was dropped

    def on_flush(self, flush):
        try:
            self.q.put_nowait(flush)
        except queue.Full:
            if not self.dropped:
                say(f"the run store cannot keep up (disk full?): steps from {flush.first_step} are not recorded")
            self.dropped += len(flush.losses)

    def on_status(self, status, info):
        try:
            self.q.put_nowait(status_fields(status, info))
        except queue.Full:  # the final status is written at the end in any case
            pass

    def _disk_full(self):
        if self.disk_full_since is None:
            self.disk_full_since = time.monotonic()
            say(f"the disk holding the run store {self.store_path} is full: the run's writes wait; training goes on")


class Record:
    """The run's row, its store sink, and the run's end, written once."""

    def __init__(self, store: Store, run_id: str, sink: ScriptSink):
        self.store, self.id, self.sink = store, run_id, sink

    @classmethod
    def open(cls, store_path: str, run_id: str, config: dict, total_steps: int | None, device, control: Control):
        """Write the run as running in this process, and start its store sink; None (and one line) when the
        store cannot be opened or written."""
        store = None
        try:
            store = Store(store_path)
            store.create_run(run_id, config, name=config["name"], total_steps=total_steps)
            now = time.time()
            store.update_run(run_id, status="running", pid=os.getpid(), started=now, heartbeat=now, device=str(device))
            store.add_event(run_id, None, "environment", environment(device))
        except LivepropError as e:
            say(f"{e}; training goes on without a record")
            if store is not None:
                store.close()
            return None
        return cls(store, run_id, ScriptSink(store.path, run_id, control))

    def end(self, status: str, error: str | None, events: list[tuple[str, dict]]) -> None:
        """After the last flush: the sink's writes done (or given up), then the status, the error and the
        sinks' last words (events), each tried once: a full disk costs a line, never the script's exit."""
        self.sink.close()
        error = error or self.sink.error
        try:
            if error:
                self.store.add_event(self.id, None, "error", {"message": error})
            self.store.set_status(self.id, status, error)
            self.store.update_run(self.id, heartbeat=time.time())
            for kind, info in events:
                self.store.add_event(self.id, None, kind, info)
        except Exception as e:  # a full disk, a store gone: the script ends as it would have
            say(f"the run's end ({status}) is not recorded: {e}")
        finally:
            self.store.close()


def environment(device: torch.device) -> dict:
    """What ran the script: the versions and the device (the event "environment", as a worker's)."""
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": str(device)}  # fmt: skip
