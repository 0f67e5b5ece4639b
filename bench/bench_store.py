"""Store throughput: rows/s a worker's store connection writes, alone and with a dashboard reader polling.

The writer is this process, writing flushes as the store sink does (Store.write_flush, one transaction
each) back to back: 2,000 losses (the default flush_every), a snapshot's per-layer scalars for four layers
and eight 64-bin histograms. Rows counted are scalar rows (losses and metrics). The reader is another
process reading as a live panel does, through dashboard.feed.RunFeed on one connection, every POLL_S
(the dashboard's fastest refresh, WARMING in dashboard/refresh.py): the keys, the loss, the per-layer norms,
one layer's histograms and the events. It is switched on and off between chunks (one process for the whole
bench, so its start-up is never timed), interleaved with the writer alone.

    python bench/bench_store.py [--rounds 12] [--chunk-seconds 1]
    python bench/bench_store.py --reader STORE RUN     (the reader; "on"/"off" lines on stdin)
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time

from rows import interleave, paired

from dashboard.feed import RunFeed  # numpy and engine only: no Streamlit
from engine.loop.telemetry import Flush, Hist
from engine.store.db import Store

POLL_S = 0.25
LOSSES = 2000  # a flush's losses: flush_every's default
LAYERS = ("w1", "b1", "w2", "b2")
METRICS = ("grad_norm", "weight_norm", "update_ratio", "gradcheck")


def make_flush(first: int) -> Flush:
    scalars = [(first, f"{m}/{layer}", 0.5) for layer in LAYERS for m in METRICS]
    scalars += [
        (first, "lr", 1e-6),
        (first + LOSSES - 1, "steps_per_s", 5000.0),
        (first + LOSSES - 1, "mem_bytes", 3e8),
    ]
    hists = [Hist(first, layer, kind, -1.0, 1.0, [3.0] * 64, 0) for layer in LAYERS for kind in ("weight", "grad")]
    return Flush(first, [1000.0 / (1 + first + i) for i in range(LOSSES)], scalars=scalars, hists=hists)


class Writer:
    def __init__(self, path: str, run_id: str):
        self.store, self.run_id, self.step = Store(path), run_id, 0

    def rows_per_s(self, seconds: float) -> float:
        rows, t0 = 0, time.perf_counter()
        while (dt := time.perf_counter() - t0) < seconds:
            f = make_flush(self.step)
            self.store.write_flush(self.run_id, f)
            self.step += LOSSES
            rows += len(f.losses) + len(f.scalars)
        return rows / dt


class Reader:
    """The reader process, switched on and off through its stdin."""

    def __init__(self, path: str, run_id: str):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--reader", path, run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.polls = []  # ms per poll, from the reader at each "off"
        assert self.proc.stdout.readline().strip() == "ready"

    def set(self, on: bool) -> None:
        self.proc.stdin.write("on\n" if on else "off\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        if not on:
            self.polls += [float(v) for v in answer[1:]]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def reader_main(path: str, run_id: str) -> None:
    db, feed, on, polls = Store(path), RunFeed(run_id), False, []
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S if on else None)
        if ready:
            line = sys.stdin.readline()
            if not line:
                return
            on = line.strip() == "on"
            print("on" if on else "off " + " ".join(f"{ms:.2f}" for ms in polls), flush=True)
            polls = []
            continue
        t = time.perf_counter()
        feed.sync_keys(db)
        feed.sync(db, "loss")
        feed.sync_prefix(db, "grad_norm/")
        feed.sync_hist(db, "weight", "w1")
        feed.sync_events(db)
        polls.append((time.perf_counter() - t) * 1000)


def report_rows(rounds: int, chunk_s: float, tmp: str) -> list[dict]:
    """The report's row "store rows/s with a reader polling" (bench/report.py), anchored on the writer alone."""
    path = os.path.join(tmp, "store-bench.db")
    s = Store(path)
    s.create_run("bench-store", {"mode": "manual"}, name="store bench", total_steps=10**9)
    s.close()
    writer, reader = Writer(path, "bench-store"), Reader(path, "bench-store")
    try:
        writer.rows_per_s(0.2)  # warm up

        def with_reader():
            reader.set(True)
            try:
                return writer.rows_per_s(chunk_s)
            finally:
                reader.set(False)

        alone, read = interleave(lambda: writer.rows_per_s(chunk_s), with_reader, rounds)
    finally:
        reader.close()
        writer.store.close()
    polls = reader.polls
    note = (
        f"Store.write_flush of {LOSSES} losses + {len(make_flush(0).scalars)} scalars + 8 histograms per "
        f"transaction; the reader (dashboard.feed.RunFeed, another process) polled every {POLL_S} s, "
        + (f"{len(polls)} polls, median {statistics.median(polls):.1f} ms each; " if polls else "no poll finished; ")
        + f"{writer.step:,} steps written in all"
    )
    return [paired("store", "rows/s with a reader polling", "rows/s", "writer alone", alone, read, note=note)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader", nargs=2, metavar=("STORE", "RUN"), help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--chunk-seconds", type=float, default=1.0)
    args = ap.parse_args()
    if args.reader:
        return reader_main(*args.reader)
    with tempfile.TemporaryDirectory() as tmp:
        (row,) = report_rows(args.rounds, args.chunk_seconds, tmp)
    print(
        f"writer alone {row['anchor_median']:,.0f} rows/s, with a reader {row['value_median']:,.0f} rows/s: "
        f"{row['median_ratio']:.3f} (median of ratios), {row['ratio_of_medians']:.3f} (ratio of medians)\n{row['note']}"
    )


if __name__ == "__main__":
    main()
