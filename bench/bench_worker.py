"""The worker process: its memory over a long run, and the time from launch to the first stored loss point.

(a) Memory growth. A real run, launched through engine.runs.api.launch (a detached worker, its store sink,
    checkpoints every checkpoint_seconds), manual at the lecture's size at full speed (pace 0), for
    1,000,000 steps or `seconds`, whichever ends first. The worker's resident set size (VmRSS) is read
    every second; growth counts from the first sample after the warm-up (torch's allocator, SQLite's page
    cache and the first checkpoint settle there). A least-squares line through the samples after the warm-up
    projects the growth to 1,000,000 steps when fewer ran. Target: at most 50 MB.

(b) Start to first point. From engine.runs.api.launch(RunConfig()) (the dashboard's default run) to the first
    loss row in the store, polled every 5 ms: with standbys off (a new `python -m engine worker` process
    each time) and with the store's warm standby (engine/runs/standby.py), waited for before each launch.
    The anchor, measured in the same rounds, interleaved, is a bare `python -c "import torch"` with the
    worker's environment: the part of a cold start that no engine code can save.

    python bench/bench_worker.py [--device cpu|cuda] [--seconds 180] [--rounds 12]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rows import interleave, paired, single, unmeasured

from engine.config.fields import RunConfig
from engine.runs import api as runs
from engine.runs import standby
from engine.store.db import ACTIVE, Store, opened
from engine.store.files import StandbyFiles

MB = 1e6
TARGET_MB = 50.0
BIG = 1_000_000


@contextlib.contextmanager
def standbys(on: bool):
    """LIVEPROP_STANDBY for this process's launches (engine/runs/standby.py reads it at each call)."""
    old = os.environ.get("LIVEPROP_STANDBY")
    os.environ["LIVEPROP_STANDBY"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LIVEPROP_STANDBY")
        else:
            os.environ["LIVEPROP_STANDBY"] = old


def rss(pid: int) -> int | None:
    """Resident set size in bytes, from /proc (None once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def end(store: str, run_id: str, timeout: float = 30.0) -> None:
    """Stop the run if it is still active, and wait for its end (kill it past timeout)."""
    with contextlib.suppress(runs.ConfigError):
        runs.stop(run_id, store)
    deadline = time.time() + timeout
    while (runs.get_run(run_id, store) or {}).get("status") in ACTIVE and time.time() < deadline:
        time.sleep(0.1)
    runs.kill(run_id, store)


# ---------------------------------------------------------------------------------------------
# (a) memory growth


def memory_samples(device: str, seconds: float, tmp: str) -> list[tuple[float, int, int]]:
    """(seconds since the first step, step, RSS bytes) every second of a long run."""
    store = os.path.join(tmp, "memory", "liveprop.db")
    with standbys(False):
        run_id = runs.launch(RunConfig(mode="manual", steps=BIG, pace=0.0, device=device), store)
    samples = []
    try:
        with opened(store) as db:
            t0 = None
            while True:
                run = db.get_run(run_id)
                if run["status"] not in ACTIVE:
                    break
                size = rss(run["pid"]) if run["pid"] else None
                if run["step"] and size:
                    t0 = t0 or time.perf_counter()
                    samples.append((time.perf_counter() - t0, run["step"], size))
                    if samples[-1][0] >= seconds:
                        break
                time.sleep(1.0 if t0 else 0.05)
    finally:
        end(store, run_id)
    return samples


def memory_rows(device: str, seconds: float, tmp: str) -> list[dict]:
    group = "worker memory"
    samples = memory_samples(device, seconds, tmp)
    warm = [s for s in samples if s[0] >= min(10.0, seconds / 5)]  # after the warm-up
    if len(warm) < 2:
        return [unmeasured(group, "RSS growth", f"only {len(samples)} samples in {seconds:g} s", status="failed")]
    (t_a, step_a, rss_a), (t_b, step_b, rss_b) = warm[0], warm[-1]
    steps = step_b - step_a
    growth = [(r - rss_a) / MB for _, _, r in warm]
    xs, ys = [s for _, s, _ in warm], [r / MB for _, _, r in warm]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sum((x - mx) ** 2 for x in xs) or 1)  # MB per step
    rate = steps / (t_b - t_a) if t_b > t_a else float("nan")
    base = (
        f"manual at the lecture size, pace 0, a real detached worker; RSS {rss_a / MB:.0f} MB at step {step_a:,} "
        f"(after the warm-up), {rss_b / MB:.0f} MB at step {step_b:,}; {rate:,.0f} steps/s"
    )
    target = {"ratio": 1.0}
    anchor = f"target {TARGET_MB:g} MB"
    out = [
        single(
            group,
            f"RSS growth over {steps:,} steps (measured)",
            "MB",
            anchor,
            TARGET_MB,
            [growth[-1]],
            target=target,
            note=base + f"; {len(warm)} samples, growth ranged {min(growth):.1f} to {max(growth):.1f} MB",
        )
    ]
    if step_b < BIG:
        out.append(
            single(
                group,
                "RSS growth projected to 1,000,000 steps",
                "MB",
                anchor,
                TARGET_MB,
                [max(0.0, slope) * BIG],
                target=target,
                note=f"a least-squares line through the {len(warm)} samples: {slope * 1e5:.2f} MB per 100,000 steps",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# (b) start to first point


def import_torch_s() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], env=standby.worker_env(), check=True)
    return time.perf_counter() - t


def first_point_s(store: str, device: str, claimed: list) -> float:
    """Seconds from launch to the run's first loss row; the run is then left to finish (500 steps)."""
    with opened(store) as db:
        t = time.perf_counter()
        run_id = runs.launch(RunConfig(device=device), db.path)
        while db.last_value(run_id, "loss")[0] is None:
            if time.perf_counter() - t > 120:
                raise TimeoutError(f"no first point within 120 s: {runs.get_run(run_id, db.path)}")
            time.sleep(0.005)
        took = time.perf_counter() - t
        pid = db.get_run(run_id)["pid"]
        with contextlib.suppress(OSError):
            claimed.append(b"standby" in Path(f"/proc/{pid}/cmdline").read_bytes())
    end(store, run_id)
    return took


def standby_ready(store: str, timeout: float = 60.0) -> None:
    files = StandbyFiles.of(store)
    deadline = time.time() + timeout
    while not (files.socket and files.socket.exists()) and time.time() < deadline:
        time.sleep(0.05)


def start_rows(device: str, rounds: int, tmp: str) -> list[dict]:
    out = []
    for warm in (False, True):
        claimed = []
        torch_s, launch_s = start_pair(warm, device, rounds, os.path.join(tmp, f"start-{warm}", "liveprop.db"), claimed)
        name = "launch, warm standby" if warm else "launch, new worker process (standbys off)"
        note = f"the dashboard's default run (manual, lecture size) on {device}; " + (
            f"the standby took {sum(claimed)} of {len(claimed)} runs" if warm else "a plain worker each time"
        )
        anchor = 'python -c "import torch"'
        out.append(paired("start to first point", name, "s", anchor, torch_s, launch_s, better="lower", note=note))
    return out


def start_pair(warm: bool, device: str, rounds: int, store: str, claimed: list) -> tuple[list, list]:
    """(import torch s, launch to first point s) per round. With standbys, each side starts once the store's
    next standby has imported torch, off the clock, so that its import does not load the other side."""

    def settled(measure):
        if warm:
            standby_ready(store)
        return measure()

    with standbys(warm):
        if warm:
            Store(store).close()
            standby.warm(store)
        try:
            return interleave(
                lambda: settled(import_torch_s), lambda: settled(lambda: first_point_s(store, device, claimed)), rounds
            )
        finally:
            if warm:
                standby.retire(store)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for row in start_rows(args.device, args.rounds, tmp) + memory_rows(args.device, args.seconds, tmp):
            print(row)


if __name__ == "__main__":
    main()
