"""The "What it learned" figures (dashboard/learned_figures.py), built from what a short playground run stored, and
checked against the model called directly at the figure's own coordinates."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import engine
from dashboard import learned_figures
from dashboard.series import Buckets
from engine.build import assemble
from engine.config.canvas import GRID, LINE, TILE
from engine.config.fields import RunConfig
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer
from engine.runs.worker import lens
from engine.store.db import Store

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
RUN = "20260101-000000-00c0de"  # a run id's shape


def _stored_run(store, **kw):
    """(model, db, last picture step): 40 steps of a small playground run, stored as the finished run RUN."""
    cfg = RunConfig(mode="optim", lr=0.02, arch="mlp", hidden=6, steps=40, telemetry_every=20, device="cpu", **kw)
    p = assemble.prepare(cfg)
    mode, batches = assemble.build(p)
    trainer = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device, lens=lens(p)), 40)
    db = Store(store)
    db.create_run(RUN, dataclasses.asdict(p.cfg), total_steps=40)
    trainer.add_callback("on_flush", lambda f: db.write_flush(RUN, f))
    trainer.run()
    db.set_status(RUN, "finished")
    return mode.model, db, db.picture_steps(RUN, "regions" if p.spec.task == "classification" else "curve")[-1]


def test_the_regions_figure_shows_the_models_own_predictions(store):
    model, db, step = _stored_run(store, dataset="moons")
    pictures = db.pictures(RUN, step)
    points = db.pictures(RUN, 0, "points/")
    fig = learned_figures.regions_figure(
        pictures["regions"], {"train": points["points/train"], "test": points["points/test"]}, 0.9, step
    )
    heat, train, test = fig.data
    z = np.asarray(heat.z)
    assert z.shape == (GRID, GRID) and "test accuracy 90.0%" in fig.layout.title.text
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, GRID, 50), rng.integers(0, GRID, 50)
    at = torch.tensor([[heat.x[c], heat.y[r]] for r, c in zip(rows, cols)], dtype=torch.float32)  # (x1, x2)
    with torch.no_grad():
        direct = torch.softmax(model(at), 1)[:, 1].numpy()
    np.testing.assert_allclose(z[rows, cols], direct, atol=2e-3)  # stored as half floats
    assert len(train.x) == 400 and len(test.x) == 100
    labels = np.asarray(points["points/train"]).reshape(-1, 3)[:, 2]
    assert list(train.marker.color) == [learned_figures.CLASS_COLOURS[int(c)] for c in labels]
    tiles = learned_figures.neurons_figure(pictures["neurons/1"], 6, True, 1)
    mosaic = np.asarray(tiles.data[0].z, dtype=float)
    assert mosaic.shape == (TILE + 2, 6 * (TILE + 2))  # one row of six tiles with their gaps
    first = mosaic[:TILE, :TILE]
    h = torch.relu(model[0](torch.cartesian_prod(*[torch.linspace(-1.5, 1.5, TILE)] * 2).flip(1)))[:, 0].detach()
    expected = (h / h.max()).reshape(TILE, TILE).numpy() if h.max() > 0 else np.zeros((TILE, TILE))
    np.testing.assert_allclose(first, expected, atol=2e-3)


def test_the_curve_figure_draws_the_learned_function_over_the_target(store):
    model, db, step = _stored_run(store, dataset="poly")
    pictures = db.pictures(RUN, step)
    points = db.pictures(RUN, 0, "points/")
    fig = learned_figures.curve_figure(pictures["curve"], {"train": points["points/train"]}, points["points/target"])
    target, train, learned = fig.data
    x = torch.tensor(learned.x, dtype=torch.float32)[:, None]
    assert len(x) == LINE and len(train.x) == 400
    with torch.no_grad():
        np.testing.assert_allclose(learned.y, model(x)[:, 0].numpy(), atol=2e-3)
    np.testing.assert_allclose(target.y, (x**3 - x / 2)[:, 0].numpy(), atol=1e-3)


def test_tiles_scale_each_unit_to_its_largest_and_leave_a_dead_one_blank():
    t = learned_figures.tiles([0, 2, 4, 0, 0, 0], 2)
    assert t.tolist() == [[0, 0.5, 1], [0, 0, 0]]
    fig = learned_figures.neurons_figure([0, 1, 2, 3, 0, 0, 0, 0], 2, False, 1)
    assert np.asarray(fig.data[0].z).shape == (2, 4)


def test_the_dead_units_figure_reads_as_a_share():
    series = Buckets.from_rows([(0, 0, 0.0, 0.0, 0.0, 1), (5, 5, 0.25, 0.25, 0.25, 1)])
    fig = learned_figures.dead_figure({"relu1": series})
    assert list(fig.data[0].y) == pytest.approx([0.0, 0.25]) and tuple(fig.layout.yaxis.range) == (-0.02, 1.02)


def test_the_train_page_suggests_settings_for_moons_and_shows_what_a_run_learned(store, monkeypatch):
    """The sidebar: moons picked, its suggestion put in place by the button, Start launches it. The Train page:
    the stored run's panel with its snapshot slider and tiles, and the Health tab with the dead units."""
    _stored_run(store, dataset="moons")
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.delenv("LIVEPROP_VISDOM_URL", raising=False)
    launched = []
    monkeypatch.setattr(engine, "launch", lambda cfg, store=None: launched.append(cfg) or RUN)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.sidebar.selectbox(key="cfg_dataset").set_value("moons").run()
    assert "Suggested for moons: mode optim, optimizer adam, lr 0.01" in " ".join(c.value for c in at.sidebar.caption)
    at.sidebar.button(key="btn_suggest").click().run()
    at.button(key="btn_start").click().run()
    assert not at.exception, at.exception
    (cfg,) = launched
    assert (cfg.dataset, cfg.mode, cfg.optimizer, cfg.lr, cfg.arch, cfg.steps) == (
        "moons",
        "optim",
        "adam",
        0.01,
        "mlp",
        1500,
    )
    assert "What it learned" in [s.value for s in at.main.subheader]
    assert at.select_slider(key="learned_at").options == ["0", "20", "39"]  # the stored snapshots
    assert at.toggle(key="learned_tiles").value  # six hidden units: one tile each
    at.button_group(key="detail_view").set_value("Health").run()
    assert not at.exception, at.exception
    assert any("output zero for the whole batch" in c.value for c in at.caption)
    charts = {e.proto.id.rsplit("-", 1)[-1]: e.proto.spec for e in at.get("plotly_chart")}
    assert '"name":"relu1"' in charts["dead"]  # the stored dead-unit series, drawn
    assert {"learned_picture", "learned_neurons/1", "learned_accuracy"} <= set(charts)
