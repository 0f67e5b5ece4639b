"""liveprop.watch on a user's own loop: steps/s of the loop with run.step(loss) against the same loop without it.

Two loops: the lecture's nn + Adam (N, D_in, H, D_out = 64, 1000, 100, 10, one batch) and the digits CNN of
examples/digits_cnn.py (fp32, AdamW and OneCycleLR, batches of 64 through its DataLoader). The watched side has
the default telemetry (a snapshot of every layer about every second, a flush every 0.5 s) and writes to a real
store on its own thread. The sides run interleaved in one process (bench/rows.py), each chunk with a fresh model
and optimizer: WARMUP_S untimed (the telemetry reaches its steady cadence once it has measured the rate), then a
fixed number of steps timed. The watched side's watch() and finish() fall outside the timing, so its store
thread runs beside its own chunks only: the bare side is a clean loop. Each loop has two rows: steps per second
of wall time, and steps per second of this process's CPU time (every thread's, the store thread's included),
which other programs on a shared machine disturb far less than the wall clock.

Beside them, how long watch() takes to return in a fresh process (its first call, the one a user waits for).

The peers, on the same two loops and the same steps per chunk: W&B offline (`wandb.watch(model, log="all")` and
`wandb.log` per step), trackio (`trackio.log` per step) and TensorBoard (`add_scalar` per step, `add_histogram`
of every weight and gradient every 100 steps). Each runs in a process of its own, started once there, its chunks
interleaved with bare chunks in that process (beside its background threads, which slow every loop of the
process: the row "vs its own bare"), and is set against a clean bare loop too, the chunks of a process that
imports no tracker (the row "vs a clean bare", its rounds paired by number). Wall time only: W&B's service is a
process of its own. The peers are the bench extra (pip install .[bench]), never needed to run Liveprop;
BENCH_PEERS_PYTHON names a Python that has them (default: this one), and a peer it lacks gives a row that says so.

    python bench/bench_watch.py [--device cpu|cuda] [--rounds 12] [--chunk-seconds 1.0]
    python bench/bench_watch.py --peer wandb|trackio|tensorboard|bare --loop NAME --steps N   (one peer's process)
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from rows import interleave, paired, single, unmeasured

import liveprop

REPO = Path(__file__).resolve().parent.parent
N, D_in, H, D_out = 64, 1000, 100, 10
WARMUP_S = 0.7  # untimed steps before each chunk: past the telemetry's first two flushes (0.5 s apart)
PEERS_PYTHON = os.environ.get("BENCH_PEERS_PYTHON", sys.executable)
HISTOGRAM_EVERY = 100  # TensorBoard's add_histogram, as a loop would call it
MISSING = 3  # a peer's process: its exit status when the peer is not installed


def lecture(device):
    """(model, optimizer, step): the lecture's nn + Adam cell, one batch."""
    x, y = torch.randn(N, D_in, device=device), torch.randn(N, D_out, device=device)
    model = torch.nn.Sequential(torch.nn.Linear(D_in, H), torch.nn.ReLU(), torch.nn.Linear(H, D_out)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        y_pred = model(x)
        loss = torch.nn.functional.mse_loss(y_pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return model, optimizer, step


def digits(device):
    """(model, optimizer, step): examples/digits_cnn.py's loop in fp32, its DataLoader cycled."""
    example = runpy.run_path(str(REPO / "examples" / "digits_cnn.py"))
    loader, _ = example["data"](64, device)
    batches = itertools.cycle(loader)
    model = example["model"]().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=10**9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        return loss

    return model, optimizer, step


LOOPS = {"lecture nn + Adam": lecture, "digits CNN": digits}


class Liveprop:
    """run = liveprop.watch(model, optimizer) and run.step(loss), writing to a real store."""

    def __init__(self, store: str):
        self.store, self.run = store, None

    def attach(self, model, optimizer):
        self.run = liveprop.watch(model, optimizer, name="bench", store=self.store)

    def log(self, step: int, loss, model):
        self.run.step(loss)

    def detach(self, model):
        self.run.finish()


class Wandb:
    """W&B offline: wandb.watch(model, log="all") (its default log_freq) and wandb.log per step."""

    def __init__(self, folder: str):
        os.environ.update(WANDB_MODE="offline", WANDB_DIR=folder, WANDB_SILENT="true")
        import wandb

        self.wandb, self.run = wandb, wandb.init(project="liveprop-bench", dir=folder)

    def attach(self, model, optimizer):
        self.wandb.watch(model, log="all")

    def log(self, step: int, loss, model):
        self.wandb.log({"loss": loss.item()})

    def detach(self, model):
        self.wandb.unwatch(model)

    def close(self):
        self.run.finish()


class Trackio:
    """trackio.log per step, to its local store (started once; its system-metrics thread runs throughout)."""

    def __init__(self, folder: str):
        os.environ["TRACKIO_DIR"] = folder
        import trackio

        self.trackio = trackio
        trackio.init(project="liveprop-bench")

    def attach(self, model, optimizer):
        pass

    def log(self, step: int, loss, model):
        self.trackio.log({"loss": loss.item()})

    def detach(self, model):
        pass

    def close(self):
        self.trackio.finish()


class TensorBoard:
    """SummaryWriter: add_scalar per step, add_histogram of every weight and gradient every HISTOGRAM_EVERY."""

    def __init__(self, folder: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(folder)

    def attach(self, model, optimizer):
        pass

    def log(self, step: int, loss, model):
        self.writer.add_scalar("loss", loss.item(), step)
        if step % HISTOGRAM_EVERY == 0:
            for name, p in model.named_parameters():
                self.writer.add_histogram(f"weight/{name}", p, step)
                if p.grad is not None:
                    self.writer.add_histogram(f"grad/{name}", p.grad, step)

    def detach(self, model):
        pass

    def close(self):
        self.writer.close()


PEERS = {"wandb": Wandb, "trackio": Trackio, "tensorboard": TensorBoard}
NEEDS = {"wandb": "wandb", "trackio": "trackio", "tensorboard": "tensorboard"}  # the package each one imports


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def side(loop, device, steps: int, tracker=None) -> tuple[float, float]:
    """One chunk's steps per second of wall time and of process CPU time: a fresh loop, WARMUP_S untimed, then
    `steps` timed; with the tracker's calls when one is given (attached before, detached after the timing)."""
    model, optimizer, step = loop(device)
    if tracker:
        tracker.attach(model, optimizer)
    n, end = 0, time.perf_counter() + WARMUP_S
    while time.perf_counter() < end:
        loss = step()
        if tracker:
            tracker.log(n, loss, model)
        n += 1
    _sync(device)
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = step()
        if tracker:
            tracker.log(n, loss, model)
        n += 1
    _sync(device)
    rates = steps / (time.perf_counter() - t), steps / (time.process_time() - cpu)
    if tracker:
        tracker.detach(model)
    return rates


def peer_process(peer: str, loop: str, device: str, steps: int, rounds: int) -> dict:
    """In a process of the peer's own: its chunks interleaved with bare ones ("bare": every round's bare chunk);
    peer "bare": bare chunks only, in a process that imports no tracker."""
    with tempfile.TemporaryDirectory() as tmp:
        bare = partial(side, LOOPS[loop], device, steps)
        if peer == "bare":
            return {"bare": [bare() for _ in range(rounds)], "tool": []}
        tracker = PEERS[peer](tmp)
        got_bare, got_tool = interleave(bare, partial(bare, tracker), rounds)
        tracker.close()
        return {"bare": got_bare, "tool": got_tool}


def run_peer(peer: str, loop: str, device: str, steps: int, rounds: int) -> dict | str:
    """peer_process in a fresh process of PEERS_PYTHON: its numbers, or why there are none."""
    argv = [PEERS_PYTHON, __file__, "--peer", peer, "--loop", loop, "--device", device]
    argv += ["--steps", str(steps), "--rounds", str(rounds)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)])}
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=1800)
    if p.returncode == MISSING:
        return f"{NEEDS[peer]} is not installed in {PEERS_PYTHON}: the bench extra (pip install .[bench])"
    if p.returncode != 0:
        return f"failed: {(p.stderr.strip().splitlines() or ['no output'])[-1]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def calibrate(loop, device, chunk_s: float) -> int:
    """Steps of the bare loop that take about chunk_s."""
    _, _, step = loop(device)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < min(chunk_s, 0.5):
        step()
        n += 1
    _sync(device)
    return max(10, int(n / (time.perf_counter() - t) * chunk_s))


