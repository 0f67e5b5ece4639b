"""Runs: check a config, launch it as a detached worker, drive it, and notice when it died.

    prepare(cfg)      validate everything that can be checked before training (no side effects)
    launch(cfg)       write the run, start `python -m engine worker RUN` in a new session
    run_worker(...)   the worker's body: build, train, write telemetry through a store thread
    pause/resume/stop/set_lr, get_run/list_runs (which also mark dead workers failed)
"""
from __future__ import annotations

import dataclasses
import math
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from . import data as data_mod
from . import models, optimizers
from .config import RAW_MODES, ConfigError, RunConfig, from_dict, to_dict, validate
from .modes import MODES
from .sinks import attach as attach_sinks, close as close_sinks
from .store import ACTIVE, PROJECT, Store, default_path
from .telemetry import Telemetry
from .trainer import Control, Trainer

POLL_S = 0.25            # the store thread's heartbeat and control poll
STALE_S = 15.0           # no heartbeat for this long: the worker is presumed dead even if its pid lives


# ---------------------------------------------------------------------------------------------
# preparing

@dataclasses.dataclass
class Prepared:
    cfg: RunConfig               # resolved: no "auto" left
    spec: data_mod.DataSpec
    device: torch.device
    total_steps: int
    device_note: str


def resolve_device(name: str) -> tuple[torch.device, str]:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but no CUDA device is available here; use --device cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), "cpu" + (" (no CUDA device found)" if name == "auto" else "")
    return torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"


def prepare(cfg: RunConfig, memory: bool = True) -> Prepared:
    """Everything that can be checked without training. Raises ConfigError with one line."""
    cfg = validate(cfg)
    device, note = resolve_device(cfg.device)
    spec = data_mod.describe(cfg)
    if cfg.loss == "auto":
        cfg.loss = ("cross_entropy" if spec.task == "classification"
                    else "sse" if cfg.mode in RAW_MODES else "mse")
    if (cfg.loss == "cross_entropy") != (spec.task == "classification"):
        raise ConfigError(f"loss {cfg.loss!r} does not fit a {spec.task} dataset; "
                          f"use {'cross_entropy' if spec.task == 'classification' else 'sse or mse'}")
    if cfg.sampler == "balanced" and spec.task != "classification":   # checked here, not at the first batch
        raise ConfigError(f"sampler 'balanced' needs a classification dataset; {cfg.dataset!r} is {spec.task}")
    if cfg.steps:
        total = cfg.steps
    elif spec.n is None:
        raise ConfigError(f"dataset {cfg.dataset!r} is counted in steps: give --steps")
    else:
        total = cfg.epochs * data_mod.steps_per_epoch(spec.n, cfg)
    if memory:
        check_memory(cfg, spec, device)
    return Prepared(cfg, spec, device, total, note)


def estimate_bytes(cfg: RunConfig, spec) -> tuple[int, int]:
    """(bytes, parameters): weights, gradients and optimizer state, activations, in-memory data.
    The model is built on the meta device, so nothing is allocated to count it."""
    activations = 0

    def count(_module, _inp, out):
        nonlocal activations
        if isinstance(out, torch.Tensor):
            activations += out.numel()

    with torch.device("meta"):
        # shapes only: no weights file, and torch's own init (normal_ on meta imports torch._dynamo: 1.5 s)
        model = models.build(dataclasses.replace(cfg, pretrained="", init="torch"), spec.in_shape, spec.out_dim)
    if cfg.arch in models.FLAT_ARCHS:     # (N, width) per layer, pre- and post-activation, both halves
        activations = 4 * cfg.batch_size * sum(models.mlp_widths(cfg, spec.in_shape, spec.out_dim))
    else:                                 # convolutions: count every module's output in a meta forward
        shape = spec.in_shape
        if cfg.arch == "torchvision":     # grayscale batches reach it expanded to 3 channels (build)
            shape = (3, *shape[1:])
        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        with torch.device("meta"):
            model(torch.empty(cfg.batch_size, *shape))
        for h in hooks:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    states = {"adam": 2, "adamw": 2, "rmsprop": 2, "adagrad": 1, "sgd": 1 if cfg.momentum else 0}
    elt = 8 if cfg.dtype == "float64" else 4
    in_memory = spec.n if cfg.dataset in ("random", "teacher", "csv", "digits") else 0
    data_elems = in_memory * (math.prod(spec.in_shape) + spec.out_dim)
    total = elt * (params * (3 + states.get(cfg.optimizer, 0)) + 3 * activations + data_elems)
    return total, params


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def check_memory(cfg, spec, device):
    need, params = estimate_bytes(cfg, spec)
    have = available_bytes(device)
    if need > 0.9 * have:
        raise ConfigError(f"this configuration needs about {need / 2**30:.1f} GiB ({params:,} parameters) "
                          f"but {device.type} has {have / 2**30:.1f} GiB free; make the model or data smaller")


