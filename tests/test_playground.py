"""The playground sets, the test split every classification set holds out, dead units and the pictures of what a
net learned (engine/build/playground.py, engine/build/data.py, engine/loop/learned.py), each checked against a
reference computed apart: the sets' own definitions, the model called directly, a plain count."""

import math

import pytest
import torch

from engine.build import assemble, data, playground
from engine.config.fields import PLAYGROUND, PLAYGROUND_1D, PLAYGROUND_2D, RunConfig
from engine.config.reasons import reasons
from engine.loop import learned
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer
from engine.runs.worker import lens
from engine.store.db import Store
from engine.store.schema import MAX_PICTURE_STEPS

MOONS = dict(mode="optim", optimizer="adam", lr=0.01, arch="mlp", dataset="moons", device="cpu")  # the CLI's run


def test_the_sets_are_drawn_from_the_seed_as_defined():
    for name in PLAYGROUND:
        x, y = playground.draw(name, 300, 0.0, seed=5)
        again, _ = playground.draw(name, 300, 0.0, seed=5)
        other, _ = playground.draw(name, 300, 0.0, seed=6)
        assert torch.equal(x, again) and not torch.equal(x, other), name
        if name in PLAYGROUND_2D:
            assert x.shape == (300, 2) and set(y.tolist()) == {0, 1}, name
        else:
            assert x.shape == y.shape == (300, 1) and torch.allclose(y, playground.TARGETS[name](x)), name
    x, y = playground.draw("xor", 300, 0.0, seed=1)
    assert torch.equal(y, (x[:, 0] * x[:, 1] < 0).long())  # xor: the quadrants' signs
    x, y = playground.draw("circles", 300, 0.0, seed=1)
    r = x.norm(dim=1)
    assert (r[y == 0] < 0.4).all() and (r[y == 1] > 0.65).all()  # a disc inside a ring
    noisy, _ = playground.draw("sine", 300, 0.3, seed=1)
    assert torch.equal(noisy, playground.draw("sine", 300, 0.0, seed=1)[0])  # noise moves the targets only


def test_every_classification_set_holds_out_a_disjoint_test_split(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i % 7},{i % 3}\n" for i in range(50)))
    for cfg in (
        RunConfig(dataset="digits", arch="mlp"),
        RunConfig(dataset="csv", csv_path=str(path), csv_target="label", arch="mlp"),
        RunConfig(dataset="spiral", arch="mlp", points=120),
    ):
        train, spec = data.load(cfg)
        x, y = data.held_out(cfg)
        n = len(train) + len(x)
        assert len(x) == int(n * cfg.holdout) and len(train) == spec.n, cfg.dataset
        rows = {tuple(r.tolist()) for r in train.x.reshape(len(train), -1)}
        assert not rows & {tuple(r.tolist()) for r in x.reshape(len(x), -1)}, cfg.dataset  # no sample in both
    assert data.held_out(RunConfig(dataset="digits", holdout=0.0)) is None
    assert data.held_out(RunConfig()) is None  # the lecture's random data: nothing held out


def test_the_config_judge_refuses_what_does_not_fit_a_playground_set():
    why = reasons(RunConfig(mode="optim", arch="cnn", dataset="moons"))
    assert why["arch"].blocks and "points in the plane, not images" in why["arch"].text
    assert reasons(RunConfig(mode="manual", dataset="moons", loss="sse"))["loss"].blocks
    assert reasons(RunConfig(mode="optim", dataset="sine", loss="cross_entropy"))["loss"].blocks
    moons = reasons(RunConfig(mode="manual", arch="mlp", dataset="moons", init="torch"))
    assert not any(r.blocks for r in moons.values())  # a raw mode learns a 2D set too
    assert moons["d_in"].greyed and moons["n_samples"].greyed and not moons.get("noise")
    assert reasons(RunConfig(dataset="digits"))["noise"].greyed
    assert reasons(RunConfig())["holdout"].greyed  # random data holds nothing out


def _built(**kw):
    p = assemble.prepare(RunConfig(**{**MOONS, "hidden": 8, "steps": 30, **kw}))
    mode, batches = assemble.build(p)
    return p, mode, batches


