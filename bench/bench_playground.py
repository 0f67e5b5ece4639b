"""The cost of what a playground run measures at each snapshot (engine/loop/learned.py: dead units, the test split,
the decision regions on a 128 x 128 grid and one tile per neuron): steps/s of the moons run with the lens against
the same run without it. Both are real Trainers at the default cadence (a snapshot about every telemetry_seconds,
1 s) writing to a real store on its own thread, measured interleaved (bench/rows.py), chunk by chunk.

The run is the issue's: mode optim, adam, lr 0.01, arch mlp, dataset moons; hidden 16 besides, so that the tiles are
drawn too (the default 100 units a layer have none). Target: at most 2% slower.

    python bench/bench_playground.py [--device cpu|cuda] [--rounds 12] [--chunk-seconds 1.0]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from bench_engine import chunk_for, timed
from rows import interleave, paired

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


def report_rows(device, rounds, chunk_s, store_path) -> list[dict]:
    (plain, plain_sink), (seeing, seeing_sink) = (runner(device, store_path, w) for w in (False, True))
    without = lambda steps: plain.run(max_steps=steps)  # noqa: E731
    with_lens = lambda steps: seeing.run(max_steps=steps)  # noqa: E731
    without(2000), with_lens(2000)  # past the start-up and the automatic snapshot interval's first estimates
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
        )
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
                f"{row['name']}: {row['anchor_median']:.0f} -> {row['value_median']:.0f} steps/s; "
                f"median of per-round ratios {row['median_ratio']:.3f}, ratio of medians {row['ratio_of_medians']:.3f} "
                f"(min {row['min_ratio']:.3f}, max {row['max_ratio']:.3f}, {row['rounds']} rounds)"
            )


if __name__ == "__main__":
    main()
