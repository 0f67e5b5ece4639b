"""One run on several processes (--nproc N on each of --nnodes M machines): torchrun starts them,
torch.distributed joins them, and each trains on its share of every batch.

    command(run_id, store, cfg)         the torchrun command line for a run's workers on one machine
    Ranks.from_env(device)              this process's place among them; None in a plain process
    Ranks.joined(device)                the same in a program that started its process group itself
      .start(loss)                      after the start-up, the groups that must answer within HANG_S
                                        (.group: the raw modes' hand-written all_reduce, engine/modes/raw.py)
      .data_parallel(model)             DistributedDataParallel around nn's and optim's model, on .group
                                        (both called by engine/build/assemble.py build)
      .shard(t)                         this rank's rows of a batch held whole (the lecture's full batch)
      .reduce_losses(t)                 a flush's losses as the whole batch has them (sum or mean of ranks)
      .from_leader(value)               rank 0's number on every rank (the measured rate, for snapshots)
      .post(word) / .take()             rank 0's decisions, applied at the same step by every rank
      .close()                          the groups torn down deliberately, by every rank

Only rank 0 writes: the store, checkpoints, Visdom and TensorBoard (engine/runs/worker.py). The other ranks read
the run's config from the store, and its checkpoint when it resumes, so several machines share the store's
folder (a network filesystem).

Lockstep. Every rank must take the same collective calls in the same order, so anything decided by time
or by a viewer is decided by rank 0 alone: a flush (its timer, or a non-finite loss seen) and the commands
(pause, resume, stop, set_lr). At each step boundary rank 0 posts a word, an asynchronous broadcast on a
gloo group on the CPU, and every rank applies it at the next boundary, one step later: the broadcast
overlaps a step and never holds the loop, and a CUDA run's stream never waits for it. Snapshots follow
from the step count and rank 0's rate, sent at each flush (engine/loop/telemetry.py), so they agree too.

Time. The start (imports, data, downloads) may take minutes: the first group waits START_S. From the first
step on, a rank that dies breaks its peers' next collective at once, and one that hangs makes them time out
after HANG_S: rank 0 then fails the run with the reason, and torchrun stops the rest.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

START_S = 600.0  # the start-up: imports, data, model, checkpoint; the slowest rank is waited for this long
HANG_S = 8.0  # from the first step: a rank silent this long has hung, and fails the run
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WORD = ("flush", "stop", "pause", "resume", "set_lr")  # what rank 0's word says, one float64 each


class PeerFailed(Exception):
    """Another rank died or hung: the run fails with this reason."""


def command(run_id: str, store: str, cfg: dict) -> list[str]:
    """torchrun for a run: nproc workers on this machine, `python -m engine worker RUN --store STORE` each.
    One machine: a standalone rendezvous on a free local port. Several: c10d at rdzv_endpoint, the run id
    naming the rendezvous, so that `python -m engine join RUN` on each machine finds the others; there
    the workers get the run's config from rank 0 (Ranks.share), and the store is never opened."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={cfg['nproc']}"]
    if cfg["nnodes"] > 1:
        argv += [f"--nnodes={cfg['nnodes']}", "--rdzv-backend=c10d", f"--rdzv-endpoint={cfg['rdzv_endpoint']}"]
        argv += [f"--rdzv-id={run_id}"]
    else:
        argv += ["--standalone"]
    worker = ["-m", "engine", "worker", run_id, "--device", cfg["device"]] + (["--store", store] if store else [])
    return argv + ["--monitor-interval=0.5", *worker]