# ---------------------------------------------------------------------------------------------
# building a run

def build(p: Prepared):
    """(mode, batches) for a prepared config: seeds, data, model, the mode's parameters."""
    cfg, dtype = p.cfg, getattr(torch, p.cfg.dtype)
    torch.manual_seed(cfg.seed)
    dataset, spec = data_mod.load(cfg)
    model = models.build(cfg, spec.in_shape, spec.out_dim).to(p.device, dtype)
    if cfg.mode in RAW_MODES:     # w_i = Linear_i.weight.T, the lecture's (D_in, H) layout
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        params = {}
        for i, lin in enumerate(linears, start=1):
            params[f"w{i}"] = lin.weight.detach().t().contiguous()
            if lin.bias is not None:
                params[f"b{i}"] = lin.bias.detach().clone()
        mode = MODES[cfg.mode](params, cfg.loss, cfg.lr)
    elif cfg.mode == "nn":
        mode = MODES["nn"](model, cfg.loss, cfg.lr)
    else:
        trainable = [q for q in model.parameters() if q.requires_grad]
        mode = MODES["optim"](model, cfg.loss, optimizers.build(trainable, cfg))
    channels = 3 if cfg.arch == "torchvision" else None
    return mode, data_mod.batches(dataset, spec, cfg, p.device, dtype, channels)


def save_checkpoint(path: str, mode, cfg: RunConfig, step: int) -> None:
    """Atomically: write a temporary file, then os.replace, so a reader never sees half a file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save({**mode.state_dict(), "step": step, "config": to_dict(cfg)}, tmp)
        os.replace(tmp, path)
    except BaseException:           # a failed save (disk full, interrupted) leaves no half file behind
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# the worker

class StoreSink:
    """The worker's only store connection, on its own thread: writes flushes and status, beats the
    heartbeat, passes viewers' commands to the loop and writes their acknowledgements."""

    def __init__(self, store_path: str, run_id: str, control: Control):
        self.store_path, self.run_id, self.control = store_path, run_id, control
        self.q = queue.Queue(maxsize=256)         # bounded: the store is the record, so it blocks when full
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
            except Exception as e:          # never silent: the worker reports it as the run's error
                self.error = f"store sink: {type(e).__name__}: {e}"
        store.close()

    def _acks(self, store):
        while self.control.acks:
            cid, result = self.control.acks.pop(0)
            store.ack_control(cid, result)


def checkpoint_path(store_path: str, run_id: str) -> str:
    return str(Path(store_path).parent / "checkpoints" / f"{run_id}.pt")


