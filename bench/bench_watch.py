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

    python bench/bench_watch.py [--device cpu|cuda] [--rounds 12] [--chunk-seconds 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import os
import runpy
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from rows import interleave, paired, single

import liveprop

REPO = Path(__file__).resolve().parent.parent
N, D_in, H, D_out = 64, 1000, 100, 10
WARMUP_S = 0.7  # untimed steps before each chunk: past the telemetry's first two flushes (0.5 s apart)


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


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def side(loop, device, steps: int, store: str | None) -> tuple[float, float]:
    """One chunk's steps per second of wall time and of process CPU time: a fresh loop, WARMUP_S untimed, then
    `steps` timed; watched when store is given."""
    model, optimizer, step = loop(device)
    run = liveprop.watch(model, optimizer, name="bench", store=store) if store else None
    end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < end:
        loss = step()
        if run:
            run.step(loss)
    _sync(device)
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = step()
        if run:
            run.step(loss)
    _sync(device)
    rates = steps / (time.perf_counter() - t), steps / (time.process_time() - cpu)
    if run:
        run.finish()
    return rates


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


def report_rows(device, rounds, chunk_s, store_path, loops=None) -> list[dict]:
    """The report's rows "watch vs bare" (bench/report.py): one per loop, and watch()'s return time."""
    out = []
    for name in loops or LOOPS:
        loop = LOOPS[name]
        steps = calibrate(loop, device, chunk_s)
        bare, watched = interleave(
            partial(side, loop, device, steps, None), partial(side, loop, device, steps, store_path), rounds
        )
        for i, clock in enumerate(("wall", "CPU time")):
            out.append(
                paired(
                    "watch vs bare",
                    f"{name} ({clock})",
                    "steps/s",
                    "the same loop without liveprop",
                    [b[i] for b in bare],
                    [w[i] for w in watched],
                    target={"ratio": 0.99},
                    note=f"{steps} steps per chunk after {WARMUP_S:g} s untimed; default telemetry; fresh loops",
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for r in report_rows(args.device, args.rounds, args.chunk_seconds, os.path.join(tmp, "watch.db")):
            print(
                f"{r['name']:<18} anchor {r['anchor_median']:10.4g}  value {r['value_median']:10.4g}  "
                f"median ratio {r['median_ratio']:.3f}  ratio of medians {r['ratio_of_medians']:.3f}  {r['verdict']}"
                f"  (per round {min(r['ratios']):.3f}-{max(r['ratios']):.3f})"
            )


if __name__ == "__main__":
    main()