class Ranks:
    def __init__(self, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device = rank, world, device
        self.leader = rank == 0  # the one that writes and decides
        self.group = None  # the training group, from start(): gloo on the CPU, nccl on CUDA
        self.words = None  # rank 0's decisions: gloo on the CPU
        self.mean = True  # a mean loss: the whole batch's is the mean of the ranks' (an sse: their sum)
        self._posted = None  # (work, buffer) of the word posted at the last boundary
        self.heard, self.patience = time.monotonic(), START_S  # every rank last heard from; how long one may hang

    @classmethod
    def from_env(cls, device: torch.device) -> Ranks | None:
        """Join the others, when torchrun started this process (it sets WORLD_SIZE and the rendezvous)."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "TORCHELASTIC_RUN_ID" not in os.environ:
            return None
        _die_with_parent()
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" is this rank's GPU from here on
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=START_S))
        return cls(dist.get_rank(), dist.get_world_size(), device)

    @classmethod
    def joined(cls, device: torch.device) -> Ranks | None:
        """This process's place in a process group its program started itself (a user's script under torchrun,
        watched by liveprop): rank 0's words on a gloo group of their own, the losses reduced on the program's
        group; None when there is no group of several. Every rank calls it (it makes a group)."""
        if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() <= 1:
            return None
        ranks = cls(dist.get_rank(), dist.get_world_size(), device)
        # a loop may take a while between two steps (an evaluation on rank 0): START_S, not HANG_S
        ranks.words = dist.new_group(backend="gloo", timeout=timedelta(seconds=START_S))
        return ranks

    @property
    def backend(self) -> str:
        return dist.get_backend()

    def barrier(self) -> None:
        dist.barrier()

    def share(self, obj):
        """Rank 0's obj on every rank (the run's row: the ranks on other machines never open the store)."""
        box = [obj if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def start(self, loss: str) -> None:
        """After every rank has built its model and data: the groups with the short timeout. A mean loss's
        whole-batch gradient is the mean of the ranks' (what DistributedDataParallel computes); the lecture's
        sum of squares needs their sum instead (data_parallel's _sum_hook, the raw modes' sum_over_ranks)."""
        dist.barrier()  # the start-up is over everywhere
        self.heard, self.patience = time.monotonic(), HANG_S
        hang = timedelta(seconds=HANG_S)
        self.group = dist.new_group(timeout=hang)
        self.words = dist.new_group(backend="gloo", timeout=hang)
        self.mean = loss != "sse"

    def data_parallel(self, model: torch.nn.Module) -> DistributedDataParallel:
        """nn's and optim's forward and backward through DistributedDataParallel on the training group (after
        start): it averages the gradients, or sums them for a sum-of-squares loss."""
        ids = [self.device.index or torch.cuda.current_device()] if self.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids, process_group=self.group)
        if not self.mean:
            net.register_comm_hook(self.group, _sum_hook)
        return net

    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """Rows rank, rank + world, ...: this rank's share of a batch, as engine/build/batches.py cuts them."""
        return t[self.rank :: self.world]

    def reduce_losses(self, losses: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(losses, group=self.group)  # on the device, before the flush's one copy to the host
        return losses / self.world if self.mean else losses

    def from_leader(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(t, 0, group=self.words)
        return t.item()

    # -- rank 0's words ----------------------------------------------------------------------

    def post(self, flush: bool = False, commands=()) -> None:
        """Rank 0: send its decisions. The others: get ready to receive them. Asynchronous."""
        word = torch.zeros(len(WORD), dtype=torch.float64)
        if self.leader:
            word[0], word[-1] = float(flush), math.nan
            for _, name, value in commands:
                if name == "set_lr":
                    word[-1] = float(value)
                elif name in WORD:
                    word[WORD.index(name)] = 1.0
        self._posted = (dist.broadcast(word, 0, group=self.words, async_op=True), word)

    def take(self) -> tuple[bool, list] | None:
        """The word posted at the last boundary, as (flush, commands); None when none was posted. It was
        posted a step ago, so waiting for it costs nothing unless a rank is behind (or dead: PeerFailed)."""
        if self._posted is None:
            return None
        (work, word), self._posted = self._posted, None
        try:
            work.wait()
        except RuntimeError as e:
            raise PeerFailed(self.lost(e)) from None
        self.heard = time.monotonic()
        w = word.tolist()
        commands = [(None, "set_lr", w[-1])] if not math.isnan(w[-1]) else []
        commands += [(None, name, None) for name, on in zip(WORD[1:-1], w[1:-1]) if on]
        return bool(w[0]), commands

    def lost(self, e: BaseException) -> str:
        """The one-line reason when a collective broke: a rank died (its connection closed at once) or hung
        (the collective waited out the group's timeout, so every rank has been silent that long)."""
        silent = time.monotonic() - self.heard
        how = "stopped answering" if silent >= self.patience else "died"
        text = (str(e).strip().splitlines() or [""])[0]
        return f"another process of the run {how} after {silent:.1f} s ({text[:200]}); see the run's log"

    def checksum(self, mode) -> str:
        """One line for the run's log at the end: every rank's weights agree, digit for digit, when every
        rank applied the same updates and commands."""
        total = sum(p.double().sum().item() for _, p in mode.named_params())
        return f"rank {self.rank} of {self.world}: weights sum to {total:.17g}"

    def close(self) -> None:
        """Every rank leaves together; a process group left to the interpreter's exit can abort it."""
        if dist.is_initialized():
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()


class Lockstep:
    """Rank 0's word, one step late, on every rank: rank 0 alone decides the flushes and takes the commands from its
    Control, and every rank applies them at the same step. The engine's trainer and a watched loop of a user's own
    (liveprop/run.py) both step through one."""

    def __init__(self, ranks: Ranks, control):
        self.ranks, self.control = ranks, control
        self._sent = []  # rank 0: the commands in the word it posted last, applied with their ids

    def take(self) -> tuple[bool, list]:
        """Rank 0's word of the step before: (flush now, [(id, command, value)]); rank 0 gets its own commands with
        their ids, so that they are acknowledged. (False, []) before the first word."""
        word = self.ranks.take()
        if word is None:
            return False, []
        flush, commands = word
        return flush, self._sent if self.ranks.leader else commands

    def post(self, flush_due: bool) -> None:
        """Rank 0's next word: a flush when it is due, and the commands its Control holds."""
        leader = self.ranks.leader
        self._sent = self.control.take() if leader and self.control.pending else []
        self.ranks.post(leader and flush_due, self._sent)

    def while_paused(self) -> list:
        """The commands that reach a paused loop, every half second: rank 0's, on every rank."""
        commands = []
        if self.ranks.leader:
            self.control.wait(0.5)
            commands = self.control.take()
        self.ranks.post(False, commands)
        _, received = self.ranks.take()
        return commands if self.ranks.leader else received


def commands_while_paused(control, lockstep: Lockstep | None) -> list:
    """The commands that reach a paused loop, every half second; on several processes (a lockstep), rank 0's on
    every rank. The engine's trainer and a watched loop both wait through here."""
    if lockstep is not None:
        return lockstep.while_paused()
    control.wait(0.5)
    return control.take()


def _die_with_parent() -> None:
    """torchrun starts each rank in a session of its own; if torchrun is killed (runs.kill, SIGKILL), its
    ranks must not go on alone: the kernel kills this process when its parent dies (Linux's prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: torchrun's own clean-up only
        return
    if os.getppid() == 1:  # the parent died before prctl: nobody is left to stop this process
        os._exit(1)


def _sum_hook(group, bucket):
    """DDP's all_reduce of a bucket of gradients, summed instead of averaged (a sum-of-squares loss)."""
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])
