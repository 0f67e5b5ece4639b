"""The cost of what a playground run measures at each snapshot (engine/loop/learned.py: dead units, the test split,
the decision regions on a 128 x 128 grid and one tile per neuron), two ways, each measured interleaved
(bench/rows.py):

    steps/s       the moons run with the lens against the same run without it: real Trainers at the default
                  cadence (a snapshot about every telemetry_seconds, 1 s) writing to a real store on its own thread,
                  chunk by chunk. On a shared machine its rounds scatter far more than 2%.
    ms/snapshot   what the lens adds to the training thread's work for one snapshot: the snapshot and its flush,
                  with the lens and without, on the same net and batch; against 20 ms, 2% of the default second
                  between snapshots. The store's write of it runs on the sink's own thread (the steps/s row has it).

The run is the issue's: mode optim, adam, lr 0.01, arch mlp, dataset moons; hidden 16 besides, so that the tiles are
drawn too (the default 100 units a layer have none). Target: at most 2% slower.

    python bench/bench_playground.py [--device cpu|cuda] [--rounds 12] [--chunk-seconds 1.0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench_engine import chunk_for, timed
from rows import interleave, paired, single

from engine.build import assemble
from engine.config.fields import RunConfig
from engine.loop.control import Control
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer
from engine.runs import api as runs
from engine.runs.worker import lens
from engine.sinks import store as store_sink

SNAPSHOTS_A_CHUNK = 3  # a chunk lasts this many chunk seconds: at the default 1 s, about 3 snapshots
MOONS = dict(mode="optim", optimizer="adam", lr=0.01, arch="mlp", dataset="moons", hidden=16)


def runner(device, store_path, with_lens: bool):
    run_id, p = runs.create_run(RunConfig(**MOONS, device=device, steps=10**9), store_path)
    mode, batches = assemble.build(p)
    control = Control()
    tel = Telemetry.from_config(p.cfg, p.device, lens=lens(p) if with_lens else None)
    trainer = Trainer(mode, batches, tel, 10**9, control=control)
    sink = store_sink.StoreSink(store_path, run_id, control)
    trainer.add_callback("on_flush", sink.on_flush)
    return trainer, sink


def snapshot_row(device, rounds, reps: int = 20) -> dict:
    """ms the lens adds to a snapshot and its flush: `reps` snapshots a side per round, interleaved."""
    p = assemble.prepare(RunConfig(**MOONS, device=device, steps=10**9))
    mode, batches = assemble.build(p)
    x, y = next(batches)
    loss = mode.forward_backward(x, y)
    sides = [Telemetry.from_config(p.cfg, p.device, lens=lens(p) if w else None) for w in (False, True)]

    def timed_snapshots(tel):
        def run():
            t = time.perf_counter()
            for step in range(reps):
                tel.before_update(step, mode, x, y, mode.lr)
                tel.after_update(step, mode)
                tel.record_loss(step, loss)
                tel.flush()
            if device == "cuda":
                import torch

                torch.cuda.synchronize()
            return (time.perf_counter() - t) / reps * 1e3

        return run

    plain, seeing = (timed_snapshots(tel) for tel in sides)
    plain(), seeing()  # the points, sent once, and the first calls' warm-up
    base, lensed = interleave(plain, seeing, rounds)
    extra = [b - a for a, b in zip(base, lensed)]
    return single(
        "playground snapshot",
        "moons, hidden 16: ms the lens adds to a snapshot",
        "ms",
        "20 ms: 2% of the default 1 s between snapshots",
        20.0,
        extra,
        target={"ratio": 1.0},
        note=f"a snapshot without it: {sorted(base)[len(base) // 2]:.1f} ms (median); {reps} snapshots a side a round",
    )


def report_rows(device, rounds, chunk_s, store_path) -> list[dict]:
    (plain, plain_sink), (seeing, seeing_sink) = (runner(device, store_path, w) for w in (False, True))
    without = lambda steps: plain.run(max_steps=steps)  # noqa: E731
    with_lens = lambda steps: seeing.run(max_steps=steps)  # noqa: E731
    warm = max(200, int(2000 * chunk_s))  # steps past the start-up and the snapshot interval's first estimates
    without(warm), with_lens(warm)
    # a chunk holds several snapshots (one about every second), else some chunks have one and some none
    chunk = chunk_for(without, device, SNAPSHOTS_A_CHUNK * chunk_s)
    try:
        base, lensed = interleave(
            lambda: timed(without, chunk, device), lambda: timed(with_lens, chunk, device), rounds
        )
    finally:
        plain_sink.close()
        seeing_sink.close()
    return [
        paired(
            "playground snapshot",
            "moons, hidden 16: the lens on vs off",
            "steps/s",
            "the same run without the lens",
            base,
            lensed,
            target={"ratio": 0.98},
            note=f"{chunk} steps a chunk ({SNAPSHOTS_A_CHUNK * chunk_s:g} s); a snapshot about every 1 s",
        ),
        snapshot_row(device, rounds),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--chunk-seconds", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for row in report_rows(args.device, args.rounds, args.chunk_seconds, os.path.join(tmp, "b.db")):
            print(
                f"{row['name']}: {row['anchor_median']:.4g} -> {row['value_median']:.4g} {row['unit']}; "
                f"median of per-round ratios {row['median_ratio']:.3f}, ratio of medians {row['ratio_of_medians']:.3f} "
                f"(min {row['min_ratio']:.3f}, max {row['max_ratio']:.3f}, {row['rounds']} rounds)"
            )


if __name__ == "__main__":
    main()
