"""Visdom sink overhead: steps/s with the sink on against off, at the lecture's size.

Both sides are the engine as the worker runs it (bench_engine.engine_runner: mode manual, two_layer,
N, D_in, H, D_out = 64, 1000, 100, 10, default telemetry, a real SQLite store on its own thread);
the "on" side also streams to Visdom through a VisdomSink, with its status events. Two servers:
a healthy local one (engine.sinks.visdom.server on loopback) and a stalled one (a socket that accepts
connections and never answers, so every request runs into its timeout). The sides run
interleaved in one process, ABBA, chunk by chunk; the figure is the median per-round ratio.
Target: at least 0.97x for both. On a busy shared machine the ratios scatter, so the table also
gives a figure that noise barely touches: the CPU time of the sink's thread as a share of the
training thread's CPU time over the "on" chunks (the sink's Python work holds the GIL, so this
share is about what it can cost the loop).

    python bench/bench_visdom.py [--device cpu|cuda] [--rounds 40] [--chunk N] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time

import torch
from bench_engine import D_in, D_out, H, N, engine_runner, timed
from rows import paired

from engine.sinks import StatusEvents
from engine.sinks.visdom import VisdomSettings, VisdomSink
from engine.sinks.visdom import server as visdom_server


class StalledServer:
    """Accepts TCP connections on loopback and never answers."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self.conns:
            c.close()


def bench(url, device, rounds, chunk, store_path):
    total = (2 * rounds + 2) * chunk
    off, off_store = engine_runner(dict(mode="manual"), device, store_path, total)
    on, on_store = engine_runner(dict(mode="manual"), device, store_path, total)
    sink = VisdomSink(VisdomSettings(url=url, env="liveprop_bench"), "bench", {"mode": "manual"})
    on.add_callback("on_flush", StatusEvents("visdom", sink))
    on.add_callback("on_flush", sink.on_flush)
    sides = {"off": lambda n: off.run(max_steps=n), "on": lambda n: on.run(max_steps=n)}
    sides["off"](chunk // 4), sides["on"](chunk // 4)  # warm up both
    rates = {"off": [], "on": []}
    ratios = []
    sink_cpu0, train_cpu = thread_cpu(sink._thread.native_id), 0.0
    for r in range(rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        got = {}
        for k in order:
            t = time.thread_time()
            got[k] = timed(sides[k], chunk, device)
            train_cpu += (time.thread_time() - t) if k == "on" else 0.0
        for k in got:
            rates[k].append(got[k])
        ratios.append(got["on"] / got["off"])
    share = (thread_cpu(sink._thread.native_id) - sink_cpu0) / train_cpu
    status = sink.close()
    off_store.close()
    on_store.close()
    return rates, share, status


def report_rows(device, rounds, chunk, tmp, threads=1) -> list[dict]:
    """The report's rows "Visdom on vs off" (bench/report.py), healthy and stalled server, anchored on off."""
    chunk = chunk or (4000 if device == "cuda" else 300)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    server, stalled = visdom_server.start(port=0, env_path=os.path.join(tmp, "env")), StalledServer()
    out = []
    try:
        for name, url in (("healthy server", server.url), ("stalled server", stalled.url)):
            rates, share, status = bench(url, device, rounds, chunk, os.path.join(tmp, f"visdom-{name[:7]}.db"))
            note = (
                f"manual at the lecture size, {chunk} steps per chunk, torch on {threads} thread(s); the sink's "
                f"thread used {share:.1%} of the training thread's CPU time; sink status at the end: {status}"
            )
            out.append(
                paired(
                    "Visdom on vs off",
                    name,
                    "steps/s",
                    "engine, Visdom off",
                    rates["off"],
                    rates["on"],
                    target={"ratio": 0.97},
                    note=note,
                )
            )
    finally:
        server.stop()
        stalled.close()
        torch.set_num_threads(before)
    return out


def thread_cpu(tid: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a small shared machine two OpenMP threads stall "
        "whenever a neighbour takes a core, which swamps the comparison)",
    )
    ap.add_argument("--chunk", type=int, default=0, help="steps per timed chunk (default: 300 cpu, 4000 cuda)")
    args = ap.parse_args()
    chunk = args.chunk or (4000 if args.device == "cuda" else 300)
    torch.set_num_threads(args.threads)
    dev = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"Visdom sink on vs off: manual two_layer, N,D_in,H,D_out = {N},{D_in},{H},{D_out}, {dev}, "
        f"torch {torch.__version__}, {args.rounds} ABBA rounds of {chunk} steps"
    )
    print(
        f"{'server':<8} {'off steps/s':>11} {'on steps/s':>10} {'ratio':>7} {'sink CPU':>9}   "
        f"per-round ratios; sink status at the end"
    )
    with tempfile.TemporaryDirectory() as tmp:
        server, stalled = visdom_server.start(port=0, env_path=os.path.join(tmp, "env")), StalledServer()
        try:
            for name, url in (("healthy", server.url), ("stalled", stalled.url)):
                rates, share, status = bench(url, args.device, args.rounds, chunk, os.path.join(tmp, f"{name}.db"))
                ratios = [b / a for a, b in zip(rates["off"], rates["on"])]
                off, on, ratio = (
                    statistics.median(rates["off"]),
                    statistics.median(rates["on"]),
                    statistics.median(ratios),
                )
                print(
                    f"{name:<8} {off:>11,.0f} {on:>10,.0f} {ratio:>6.3f}x {share:>8.1%}   "
                    + " ".join(f"{r:.2f}" for r in ratios)
                    + f"; {status}",
                    flush=True,
                )
        finally:
            server.stop()
            stalled.close()


if __name__ == "__main__":
    main()
