"""Every file a run owns beside its rows in the store: the one place that knows where they live.

All of them sit under the store's folder (runs/ by default), named by the run id:

    runs/liveprop.db                 the store (every run's rows)
    runs/checkpoints/RUN.pt          the worker's checkpoint (written atomically: RUN.pt.tmp-PID, then renamed)
    runs/logs/RUN.log                the detached worker's stdout and stderr
    runs/visdom/RUN.jsonl            the Visdom sink's spool, while points are undelivered

delete_run (engine/runs.py) removes exactly these, and nothing outside the store's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .store import default_path


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

    def existing(self) -> list[Path]:
        """The files of this run that exist now, leftovers of interrupted writes included."""
        found = [p for p in (self.checkpoint, self.log, self.spool) if p.is_file()]
        found += self.checkpoint.parent.glob(f"{self.run_id}.pt.tmp-*")
        found += self.spool.parent.glob(f"{self.run_id}.tmp")
        return found
