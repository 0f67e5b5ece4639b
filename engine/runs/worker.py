"""The worker: one run trained to its end, in `python -m engine worker RUN` (detached, started by
engine/runs/api.py) or in the foreground by `python -m engine train`.

    run_worker(run_id)   build the run (from its checkpoint, when engine/runs/api.py resume_run resumes it),
                         subscribe the sinks (Visdom, TensorBoard, then the store), train with a
                         checkpoint every checkpoint_seconds (engine/loop/checkpoint.py), write the final
                         checkpoint and status; returns the status

Started by torchrun (--nproc, engine/loop/distributed.py), rank 0 does all of that; the other ranks `follow`:
the same training on their share of the batches, writing nothing.

Signals: SIGTERM or Ctrl-C asks for a graceful stop with a final checkpoint; a second one
interrupts. Any failure is written to the run as its one-line reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from engine.errors import DiskFull, LivepropError, RunStateError, StorageError
from engine.loop import checkpoint
from engine.runs import forking
from engine.build.assemble import build, prepare, resolve_device
from engine.config.load import from_dict
from engine.loop.control import Control
from engine.loop.distributed import PeerFailed, Ranks
from engine.loop.plan import Plan
from engine.loop.rules import Rules
from engine.store.files import RunFiles, remove_stale_tmp
from engine.sinks import attach as attach_sinks
from engine.sinks import close as close_sinks
from engine.sinks.store import StoreSink
from engine.store.db import PROJECT, Store, default_path, opened
from engine.loop.learned import Lens
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer
from engine.build import data, playground
from engine.config.fields import PLAYGROUND_1D, PLAYGROUND_2D

DISK_WAIT_S = 60.0  # at the end of a run, how long its last writes wait for a full disk to have space


def environment(device) -> dict:
    """What produced the run, to reproduce it: the versions (Python, torch, torchvision, CUDA), the device,
    and the code's git commit (and whether the checkout had changes), stored as the event "environment"."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        torchvision = version("torchvision")  # importing torchvision to ask would cost a second at start
    except PackageNotFoundError:
        torchvision = None

    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=PROJECT, capture_output=True, text=True, timeout=5)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
            return None

    commit = git("rev-parse", "HEAD")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision,
        "cuda": torch.version.cuda,
        "device": str(device),
        "git": commit,
        "git_changes": None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def _snapshot(trainer, p, writer):
    """A periodic checkpoint: taken here, between two steps (a copy to the host), written by the Writer."""
    writer.put(checkpoint.snapshot(trainer.mode, trainer.step, p.cfg, trainer.batches))


def _edited(flush) -> bool:
    return any(kind == "layer_edit" for _, kind, _ in flush.events)


def _every(seconds: float, fn):
    """An on_flush callback that calls fn() at most every `seconds` (never for 0)."""
    last = time.monotonic()

    def maybe(_flush):
        nonlocal last
        if seconds and time.monotonic() - last >= seconds:
            last = time.monotonic()
            fn()

    return maybe


def _finish(store: Store, run_id: str, status: str, error: str | None):
    if error:
        store.add_event(run_id, None, "error", {"message": error})
    store.set_status(run_id, status, error)
    store.update_run(run_id, heartbeat=time.time())


