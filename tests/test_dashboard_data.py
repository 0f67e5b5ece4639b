"""The dashboard's read path (feed.py over the Store's readers) against a real store, and the sidebar rules."""

import math
import types

import numpy as np
import pytest

from dashboard import rules
from dashboard.feed import RunFeed
from engine import RunConfig
from engine.config.reasons import validate
from engine.errors import ConfigError
from engine.store.db import Store


def flush(first, losses, scalars=(), hists=(), events=()):
    return types.SimpleNamespace(
        pictures=[],
        first_step=first,
        losses=list(losses),
        scalars=list(scalars),
        hists=list(hists),
        events=list(events),
        last_step=first + len(losses) - 1,
    )


def hist(step, layer, kind="weight", nonfinite=0):
    return types.SimpleNamespace(
        step=step, layer=layer, kind=kind, edges=[0.0, 0.5, 1.0], counts=[1.0, 2.0], nonfinite=nonfinite
    )


@pytest.fixture
def db(store):
    s = Store(store)
    s.create_run("r", {"mode": "manual"}, total_steps=10_000)
    yield s
    s.close()


def test_distinct_keys_and_layers(db):
    db.write_flush(
        "r",
        flush(
            0,
            [1.0, 2.0],
            [(0, "grad_norm/w1", 1.0), (0, "lr", 0.1)],
            [hist(0, "w1"), hist(0, "w2"), hist(0, "w1", "grad")],
        ),
    )
    con = Store(db.path)
    assert con.scalar_keys("r") == ["grad_norm/w1", "loss", "lr"]
    assert con.hist_layers("r", "weight") == ["w1", "w2"]
    assert RunFeed("r").sync_layers(con, "weight") == ["w1", "w2"]
    assert con.hist_layers("r", "grad") == ["w1"]
    assert con.scalar_keys("other") == []


def test_bucket_rows_full_resolution_then_min_max(db):
    values = [float(i % 7) for i in range(10_000)]
    values[5_000] = None  # a non-finite loss, stored as NULL
    db.write_flush("r", flush(0, [math.nan if v is None else v for v in values]))
    con = Store(db.path)
    rows = con.bucketed("r", "loss", 20_000)
    assert len(rows) == 10_000 and rows[5_000][2] is None and rows[5_000][5] == 0
    rows = con.bucketed("r", "loss", 100)
    assert len(rows) <= 100
    assert sum(r[5] for r in rows) == 9_999  # every finite value counted once
    assert min(r[2] for r in rows) == 0 and max(r[3] for r in rows) == 6
    ranged = con.bucketed("r", "loss", 2000, 100, 199)  # a zoom: full resolution
    assert [r[0] for r in ranged] == list(range(100, 200))


def test_feed_reads_only_what_is_new(db):
    """Each sync reads the rows after its cursor: every step and every event once, none twice."""
    con = Store(db.path)
    f = RunFeed("r")

    def events_read():
        return [(e["step"], e["kind"], e["data"]) for e in f.sync_events(con)]

    db.write_flush("r", flush(0, range(1, 101)))
    x, y = f.sync(con, "loss").points()
    assert x.tolist() == list(range(100)) and y.tolist() == list(range(1, 101))
    db.write_flush("r", flush(100, range(101, 151), events=[(120, "lr_change", {"old": 1, "new": 2})]))
    b = f.sync(con, "loss")
    x, y = b.points()
    assert x.tolist() == list(range(150)) and y.tolist() == list(range(1, 151))
    assert b.n.tolist() == [1] * 150  # one value per step: a step read twice would make a bucket of 2
    assert f.sync(con, "loss") is b  # nothing new: the same buffer
    lr = (120, "lr_change", {"old": 1, "new": 2})
    assert events_read() == [lr] and events_read() == [lr]  # the second sync finds nothing new
    db.write_flush("r", flush(150, [1.0], events=[(150, "pause", {})]))
    assert events_read() == [lr, (150, "pause", {})]


