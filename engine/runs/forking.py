"""A fork starts at exactly the step asked: the parent's nearest checkpoint at or before it, then the parent's
steps from there to that step replayed bit for bit, as a resume would take them, with the parent's recorded lr
changes on the way; the fork's own change applies from that step on.

    plan(store, run_id, step)         where the fork starts from, how many steps it replays and the lr changes on
                                      the way; refuses (one line) a step the parent has not reached, a replay
                                      across a divergence (the guard put earlier weights back there) and one on
                                      several processes
    start_of(store, run_id, row)      in the fork's worker, before it builds the fork: the replay, written as the
                                      fork's first checkpoint (at the fork's step), which the fork resumes from

engine/runs/api.py fork records the plan in the fork's "forked" event; the worker replays it once, while the
fork's checkpoint is still the parent's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.build.assemble import build, prepare
from engine.config.load import from_dict
from engine.errors import RunStateError
from engine.loop import checkpoint
from engine.store.files import RunFiles


@dataclass
class Plan:
    source: Path  # the parent's checkpoint the replay starts from
    start: int  # its step
    step: int  # the fork's first step: the replay ends here
    lr_changes: list  # [step, lr] of the parent's lr changes that the replay makes, in order

    @property
    def replay(self) -> int:
        """How many of the parent's steps are taken again."""
        return self.step - self.start

    def record(self) -> dict:
        """What the fork's "forked" event keeps of the plan, for its worker (start_of)."""
        return {"source": str(self.source), "from": self.start, "replay": self.replay, "lr_changes": self.lr_changes}


def plan(s, run_id: str, step: int) -> Plan:
    """A fork of run_id (its row read from the store s) at `step`."""
    parent = s.get_run(run_id)
    if parent is None:
        raise RunStateError(f"no run {run_id!r} in {s.path}")
    reached = parent["step"] or 0
    if step > reached:
        raise RunStateError(f"run {run_id} has reached step {reached}; fork at or before it, not at step {step}")
    files = RunFiles.of(run_id, s.path)
    source = files.checkpoint_at_or_before(step)
    if source is None:
        kept = sorted(int(p.stem) for p in files.history.glob("*.pt") if p.stem.isdigit())
        raise RunStateError(f"run {run_id} has no checkpoint at or before step {step}; it has steps {kept or 'none'}")
    start = int(source.stem)
    for d in s.events(run_id, kind="divergence"):
        first, noticed = d["data"]["step"], d["data"]["step"] + d["data"]["ran_after"] + 1
        if first < step and noticed >= start:  # the replay would cross the steps that the guard took back
            back = d["data"].get("restored")
            where = f"at or before step {back}" if back is not None and back >= start else "from a later checkpoint"
            raise RunStateError(f"run {run_id} diverged at step {first} on the way from step {start}; fork {where}")
    if step > start and from_dict(parent["config"]).world > 1:
        raise RunStateError(
            f"run {run_id} trained on several processes, where a fork starts at a checkpoint only; "
            f"the nearest at or before step {step} is step {start}"
        )
    changes = [[e["step"], e["data"]["new"]] for e in s.events(run_id, kind="lr_change") if start <= e["step"] < step]
    return Plan(source, start, step, changes)


def start_of(s, run_id: str, row: dict) -> dict:
    """The fork's row, its checkpoint the parent's state at the fork's step: the plan's replay, on the parent's
    own configuration (its optimizer, its lr as it was), saved as the fork's first checkpoint. Any other run's
    row, and a fork's once it has its own checkpoint (a resume), come back as they are."""
    forked = s.last_event(run_id, "forked")
    todo = forked["data"] if forked else {}
    if not todo.get("replay") or row["checkpoint"] != todo.get("source"):
        return row
    ckpt = checkpoint.load(todo["source"])
    p = prepare(from_dict(ckpt["config"]), memory=False)
    mode, batches = build(p)
    checkpoint.restore(ckpt, mode, batches, p.cfg)
    stop = todo["from"] + todo["replay"]
    checkpoint.advance(mode, batches, todo["from"], stop, todo["lr_changes"])
    path = checkpoint.keep(RunFiles.of(run_id, s.path), checkpoint.snapshot(mode, stop, p.cfg, batches))
    s.update_run(run_id, checkpoint=str(path))
    return {**row, "checkpoint": str(path)}