def _until_stored(store: Store, write, *args, wait_s: float = DISK_WAIT_S, **kwargs):
    """write(store, *args), tried again while the disk is full, for at most wait_s; then one line on
    stderr (the run's log, or the terminal of a foreground run) instead of a traceback."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return write(store, *args, **kwargs)
        except DiskFull as e:
            if time.monotonic() > deadline:
                print(f"liveprop: {e}; the run's last status could not be stored", file=sys.stderr)
                return None
            time.sleep(0.5)


def _stop_on_signals(control: Control, ranks: Ranks | None):
    """SIGTERM or Ctrl-C asks for a graceful stop (final checkpoint); a second one interrupts. Under
    torchrun, a signal means torchrun is stopping the run's processes because one of them ended: a failure
    (viewers stop a run through the store, rank 0's control)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame):
        if ranks is not None:
            raise PeerFailed(f"torchrun stopped process {ranks.rank} of {ranks.world}: another one ended first")
        if getattr(handler, "asked", False):
            raise KeyboardInterrupt
        handler.asked = True
        control.put(None, "stop")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _trainer(p, row: dict, ranks: Ranks | None, control: Control) -> Trainer:
    """The run's trainer, at step 0 or at its checkpoint's step (runs.py resume_run, fork)."""
    resumed = checkpoint.load(row["checkpoint"]) if row["checkpoint"] else None
    mode, batches = build(p, ranks)
    start = checkpoint.restore(resumed, mode, batches, p.cfg) if resumed else 0
    return Trainer(
        mode,
        batches,
        Telemetry.from_config(p.cfg, p.device, ranks, lens(p, ranks)),
        row["total_steps"] if resumed else p.total_steps,
        start_step=start,
        on_divergence=p.cfg.on_divergence,
        control=control,
        pace=p.cfg.pace,
        ranks=ranks,
        fast=p.cfg.fast,
        plan=Plan(p.cfg.at, start, resumed=resumed is not None),
        rules=Rules(p.cfg.rule),
    )


def lens(p, ranks: Ranks | None = None) -> Lens | None:
    """What the net learned, measured at each snapshot by rank 0 (engine/loop/learned.py): dead units, the test
    split's loss and accuracy, a playground set's pictures over its training and test points."""
    if ranks is not None and not ranks.leader:
        return None
    cfg = p.cfg
    picture = "plane" if cfg.dataset in PLAYGROUND_2D else "line" if cfg.dataset in PLAYGROUND_1D else ""
    train = data.load(cfg)[0] if picture else None
    points = (train.x, train.y) if picture else None
    target = playground.TARGETS.get(cfg.dataset)
    test = data.held_out(cfg)
    if test is not None and cfg.arch == "torchvision":  # grayscale into a 3-channel network, as Batches does
        test = (test[0].expand(-1, 3, -1, -1), test[1])
    return Lens(p.device, getattr(torch, cfg.dtype), cfg.loss, cfg.batch_size, test, picture, points, target)


def _train(trainer: Trainer) -> None:
    """Train to the end. Several processes wait for each other first (rank 0 subscribes its sinks after build):
    from the first step on, a rank that waits longer than HANG_S for a peer fails the run."""
    if trainer.ranks is not None:
        trainer.ranks.barrier()
    trainer.run()


def follow(device: str) -> str:
    """A rank other than 0 under torchrun: the same training on its share of the batches, and the same
    decisions, which rank 0 sends (engine/loop/distributed.py); it writes nothing and never opens the store
    (on another machine there is none): rank 0 sends it the run's row. device: the run's, as configured."""
    ranks = Ranks.from_env(resolve_device(device)[0])
    _stop_on_signals(Control(), ranks)
    try:
        row = ranks.share(None)
        p = prepare(from_dict(row["config"]), memory=False)
        trainer = _trainer(p, row, ranks, Control())
        _train(trainer)
    except RuntimeError as e:  # a collective that broke: rank 0 reports the run, this one only its line
        raise PeerFailed(ranks.lost(e)) from None
    print(ranks.checksum(trainer.mode), file=sys.stderr)
    ranks.close()
    return trainer.outcome


def _reason(e: BaseException, ranks: Ranks | None) -> str:
    """The run's one-line reason for an exception nobody expected."""
    text = (str(e).strip().splitlines() or [""])[0]
    if "does not have a deterministic implementation" in text:  # torch.use_deterministic_algorithms refusing
        op = text.split(" does not have", 1)[0]
        return f"{op} has no deterministic implementation in torch, and the run has --deterministic; run it without"
    if ranks is not None and isinstance(e, RuntimeError):  # a collective broke: a peer died or hung
        return ranks.lost(e)
    return f"{type(e).__name__}: {text}"


def run_worker(run_id: str, store_path: str | None = None, callbacks: dict | None = None, device: str = "auto") -> str:
    """Train run_id to the end; returns its final status. device: the run's, which a rank other than 0 needs
    before rank 0 sends it the run's config."""
    if int(os.environ.get("RANK", "0")) > 0:
        return follow(device)
    store_path = str(store_path or default_path())
    store = Store(store_path)
    row = store.get_run(run_id)
    if row is None:
        raise RunStateError(f"no run {run_id!r} in {store_path}")
    remove_stale_tmp(Path(store_path).parent)  # half-written checkpoints of killed workers
    control = Control()
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ  # then its agent, the processes' parent, is the one to kill
    pid = os.getppid() if torchrun else os.getpid()
    store.update_run(run_id, status="running", pid=pid, started=time.time(), heartbeat=time.time())
    sink = StoreSink(store_path, run_id, control)
    status, error, extra, ranks = "failed", None, [], None
    try:
        p = prepare(from_dict(row["config"]), memory=False)  # checked when the run was created
        ranks = Ranks.from_env(p.device)  # None in one process
        if ranks is not None:
            ranks.share(row)  # the run as the others build it: they never open the store
        store.add_event(run_id, None, "environment", {**environment(p.device), "processes": ranks and ranks.world})
        files = RunFiles.of(run_id, store_path)
        row = forking.start_of(store, run_id, row)  # a fork between two checkpoints: the parent's steps replayed
        trainer = _trainer(p, row, ranks, control)
        total = row["total_steps"] if row["checkpoint"] else p.total_steps
        device = p.device_note + (f", {ranks.world} processes ({ranks.backend})" if ranks else "")
        store.update_run(run_id, device=device, total_steps=total, checkpoint=str(files.checkpoint))
        mode, batches = trainer.mode, trainer.batches
        writer = checkpoint.Writer(files)
        _snapshot(trainer, p, writer)  # where it starts: a fork from an early step needs one
        trainer.add_callback("on_flush", _every(p.cfg.checkpoint_seconds, lambda: _snapshot(trainer, p, writer)))
        # a paused run's weights as they are, and after a layer edit: for its landscape (engine/runs/landscape.py),
        # and for a fork or a resume from there
        trainer.add_callback("on_status", lambda status, _: status == "paused" and _snapshot(trainer, p, writer))
        trainer.add_callback("on_flush", lambda f: _edited(f) and _snapshot(trainer, p, writer))
        trainer.add_callback("on_checkpoint", lambda: _snapshot(trainer, p, writer))  # a scheduled one
        extra = attach_sinks(trainer, p.cfg, run_id, store_path)  # Visdom, TensorBoard; before the store sink
        trainer.add_callback("on_flush", sink.on_flush)  # so that their status events are stored
        trainer.add_callback("on_status", sink.on_status)
        for event, fns in (callbacks or {}).items():
            for fn in fns:
                trainer.add_callback(event, fn)
        _stop_on_signals(control, ranks)
        _train(trainer)
        writer.close()
        try:
            checkpoint.keep(files, checkpoint.snapshot(mode, trainer.step, p.cfg, batches))
        except OSError as e:  # a full disk: the series is stored, the weights are not
            raise StorageError(f"the checkpoint {files.checkpoint} could not be written: {e.strerror or e}") from None
        status = trainer.outcome
    except (LivepropError, PeerFailed) as e:
        error = str(e)
    except BaseException as e:  # KeyboardInterrupt included: the run is marked, then re-raised
        error = _reason(e, ranks)
        traceback.print_exc()
        if not isinstance(e, Exception):
            raise
    finally:
        if ranks is not None and error is None:
            print(ranks.checksum(trainer.mode), file=sys.stderr)
            ranks.close()
        sink.close()  # every flush is stored, or the disk stayed full (sink.error says which steps)
        error = error or sink.error
        if error:
            status = "failed"
        _until_stored(store, _finish, run_id, status, error)
        for kind, info in close_sinks(extra, status):  # bounded in time; never changes the outcome
            _until_stored(store, Store.add_event, run_id, None, kind, info)
        store.close()
    return status