def test_feed_is_bounded_on_a_long_run(db):
    with db.tx():
        db.db.executemany("INSERT INTO scalars VALUES ('r', 'loss', ?, ?)", ((i, float(i)) for i in range(100_000)))
    con = Store(db.path)
    f = RunFeed("r")
    b = f.sync(con, "loss", cap=1000)
    assert len(b) <= 1000 and b.steps_covered == 100_000
    x, y = b.points()
    assert len(x) <= 2000 and y.max() == 99_999 and y.min() == 0


def test_feed_histograms_and_nonfinite(db):
    for s in range(0, 50, 10):
        db.write_flush("r", flush(s, [1.0], hists=[hist(s, "w1", nonfinite=s // 10), hist(s, "w2")]))
    con = Store(db.path)
    f = RunFeed("r")
    buf = f.sync_hist(con, "weight", "w1", cap=3)
    assert len(buf.snaps) <= 3 and buf.snaps[-1]["step"] == 40
    nf = f.sync_nonfinite(con)["weight"]
    assert list(nf.s0) == [0, 10, 20, 30, 40] and list(nf.vmax) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# sidebar rules


def test_optimizer_disabled_outside_optim_with_reason():
    why = rules.disabled_reasons({"mode": "manual", "arch": "two_layer", "dataset": "random"})
    assert "by hand" in why["optimizer"] and "momentum" in why
    why = rules.disabled_reasons({"mode": "optim", "optimizer": "adam", "arch": "two_layer", "dataset": "random"})
    assert "optimizer" not in why and "beta1" not in why
    assert "adam has no momentum" in why["momentum"]
    assert "nesterov" in why


def test_config_from_values_drops_what_does_not_apply():
    cfg = rules.config_from_values(
        {
            "mode": "manual",
            "optimizer": "sgd",
            "momentum": 0.9,
            "arch": "two_layer",
            "depth": 7,
            "dataset": "random",
            "lr": 1e-5,
            "length": "steps",
            "steps": 30,
        }
    )
    assert cfg.optimizer == "" and cfg.momentum == 0.0 and cfg.depth == RunConfig().depth
    assert cfg.lr == 1e-5 and cfg.steps == 30
    validate(cfg)  # greyed-out values never reach the engine


def test_bad_combination_is_left_to_the_engine():
    cfg = rules.config_from_values(
        {"mode": "manual", "arch": "cnn", "dataset": "digits", "length": "steps", "steps": 5}
    )
    with pytest.raises(ConfigError, match="raw weight tensors"):
        validate(cfg)


def test_compare_configs_and_helpers():
    cfgs = rules.compare_configs(RunConfig(seed=7, lr=1e-5))
    assert [c.mode for c in cfgs] == ["manual", "autograd", "custom_function"]
    assert {c.seed for c in cfgs} == {7} and {c.lr for c in cfgs} == {1e-5}
    assert rules.nearest_lr_step(3e-4) in (2e-4, 5e-4) and rules.nearest_lr_step(-1) == rules.LR_STEPS[0]
    assert rules.eta_text(50, 100, 10) == "0:05" and rules.eta_text(0, 100, None) == "–"
    assert np.all(np.diff(rules.LR_STEPS) > 0) and rules.LR_STEPS[-1] == 1e6  # the lr field's bound


def test_visdom_target_goes_into_the_config():
    cfg = rules.with_visdom(RunConfig(), True, "127.0.0.1", 8097, "lecture")
    assert (cfg.visdom, cfg.visdom_env) == ("http://127.0.0.1:8097", "lecture")
    validate(cfg)
    assert rules.with_visdom(RunConfig(), False, "127.0.0.1", 8097).visdom == "off"


def test_long_runs_read_the_rollup_with_the_same_figures_as_the_rows(db):
    """Above BLOCK steps per bucket the loss overview comes from the store's rollup; every
    bucket's min, max, sum and count must equal numpy's over the raw values of its steps."""
    import numpy as np

    from engine.store.schema import BLOCK

    rng = np.random.default_rng(0)
    values = rng.standard_normal(100_000)
    values[77_777] = np.nan
    for start in range(0, len(values), 30_000):  # several flushes, blocks split between them
        db.write_flush("r", flush(start, values[start : start + 30_000].tolist()))
    con = Store(db.path)
    rows = con.bucketed("r", "loss", 100)
    assert 50 <= len(rows) <= 100
    assert rows[0][0] == 0 and rows[-1][1] == len(values) - 1
    for s0, s1, vmin, vmax, vsum, n in rows:
        chunk = values[s0 : s1 + 1]
        finite = chunk[np.isfinite(chunk)]
        assert (s1 - s0 + 1) % BLOCK == 0 or s1 == len(values) - 1
        assert n == len(finite)
        assert vmin == finite.min() and vmax == finite.max()
        assert vsum == pytest.approx(finite.sum(), abs=1e-9)


def test_per_k_series_use_the_rollup_only_when_it_keeps_the_resolution(db):
    """A sparse per-K series over a long run reads the rollup (figures equal to numpy over the
    raw points of each bucket); over a short run it keeps its own resolution."""
    import numpy as np

    rng = np.random.default_rng(1)
    steps = np.arange(0, 1_000_000, 100)
    values = rng.random(len(steps))
    for lo in range(0, len(steps), 2_500):
        db.write_flush(
            "long",
            flush(
                int(steps[lo]),
                [],
                scalars=[
                    (int(s), "grad_norm/w1", float(v)) for s, v in zip(steps[lo : lo + 2_500], values[lo : lo + 2_500])
                ],
            ),
        )
    con = Store(db.path)
    rows = con.bucketed("long", "grad_norm/w1", 4000)
    assert 2000 <= len(rows) <= 4000
    assert sum(r[5] for r in rows) == len(steps)  # every point counted once
    for s0, s1, vmin, vmax, vsum, n in rows[::97]:
        inside = values[(steps >= s0) & (steps <= s1)]
        assert n == len(inside) and vmin == inside.min() and vmax == inside.max()
        assert vsum == pytest.approx(inside.sum())

    short = [(s, "grad_norm/w1", float(s % 13)) for s in range(0, 8_000, 5)]  # 1,600 points
    db.write_flush("short", flush(0, [], scalars=short))
    rows = con.bucketed("short", "grad_norm/w1", 4000)
    assert sum(r[5] for r in rows) == 1_600 and len(rows) >= 1_600 // 2  # not 31 coarse blocks


def test_runs_page_rows_say_when_how_long_the_lr_now_and_a_recovery(db, tmp_path):
    from dashboard.pages_common import duration_text, run_rows, size_text

    ckpt = tmp_path / "r.pt"
    ckpt.write_bytes(b"x" * 3000)
    db.update_run("r", started=1000.0, ended=1000.0 + 3725, status="finished", checkpoint=str(ckpt))
    db.write_flush(
        "r", flush(0, [3.0, 2.0], events=[(1, "divergence", {"step": 12, "layer": "w1"}), (13, "resume", {})])
    )
    db.add_event("r", 20, "lr_change", {"old": 1e-3, "new": 2e-4})
    db.create_run("q", {"mode": "nn", "arch": "mlp", "lr": 1e-2}, total_steps=10)
    db.update_run("q", status="running", started=5000.0)
    rows = {row["run"]: row for row in run_rows(db.list_runs(), db, now=5061.0)}
    r, q = rows["r"], rows["q"]
    assert r["status"] == "finished (diverged at step 12, recovered)" and q["status"] == "running"
    assert (r["lr now"], q["lr now"]) == (2e-4, 1e-2)
    assert (r["duration"], q["duration"]) == ("1:02:05", "1:01")
    assert r["checkpoint"] == "2.9 KiB" and q["checkpoint"] == "–"
    assert r["final loss"] == 2.0 and q["final loss"] is None
    assert len(r["created"]) == len("2026-11-27 12:00")
    assert (duration_text(59), size_text(512), size_text(5 * 2**20)) == ("0:59", "512 B", "5.0 MiB")
    db.create_run("p", {"mode": "manual", "lr": 1e-6}, total_steps=10)
    db.set_status("p", "paused")
    db.add_event("p", 7, "divergence", {"step": 7, "layer": "w2"})
    [p] = [row for row in run_rows(db.list_runs(), db) if row["run"] == "p"]
    assert p["status"] == "paused (diverged at step 7)"  # not resumed: not recovered