@pytest.mark.parametrize("mode_name", ["optim", "manual", "custom_function"])
def test_the_lens_numbers_match_the_model_called_directly(mode_name, sync_spy):
    """Every mode that fits a 2D set learns it: the raw modes on the MLP's weights, nn and optim on the module."""
    raw = {"mode": mode_name, "optimizer": "", "init": "torch", "lr": 0.05}
    p, mode, batches = _built(**(raw if mode_name != "optim" else {}))
    for _ in range(20):
        x, y = next(batches)
        mode.forward_backward(x, y)
        mode.update()
        mode.zero_grad()
    lz = lens(p)
    measured = lz.measure(mode, x)  # once for the points, which go out with the first snapshot only
    measured = lz.measure(mode, x)
    assert sync_spy.calls == []  # all on the device: nothing waits for it
    got = {(kind, layer): t for kind, layer, t in measured}
    # the weights, read apart: w1 (2, H), w2 (H, 2) in the lecture's layout for both modes
    w = {n: t for n, t in mode.named_params()}
    if mode.model is not None:
        w1, b1, w2, b2 = w["0.weight"].t(), w["0.bias"], w["2.weight"].t(), w["2.bias"]
    else:
        w1, b1, w2, b2 = w["w1"], w["b1"], w["w2"], w["b2"]

    def net(points):
        h = (points @ w1 + b1).clamp(min=0)
        return h, h @ w2 + b2

    side = torch.linspace(-1.5, 1.5, learned.GRID)
    grid = torch.cartesian_prod(side, side).flip(1)  # (x1, x2), x1 running fastest: row by row from the bottom
    _, logits = net(grid)
    regions = got["picture", "regions"]
    assert regions.shape == (learned.GRID**2,)
    torch.testing.assert_close(regions, torch.softmax(logits, 1)[:, 1], atol=1e-5, rtol=0)
    tile_side = torch.linspace(-1.5, 1.5, learned.TILE)
    tiles = torch.cartesian_prod(tile_side, tile_side).flip(1)
    torch.testing.assert_close(got["picture", "neurons/1"], net(tiles)[0].t(), atol=1e-5, rtol=0)
    h, _ = net(x)
    dead = sum(1 for j in range(h.shape[1]) if all(h[i, j] == 0 for i in range(h.shape[0]))) / h.shape[1]
    assert got["dead", "relu1"].item() == pytest.approx(dead)
    tx, ty = data.held_out(p.cfg)
    right = sum(int(a == b) for a, b in zip(net(tx)[1].argmax(1).tolist(), ty.tolist()))
    assert got["test", "accuracy"].item() == pytest.approx(right / len(ty))
    ce = -sum(math.log(torch.softmax(r, 0)[c].item()) for r, c in zip(net(tx)[1], ty.tolist())) / len(ty)
    assert got["test", "loss"].item() == pytest.approx(ce, rel=1e-4)


def test_a_dead_unit_is_one_zero_for_the_whole_batch():
    h = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])  # units 0 and 2 dead
    conv = torch.zeros(2, 3, 4, 4)
    conv[1, 2, 3, 3] = 1.0  # channel 2 lives at one position of one sample
    shares = learned.dead_shares([h, conv])
    assert [s.item() for s in shares] == [0.5, pytest.approx(2 / 3)]


def test_the_moons_run_reaches_95_percent_test_accuracy_within_1500_steps(store):
    """The CLI's moons run, at its defaults (hidden, noise, points): the test accuracy of the last snapshot."""
    p, mode, batches = _built(hidden=RunConfig.hidden, steps=1500, telemetry_every=250)
    accuracy = []
    tel = Telemetry.from_config(p.cfg, p.device, lens=lens(p))
    trainer = Trainer(mode, batches, tel, 1500)
    trainer.add_callback("on_flush", lambda f: accuracy.extend(v for _, k, v in f.scalars if k == "test/accuracy"))
    trainer.add_callback("on_flush", lambda f: Store(store).write_flush("r", f))
    trainer.run()
    assert accuracy[-1] >= 0.95, accuracy
    db = Store(store)
    steps = db.picture_steps("r", "regions")
    assert steps == list(range(0, 1500, 250)) + [1499]
    regions = db.pictures("r", steps[-1], "regions")["regions"]
    assert len(regions) == learned.GRID**2 and 0 <= min(regions) and max(regions) <= 1
    points = db.pictures("r", 0, "points/")
    assert len(points["points/train"]) == 3 * 400 and len(points["points/test"]) == 3 * 100  # x1, x2, label


def test_the_store_keeps_a_bounded_span_of_pictures(store):
    from engine.loop.telemetry import Flush

    db = Store(store)
    for step in range(3 * MAX_PICTURE_STEPS):
        pictures = [learned.Picture(step, "curve", [step, -1.5, math.nan])]
        pictures += [learned.Picture(step, "points/train", [0.0, 1.0])] if step == 0 else []
        db.write_flush("r", Flush(step, [], pictures=pictures))
    steps = db.picture_steps("r", "curve")
    assert len(steps) <= MAX_PICTURE_STEPS and steps[0] == 0 and steps[-1] == 3 * MAX_PICTURE_STEPS - 1
    last = db.pictures("r", steps[-1])["curve"]
    assert last[:2] == [steps[-1], -1.5] and math.isnan(last[2])  # half floats hold these exactly
    assert db.picture_steps("r", "points/train") == [0]


@pytest.mark.parametrize("name", PLAYGROUND_1D[:1])
def test_a_1d_set_draws_its_curve(name):
    p, mode, _ = _built(dataset=name, mode="nn", optimizer="", hidden=4)
    got = {(k, layer): t for k, layer, t in lens(p).measure(mode, torch.zeros(3, 1))}
    line = torch.linspace(-1.5, 1.5, learned.LINE)[:, None]
    torch.testing.assert_close(got["picture", "curve"], mode.model(line)[:, 0].detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(got["picture", "points/target"], torch.sin(math.pi * line[:, 0]))
    assert got["picture", "neurons/1"].shape == (4, learned.LINE) and ("test", "accuracy") not in got