def _stop_on_signals(control: Control):
    """SIGTERM or Ctrl-C asks for a graceful stop (final checkpoint); a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame):
        if getattr(handler, "asked", False):
            raise KeyboardInterrupt
        handler.asked = True
        control.put(None, "stop")
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_worker(run_id: str, store_path: str | None = None, callbacks: dict | None = None) -> str:
    """Train run_id to the end; returns its final status. Used by the detached worker and by
    `python -m engine train` in the foreground."""
    store_path = str(store_path or default_path())
    store = Store(store_path)
    row = store.get_run(run_id)
    if row is None:
        raise ConfigError(f"no run {run_id!r} in {store_path}")
    control = Control()
    store.update_run(run_id, status="running", pid=os.getpid(), started=time.time(), heartbeat=time.time())
    sink = StoreSink(store_path, run_id, control)
    status, error, extra = "failed", None, []
    try:
        p = prepare(from_dict(row["config"]), memory=False)     # checked when the run was created
        store.update_run(run_id, device=p.device_note, total_steps=p.total_steps)
        mode, batches = build(p)
        tel = Telemetry(p.cfg.telemetry_every, p.cfg.hist_bins, p.cfg.flush_every, p.cfg.flush_seconds,
                        p.device, p.cfg.batch_size, p.cfg.telemetry_seconds)
        trainer = Trainer(mode, batches, tel, p.total_steps, on_divergence=p.cfg.on_divergence, control=control)
        extra = attach_sinks(trainer, p.cfg, run_id, store_path)   # Visdom, TensorBoard; before the store sink
        trainer.add_callback("on_flush", sink.on_flush)           # so that their status events are stored
        trainer.add_callback("on_status", sink.on_status)
        for event, fns in (callbacks or {}).items():
            for fn in fns:
                trainer.add_callback(event, fn)
        _stop_on_signals(control)
        trainer.run()
        ckpt = checkpoint_path(store_path, run_id)
        save_checkpoint(ckpt, mode, p.cfg, trainer.step)
        store.update_run(run_id, checkpoint=ckpt)
        status = ("diverged" if trainer.divergence else "stopped" if trainer.stopped else "finished")
    except ConfigError as e:
        error = str(e)
    except BaseException as e:       # KeyboardInterrupt included: the run is marked, then re-raised
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
        if not isinstance(e, Exception):
            raise
    finally:
        sink.close()
        error = error or sink.error
        if error:
            status = "failed"
            store.add_event(run_id, None, "error", {"message": error})
        store.set_status(run_id, status, error)
        for kind, info in close_sinks(extra, status):   # bounded in time; never changes the outcome
            store.add_event(run_id, None, kind, info)
        store.update_run(run_id, heartbeat=time.time())
        store.close()
    return status


# ---------------------------------------------------------------------------------------------
# launching and controlling, from any process

def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def create_run(cfg: RunConfig, store_path: str | None = None) -> tuple[str, Prepared]:
    """Validate, then write the run as queued. Nothing is written when validation fails."""
    p = prepare(cfg)
    run_id = new_run_id()
    store = Store(store_path)
    try:
        store.create_run(run_id, to_dict(p.cfg), name=p.cfg.name, total_steps=p.total_steps)
    finally:
        store.close()
    return run_id, p


def launch(cfg: RunConfig, store: str | None = None) -> str:
    """Validate cfg, start a detached worker for it, and return its run id."""
    store_path = str(store or default_path())
    run_id, _ = create_run(cfg, store_path)
    spawn_worker(run_id, store_path)
    return run_id


def spawn_worker(run_id: str, store: str | None = None) -> int:
    """Start `python -m engine worker RUN` in its own session, so a viewer that reloads or dies
    does not take it down. Its output goes to logs/RUN.log beside the store."""
    store_path = str(store or default_path())
    log = Path(store_path).parent / "logs" / f"{run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(PROJECT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # OpenMP's default wait policy spins idle threads; beside a dashboard and a browser on a small
    # machine that cost a CPU run 7x. A policy already in the environment wins.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "worker", run_id, "--store", store_path],
                                cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    s = Store(store_path)
    s.update_run(run_id, pid=proc.pid, heartbeat=time.time())
    s.close()
    threading.Thread(target=proc.wait, daemon=True).start()   # reap it, so no zombie lingers
    return proc.pid


def _send(run_id: str, command: str, value=None, store: str | None = None) -> int:
    s = Store(store)
    try:
        run = _reap(s, s.get_run(run_id))
        if run is None:
            raise ConfigError(f"no run {run_id!r} in {s.path}")
        if run["status"] not in ACTIVE:
            raise ConfigError(f"run {run_id} is {run['status']}; it takes no more commands")
        return s.send_control(run_id, command, value)
    finally:
        s.close()


def wait_ack(control_id: int, store: str | None = None, timeout: float = 10.0) -> dict | None:
    s = Store(store)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            c = s.control(control_id)
            if c and c["acked"]:
                return c
            time.sleep(0.05)
        return None
    finally:
        s.close()


def pause(run_id, store=None):
    return _send(run_id, "pause", store=store)


def resume(run_id, store=None):
    return _send(run_id, "resume", store=store)


def stop(run_id, store=None):
    return _send(run_id, "stop", store=store)


def set_lr(run_id, lr: float, store=None):
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"learning rate must be a positive finite number, got {lr}")
    return _send(run_id, "set_lr", float(lr), store=store)


def kill(run_id, store=None):
    """Stop a worker that does not answer: SIGKILL its process group."""
    s = Store(store)
    try:
        run = s.get_run(run_id)
        if run and run["pid"] and run["status"] in ACTIVE:
            try:   # a launched worker leads its own process group; a foreground `train` does not
                if os.getpgid(run["pid"]) == run["pid"]:
                    os.killpg(run["pid"], signal.SIGKILL)
                else:
                    os.kill(run["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            s.set_status(run_id, "failed", "killed by the user")
    finally:
        s.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")   # a zombie is dead
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _reap(s: Store, run: dict | None) -> dict | None:
    """Mark an active run whose worker is gone as failed, with the reason."""
    if run is None or run["status"] not in ACTIVE:
        return run
    now = time.time()
    beat = run["heartbeat"] or run["created"]
    reason = None
    if run["pid"] and not _alive(run["pid"]):
        reason = f"worker process {run['pid']} died (last heartbeat {now - beat:.1f} s ago)"
    elif now - beat > STALE_S and (run["pid"] or now - run["created"] > STALE_S):
        reason = f"no heartbeat from the worker for {now - beat:.0f} s"
    if reason:
        s.set_status(run["id"], "failed", reason)
        s.add_event(run["id"], run["step"], "error", {"message": reason})
        run = s.get_run(run["id"])
    return run


def get_run(run_id: str, store: str | None = None) -> dict | None:
    s = Store(store)
    try:
        return _reap(s, s.get_run(run_id))
    finally:
        s.close()


def list_runs(store: str | None = None) -> list[dict]:
    s = Store(store)
    try:
        return [_reap(s, r) for r in s.list_runs()]
    finally:
        s.close()
