"""The TensorBoard sink: a real run's event files hold every loss, the telemetry scalars and the
weight and gradient histograms, read back with tensorboard's own EventAccumulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.loop.telemetry import Flush
from engine.sinks import last_status
from engine.sinks import tensorboard as tb
from engine.sinks.visdom import env_name
from engine.store.db import Store


def test_event_files_hold_the_scalars_and_histograms(small, store, run_inprocess, tmp_path, monkeypatch):
    monkeypatch.setattr(tb, "LOSS_POINTS_PER_S", 1e12)  # every step's loss, whatever the speed
    # init randn: the raw net with biases b1, b2 (the default, the lecture's init, has none)
    cfg = small(
        steps=60, flush_every=16, telemetry_every=10, hist_bins=8, tensorboard_dir=str(tmp_path / "tb"), init="randn"
    )
    run_id, status = run_inprocess(cfg, store)
    assert status == "finished"
    logdir = Path(cfg.tensorboard_dir) / env_name(cfg.name, run_id)
    acc = EventAccumulator(str(logdir), size_guidance={"histograms": 0, "scalars": 0})  # 0: keep all
    acc.Reload()

    s = Store(store)
    losses = s.scalars(run_id, "loss")
    ratio = s.scalars(run_id, "update_ratio/w1")
    weights = s.histograms(run_id, kind="weight", layer="w1")
    s.close()
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == list(range(60))
    assert [e.value for e in loss] == [float(np.float32(v)) for _, v in losses]
    assert [(e.step, round(e.value, 5)) for e in acc.Scalars("update_ratio/w1")] == [
        (st, round(v, 5)) for st, v in ratio
    ]
    tags = acc.Tags()
    assert {"lr", "grad_norm/w1", "weight_norm/w2"} <= set(tags["scalars"])
    assert {"weight/w1", "grad/w1", "weight/b2", "grad/b2"} <= set(tags["histograms"])

    hist = acc.Histograms("weight/w1")
    assert [h.step for h in hist] == [w["step"] for w in weights] == [0, 10, 20, 30, 40, 50, 59]
    last, stored = hist[-1].histogram_value, weights[-1]
    assert last.num == sum(stored["counts"]) == cfg.d_in * cfg.hidden
    assert list(last.bucket) == stored["counts"]
    assert list(last.bucket_limit) == stored["edges"][1:]
    assert last.min == stored["edges"][0]
    assert last_status(run_id, store)["tensorboard"]["status"] == "writing"


def test_a_fast_run_writes_the_mean_of_each_run_of_k_steps(tmp_path):
    sink = tb.TensorBoardSink(tmp_path)
    losses = [float(i % 10) for i in range(1000)]
    sink.on_flush(Flush(0, losses, scalars=[(999, "steps_per_s", 1000 * tb.LOSS_POINTS_PER_S / 10)]))
    assert sink.close() == "writing"
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(s, 4.5) for s in range(99, 1000, 100)]