def watch_seconds(samples: int, device: str, store: str) -> list[float]:
    """watch()'s return time in fresh processes (each its first call: lazy imports included)."""
    code = (
        "import time, torch, liveprop\n"
        f"m = torch.nn.Linear({D_in}, {H}).to('{device}')\n"
        "o = torch.optim.Adam(m.parameters())\n"
        "t = time.perf_counter(); r = liveprop.watch(m, o, name='bench watch()'); t = time.perf_counter() - t\n"
        "r.finish(); print(t)\n"
    )
    out = []
    for _ in range(samples):
        env = {**os.environ, "LIVEPROP_STORE": store}
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        out.append(float(p.stdout.strip().splitlines()[-1]))
    return out


def report_rows(device, rounds, chunk_s, store_path, loops=None, peers=tuple(PEERS)) -> list[dict]:
    """The report's rows "watch vs bare" (bench/report.py): per loop, liveprop's two and each peer's two; then
    watch()'s return time."""
    out = []
    for name in loops or LOOPS:
        loop = LOOPS[name]
        steps = calibrate(loop, device, chunk_s)
        note = f"{steps} steps per chunk after {WARMUP_S:g} s untimed; fresh loops"
        bare, watched = interleave(
            partial(side, loop, device, steps), partial(side, loop, device, steps, Liveprop(store_path)), rounds
        )
        for i, clock in enumerate(("wall", "CPU time")):
            out.append(
                paired(
                    "watch vs bare",
                    f"liveprop on {name} ({clock})",
                    "steps/s",
                    "the same loop without liveprop",
                    [b[i] for b in bare],
                    [w[i] for w in watched],
                    target={"ratio": 0.99},
                    note=f"{note}; default telemetry",
                )
            )
        clean = run_peer("bare", name, device, steps, rounds) if peers else None
        for peer in peers:
            got = run_peer(peer, name, device, steps, rounds)
            if isinstance(got, str) or isinstance(clean, str):
                out.append(unmeasured("watch vs bare", f"{peer} on {name}", got if isinstance(got, str) else clean))
                continue
            tool = [t[0] for t in got["tool"]]
            for anchor, values in (("its own bare", got["bare"]), ("a clean bare", clean["bare"])):
                out.append(
                    paired(
                        "watch vs bare",
                        f"{peer} on {name} vs {anchor} (wall)",
                        "steps/s",
                        f"the same loop without {peer}: "
                        + ("in its process" if anchor == "its own bare" else "in a process with no tracker"),
                        [b[0] for b in values],
                        tool,
                        note=f"{note}; its own process",
                    )
                )
    seconds = watch_seconds(min(rounds, 5), device, store_path)
    out.append(
        single(
            "watch vs bare",
            "watch() returns",
            "s",
            "200 ms",
            0.2,
            seconds,
            target={"ratio": 1.0},
            note="a fresh process each: its first call",
        )
    )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--chunk-seconds", type=float, default=1.0)
    ap.add_argument("--peer", choices=("bare", *PEERS), help="run one peer's process (report_rows starts it)")
    ap.add_argument("--loop", choices=list(LOOPS))
    ap.add_argument("--steps", type=int)
    args = ap.parse_args()
    if args.peer:
        if args.peer != "bare" and importlib.util.find_spec(NEEDS[args.peer]) is None:
            sys.exit(MISSING)
        print(json.dumps(peer_process(args.peer, args.loop, args.device, args.steps, args.rounds)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for r in report_rows(args.device, args.rounds, args.chunk_seconds, os.path.join(tmp, "watch.db")):
            if r["status"] != "measured":
                print(f"{r['name']:<48} {r['status']}: {r['note']}")
                continue
            print(
                f"{r['name']:<48} anchor {r['anchor_median']:10.4g}  value {r['value_median']:10.4g}  "
                f"median ratio {r['median_ratio']:.3f}  ratio of medians {r['ratio_of_medians']:.3f}  {r['verdict']}"
                f"  (per round {min(r['ratios']):.3f}-{max(r['ratios']):.3f})"
            )


if __name__ == "__main__":
    main()
