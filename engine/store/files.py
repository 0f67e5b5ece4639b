"""Every file a run owns beside its rows in the store: the one place that knows where they live.

All of them sit under the store's folder (runs/ by default), named by the run id:

    runs/liveprop.db                 the store (every run's rows)
    runs/checkpoints/RUN.pt          the worker's latest checkpoint (written atomically: RUN.pt.tmp-PID, then
                                     renamed; a dead writer's RUN.pt.tmp-PID is removed: remove_stale_tmp)
    runs/checkpoints/RUN/STEP.pt     the earlier ones: the first and the HISTORY newest (RUN.pt links the newest),
                                     for a fork from step k
    runs/logs/RUN.log                the detached worker's stdout and stderr
    runs/visdom/RUN.jsonl            the Visdom sink's spool, while points are undelivered
    runs/exports/RUN.onnx            the model exported from the Runs page (engine/tools/to_onnx.py)
    runs/landscapes/RUN.json         the loss landscape job's progress and result (engine/runs/landscape.py)

delete_run (engine/runs/api.py) removes exactly these, and nothing outside the store's folder. Beside
them, the store's warm standby (engine/runs/standby.py) has three files of its own, named by the store:

    runs/liveprop.standby.sock       the UNIX socket a waiting standby listens on for the next run
    runs/liveprop.standby.lock       held (flock) by the one standby of this store, while it lives
    runs/logs/liveprop.standby.log   a standby's output until it is handed a run (then the run's log)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from engine.store.db import default_path


@dataclass(frozen=True)
class RunFiles:
    run_id: str
    root: Path  # the store's folder

    @classmethod
    def of(cls, run_id: str, store_path: str | None = None) -> RunFiles:
        return cls(run_id, Path(store_path or default_path()).parent)

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoints" / f"{self.run_id}.pt"

    @property
    def log(self) -> Path:
        return self.root / "logs" / f"{self.run_id}.log"

    @property
    def spool(self) -> Path:
        return self.root / "visdom" / f"{self.run_id}.jsonl"

    @property
    def onnx(self) -> Path:
        """Where the Runs page's ONNX export goes (engine/tools/to_onnx.py)."""
        return self.root / "exports" / f"{self.run_id}.onnx"

    @property
    def landscape(self) -> Path:
        """The loss landscape job's progress and result (engine/runs/landscape.py)."""
        return self.root / "landscapes" / f"{self.run_id}.json"

    @property
    def history(self) -> Path:
        """The folder of the run's earlier checkpoints, STEP.pt (12 digits), for a fork from step k."""
        return self.root / "checkpoints" / self.run_id

    def history_at(self, step: int) -> Path:
        return self.history / f"{step:012d}.pt"

    def checkpoint_at_or_before(self, step: int) -> Path | None:
        """The newest checkpoint of the history at or before step (None when there is none)."""
        found = [p for p in self.history.glob("*.pt") if p.stem.isdigit() and int(p.stem) <= step]
        return max(found, key=lambda p: int(p.stem), default=None)

    def existing(self) -> list[Path]:
        """The files of this run that exist now, leftovers of interrupted writes included."""
        found = [p for p in (self.checkpoint, self.log, self.spool, self.onnx, self.landscape) if p.is_file()]
        found += self.checkpoint.parent.glob(f"{self.run_id}.pt.tmp-*")
        found += self.history.glob("*")
        found += self.spool.parent.glob(f"{self.run_id}.tmp")
        found += self.landscape.parent.glob(f"{self.run_id}.json.tmp-*")
        return found

    def remove(self) -> None:
        """Every file of the run, and its history folder."""
        for path in self.existing():
            path.unlink(missing_ok=True)
        if self.history.is_dir():
            self.history.rmdir()


def alive(pid: int) -> bool:
    """Whether pid is a running process: a zombie (killed, not yet waited for) is dead."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def remove_stale_tmp(root: Path, run_id: str = "*") -> list[Path]:
    """Remove the checkpoint temporaries (RUN.pt.tmp-PID) whose writer is dead: a worker killed in the
    middle of a save leaves one, up to the checkpoint's size. A live writer's file is left alone.
    Called when a worker starts (every run's) and when a dead worker is reaped (its run's)."""
    removed = []
    folder = Path(root) / "checkpoints"
    for path in [*folder.glob(f"{run_id}.pt.tmp-*"), *folder.glob(f"{run_id}/*.pt.tmp-*")]:
        pid = path.name.rpartition("-")[2]
        if not (pid.isdigit() and alive(int(pid))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


SOCKET_MAX = 100  # bytes: a UNIX socket's path holds 108 on Linux, 104 on macOS


@dataclass(frozen=True)
class StandbyFiles:
    root: Path  # the store's folder
    stem: str  # the store's name without its suffix: one standby per store

    @classmethod
    def of(cls, store_path: str | None = None) -> StandbyFiles:
        path = Path(os.path.abspath(store_path or default_path()))  # the standby runs in another folder
        return cls(path.parent, path.stem)

    @property
    def socket(self) -> Path | None:
        """None when the path is too long for a UNIX socket: that store gets no standby."""
        path = self.root / f"{self.stem}.standby.sock"
        return path if len(os.fsencode(path)) <= SOCKET_MAX else None

    @property
    def lock(self) -> Path:
        return self.root / f"{self.stem}.standby.lock"

    @property
    def log(self) -> Path:
        return self.root / "logs" / f"{self.stem}.standby.log"
