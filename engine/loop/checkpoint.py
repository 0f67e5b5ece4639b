"""Checkpoints: all a run needs to go on from where it was, so that a resumed run is the same run.

    snapshot(mode, step, cfg, batches)   on the training thread, between two steps: the weights and the
                                         optimizer state (mode.state_dict()), the learning rate, the step,
                                         every RNG state (torch, CUDA, numpy, Python) and the data's position,
                                         copied to the host
    write(path, snap)                    atomically: a temporary file, fsync, os.replace; a reader never
                                         sees half a file, and a killed writer leaves RUN.pt.tmp-PID, which
                                         engine/store/files.py removes
    keep(files, snap)                    write it as the run's checkpoint at its step and its latest
                                         (engine/store/files.py RunFiles: RUN.pt and RUN/STEP.pt)
    load(path)                           torch.load(weights_only=True): tensors and plain values, never code
    restore(ckpt, mode, batches, cfg)    puts it all back (a fork's cfg may change the lr or the optimizer)
    advance(mode, batches, start, stop)  the steps start .. stop - 1 again, as the trainer took them, with the
                                         run's recorded lr changes: a fork at a step between two checkpoints

Writer (below) keeps the periodic ones (every checkpoint_seconds, and one at the start) on its own
thread: the training thread only takes the snapshot, once a minute by default, at a flush.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import numpy as np
import torch

from engine.config.load import to_dict
from engine.errors import StorageError

VERSION = 1
HISTORY = 16  # earlier checkpoints kept per run (the newest, and the first), for a fork from step k


def _host(value):
    """A copy on the host of every tensor in a nested state (the device keeps training meanwhile)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_host(v) for v in value)
    return value


def rng_states() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": (has_gauss, gauss)},
        "python": random.getstate(),
    }


def set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], *n["gauss"]))
    random.setstate(s["python"])


def snapshot(mode, step: int, cfg, batches) -> dict:
    return {
        "version": VERSION,
        "step": step,
        "lr": float(mode.lr),
        "config": to_dict(cfg),
        "rng": rng_states(),
        "data": batches.position(),
        **_host(mode.state_dict()),
    }


def write(path: str | Path, snap: dict) -> None:
    """Atomically: a temporary file, fsync, os.replace. A failed write (a full disk, a kill) leaves no
    half file under the checkpoint's name."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(snap, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep(files, snap: dict) -> Path:
    """snap as the run's checkpoint at its step (RUN/STEP.pt), made the latest (RUN.pt, a hard link to
    it, swapped in atomically); of the earlier ones, the first and the HISTORY newest are kept."""
    at = files.history_at(snap["step"])
    write(at, snap)
    tmp = Path(f"{files.checkpoint}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.link(at, tmp)
    os.replace(tmp, files.checkpoint)
    for old in sorted(files.history.glob("*.pt"))[1:-HISTORY]:  # the first (the run's start) stays
        old.unlink(missing_ok=True)
    return at


def load(path: str | Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, truncated, or not a checkpoint of ours
        raise StorageError(f"cannot read the checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != VERSION or "rng" not in ckpt:
        raise StorageError(f"{path} is not a resumable checkpoint (it was written before resume existed)")
    return ckpt


def restore(ckpt: dict, mode, batches, cfg) -> int:
    """Weights, optimizer state, lr, RNG states and the data's position as they were; returns the step.

    cfg is the run's own config (a resume) or a fork's, which may change the training: a new optimizer
    starts with its own fresh state, a new lr or optimizer setting (betas, momentum, ...) replaces the
    checkpoint's; an lr the fork leaves alone is the one the run had then (set-lr included)."""
    mode.load_weights(ckpt["model"])
    was = ckpt["config"]
    if "optimizer" in ckpt and was["optimizer"] == cfg.optimizer:
        settings = [{k: v for k, v in g.items() if k != "params"} for g in mode.optimizer.param_groups]
        mode.optimizer.load_state_dict(ckpt["optimizer"])
        for group, setting in zip(mode.optimizer.param_groups, settings):
            group.update(setting)  # this config's betas, momentum, ...; its state (moments) from then
    mode.lr = ckpt["lr"] if cfg.lr == was["lr"] else cfg.lr
    set_rng_states(ckpt["rng"])
    if ckpt["data"] is not None:  # None: the one full batch, which has no position
        batches.seek(ckpt["data"])
    return ckpt["step"]


def advance(mode, batches, start: int, stop: int, lr_changes=()) -> None:
    """Take the steps start .. stop - 1 as engine/loop/trainer.py takes them (next batch, forward_backward,
    update, zero_grad), without telemetry, which changes nothing it trains: restored at `start`, the weights,
    optimizer state, RNG states and data position at `stop` are the run's own, bit for bit. lr_changes:
    (step, lr) as the run recorded them (its lr_change events, in order); each is set before its step, where
    the trainer applies a command (one before `start` is in the checkpoint's lr already; setting one at
    `start` again changes nothing)."""
    for step in range(start, stop):
        for at, lr in lr_changes:
            if at == step:
                mode.lr = float(lr)
        x, y = next(batches)
        mode.forward_backward(x, y)
        mode.update()
        mode.zero_grad()


class Writer:
    """Writes the latest snapshot on its own thread: one at a time, and a newer one replaces a waiting one."""

    def __init__(self, files):
        self.files, self.error = files, None
        self._pending, self._cond, self._closed = None, threading.Condition(), False
        self._thread = threading.Thread(target=self._loop, name="liveprop-checkpoint", daemon=True)
        self._thread.start()

    def put(self, snap: dict) -> None:
        with self._cond:
            self._pending = snap
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _loop(self):
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                snap, self._pending = self._pending, None
                if snap is None:
                    return
            try:
                keep(self.files, snap)
            except OSError as e:  # a full disk: the next one may fit; the final one is written by the worker
                self.error = f"the checkpoint of step {snap['step']} could not be written: {e.strerror or e}"
