"""The loss landscape (engine/tools/landscape.py, engine/runs/landscape.py), each number against a reference
computed apart: the line's loss at alpha 0 and 0.5 against the model's forward and loss written out, the filter
normalisation against a loop over the filters, the projection against a path built on the plane, the update
direction against autograd's gradient; then the job on an ended run and on a paused one, in float64 on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import numpy as np
import pytest
import torch
from conftest import wait_for
from test_dashboard_browser import dashboard  # noqa: F401 (the fixture: the dashboard on a temp store)

import engine
from dashboard.landscape_figures import line_figure, plane_figure
from engine.__main__ import main as cli_main
from engine.build.assemble import build, prepare
from engine.errors import ConfigError, RunStateError
from engine.loop import checkpoint
from engine.runs import landscape as job
from engine.store.files import RunFiles
from engine.tools import landscape as ls


def built(small, **kw):
    p = prepare(small(dtype="float64", dataset="teacher", bias=True, **kw))
    mode, batches = build(p)
    return mode, *next(batches)


def loss_at(mode, x, y, v):
    """The forward and the loss written out, on the weights v (the two-layer net with biases)."""
    if mode.model is None:
        y_pred = torch.addmm(v["b2"], torch.addmm(v["b1"], x, v["w1"]).clamp(min=0), v["w2"])
        return float((y_pred - y).pow(2).sum())
    h = torch.relu(x @ v["0.weight"].T + v["0.bias"])
    return float(torch.nn.functional.mse_loss(h @ v["2.weight"].T + v["2.bias"], y))


def test_the_line_at_0_is_the_models_loss_and_at_half_the_loss_of_the_weights_moved_half_way(small):
    for kw in (dict(mode="manual"), dict(mode="optim", optimizer="adam", lr=1e-2)):
        mode, x, y = built(small, **kw)
        w = {n: t.clone() for n, t in ls.weights_of(mode).items()}
        d = {n: torch.randn_like(t) for n, t in w.items()}

        got = ls.slice_1d(mode, x, y, d, [0.0, 0.5])
        assert got[0] == pytest.approx(loss_at(mode, x, y, w), rel=1e-12)
        assert got[1] == pytest.approx(loss_at(mode, x, y, {n: w[n] + 0.5 * d[n] for n in w}), rel=1e-12)
        assert all(torch.equal(t, w[n]) for n, t in ls.weights_of(mode).items())  # put back


def test_filter_normalisation_scales_each_filter_to_its_weights_filter_norm():
    g = torch.Generator().manual_seed(1)
    w = {"raw": torch.randn(5, 3, generator=g), "conv": torch.randn(4, 2, 3, 3, generator=g), "b": torch.ones(3)}
    d = {n: torch.randn(t.shape, generator=g) for n, t in w.items()}
    raw = ls.filter_normalise({"raw": d["raw"]}, {"raw": w["raw"]}, dim=1)["raw"]  # filters are columns
    for j in range(3):
        want = d["raw"][:, j] * w["raw"][:, j].norm() / d["raw"][:, j].norm()
        torch.testing.assert_close(raw[:, j], want)
    nn = ls.filter_normalise({k: d[k] for k in ("conv", "b")}, {k: w[k] for k in ("conv", "b")}, dim=0)
    for i in range(4):  # filters are the first dimension
        torch.testing.assert_close(nn["conv"][i], d["conv"][i] * w["conv"][i].norm() / d["conv"][i].norm())
    assert torch.equal(nn["b"], torch.zeros(3))  # a bias gets no direction (Li et al.'s "ignore biasbn")


def test_a_path_built_on_the_plane_projects_to_its_coefficients_and_an_orthogonal_step_reads_off_plane():
    g = torch.Generator().manual_seed(2)
    origin = {"w1": torch.randn(6, 4, generator=g, dtype=torch.float64), "b1": torch.randn(4, dtype=torch.float64)}
    d = {n: torch.randn(t.shape, generator=g, dtype=t.dtype) for n, t in origin.items()}
    e = {n: torch.randn(t.shape, generator=g, dtype=t.dtype) for n, t in origin.items()}
    known = [(0.5, -1.0), (0.0, 0.0), (-2.0, 0.25)]
    path = [{n: origin[n] + a * d[n] + b * e[n] for n in origin} for a, b in known]
    # a step orthogonal to the plane: the residual of a random vector after its least-squares fit to (d, e)
    flat = torch.stack([torch.cat([t.flatten() for t in v.values()]) for v in (d, e)], 1)
    r = torch.randn(flat.shape[0], generator=g, dtype=torch.float64)
    r -= flat @ torch.linalg.lstsq(flat, r).solution
    ortho = dict(zip(origin, torch.split(r, [t.numel() for t in origin.values()])))
    path.append({n: path[0][n] + ortho[n].view_as(origin[n]) for n in origin})
    coords, off = ls.project(path, origin, d, e)
    np.testing.assert_allclose(coords, [*known, known[0]], atol=1e-9)
    np.testing.assert_allclose(off[:3], 0.0, atol=1e-6)
    in_plane = sum(float((path[0][n] - origin[n]).pow(2).sum()) for n in origin)
    assert off[3] == pytest.approx((r.pow(2).sum().item() / (r.pow(2).sum().item() + in_plane)) ** 0.5, rel=1e-6)


def test_the_update_direction_is_the_runs_own_step_and_leaves_the_weights_and_the_optimizer_as_they_were(small):
    mode, x, y = built(small, mode="manual", lr=1e-3)
    w = {n: t.clone() for n, t in ls.weights_of(mode).items()}
    grads = mode.autograd_grads(x, y)  # autograd's gradients, computed apart
    step = ls.update_direction(mode, x, y)
    for n in w:
        torch.testing.assert_close(step[n], -1e-3 * grads[n])
        assert torch.equal(ls.weights_of(mode)[n], w[n])
    mode, x, y = built(small, mode="optim", optimizer="adam", lr=1e-2)
    mode.forward_backward(x, y), mode.update(), mode.zero_grad()  # Adam has moments now
    before = checkpoint._host(mode.state_dict())
    ls.update_direction(mode, x, y)
    after = checkpoint._host(mode.state_dict())
    assert all(torch.equal(before["model"][n], after["model"][n]) for n in before["model"])
    assert str(before["optimizer"]) == str(after["optimizer"])  # its step counts and moments


def test_the_job_on_an_ended_run_draws_the_line_the_plane_and_a_path_ending_at_the_origin(
    small, store, run_inprocess, capsys
):
    run_id, status = run_inprocess(small(mode="autograd", dtype="float64", dataset="teacher", steps=12), store)
    assert status == "finished"
    with pytest.raises(ConfigError):
        job.start(run_id, grid=2, store=store)
    assert cli_main(["--store", store, "landscape", run_id, "--grid", "99"]) == 2  # one line, nothing computed
    assert capsys.readouterr().err == "liveprop: error: the landscape's grid is 3 to 41 points a side, got 99\n"
    assert job.status(run_id, store) is None
    assert cli_main(["--store", store, "landscape", run_id, "--grid", "5"]) == 0  # the job, in the foreground
    assert capsys.readouterr().out.startswith(f"landscape of {run_id} at step 12: {ls.POINTS_1D + 25}/")
    done = job.run_job(run_id, grid=5, store=store)
    got = job.status(run_id, store)
    assert got["state"] == "done" and got["done"] == got["total"] == ls.POINTS_1D + 25 and got["eta"] is None
    r = got["result"]
    assert got["step"] == 12 and done["result"] == r
    # the line at alpha 0 and the plane's centre: the loss at the final weights on the batch of step 12
    ckpt = checkpoint.load(RunFiles.of(run_id, store).checkpoint)
    mode, x, y = built(small, mode="autograd", steps=12)  # the one full batch, every step's
    mode.load_weights(ckpt["model"])
    want = float(ls.batch_loss(mode, x, y))
    assert r["loss_1d"][r["alphas"].index(0.0)] == pytest.approx(want, rel=1e-12)
    assert r["loss_2d"][2][2] == pytest.approx(want, rel=1e-12) and r["rows_done"] == 5
    assert [p["step"] for p in r["path"]] == [0, 12]  # the start and the end, the checkpoints kept
    assert (r["path"][-1]["a"], r["path"][-1]["b"]) == pytest.approx((0.0, 0.0), abs=1e-12)
    # the charts draw exactly these numbers: the line, the plane as log10, the path and where the run is
    line, plane = line_figure(r, 12), plane_figure(r, 12)
    assert list(line.data[0].x) == r["alphas"] and list(line.data[0].y) == r["loss_1d"]
    np.testing.assert_allclose(plane.data[0].z, np.log10(np.array(r["loss_2d"])))
    assert list(plane.data[1].x) == [p["a"] for p in r["path"]] and list(plane.data[1].text) == ["step 0", "step 12"]
    assert (plane.data[2].x, plane.data[2].y) == ((0,), (0,))
    # the time limit: past it the plane stops (here at once), and the job says so
    cut = job.run_job(run_id, grid=5, store=store, time_limit=0.0)
    assert cut["state"] == "done" and not cut["complete"] and cut["result"]["rows_done"] == 0
    assert cut["result"]["loss_2d"] == [[None] * 5] * 5 and cut["done"] == ls.POINTS_1D
    assert engine.delete_run(run_id, store) and not RunFiles.of(run_id, store).landscape.exists()


def test_the_jobs_eta_is_the_time_per_point_so_far_times_the_points_left_and_a_dead_job_reads_failed(store):
    path = RunFiles.of("r", store).landscape
    path.parent.mkdir(parents=True)
    now = time.time()
    path.write_text(json.dumps({"state": "running", "pid": os.getpid(), "done": 10, "total": 40, "started": now - 6,
                                "updated": now}))  # fmt: skip
    assert job.status("r", store)["eta"] == pytest.approx(18.0)  # 6 s for 10 points: 30 left take 18 s
    gone = subprocess.Popen(["true"])
    gone.wait()
    path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {gone.pid}'))
    dead = job.status("r", store)
    assert dead["state"] == "failed" and dead["eta"] is None and str(gone.pid) in dead["error"]


def test_a_paused_runs_landscape_is_at_the_step_it_paused_and_a_running_run_gets_none(small, store):
    from engine.runs import api, worker

    run_id, _ = api.create_run(small(mode="manual", dataset="teacher", steps=10**6, pace=100.0), store)
    t = threading.Thread(target=worker.run_worker, args=(run_id, store), daemon=True)
    t.start()
    try:
        wait_for(lambda: (engine.get_run(run_id, store)["step"] or 0) > 5, what="steps")
        with pytest.raises(RunStateError, match="running"):
            job.start(run_id, store=store)
        engine.pause(run_id, store)
        wait_for(lambda: engine.get_run(run_id, store)["status"] == "paused", what="paused")
        done = job.run_job(run_id, grid=3, store=store)
        assert done["step"] == engine.get_run(run_id, store)["step"] > 5  # the weights it paused with
    finally:
        engine.stop(run_id, store)
        t.join(30)


def test_browser_a_paused_run_steps_edits_a_layer_and_draws_its_landscape(dashboard):  # noqa: F811 (the fixture)
    """In Chromium (tests/test_dashboard_browser.py's dashboard): a manual run paused; the Code tab's Step shows the
    lecture's tensors beside its lines; a layer scaled; the landscape drawn; resumed, the loss chart marks the edit."""
    import re

    from test_dashboard_browser import ARTIFACTS, CHROMIUM, TRACE_NAMES_JS, browser_page, status_is

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")

    cfg = engine.RunConfig(mode="manual", d_in=20, hidden=8, d_out=3, n_samples=16, batch_size=16, steps=10**6,
                           pace=50.0, telemetry_every=5, device="cpu", lr=1e-3)  # fmt: skip
    run_id = engine.launch(cfg, dashboard["store"])
    with browser_page(height=2200, failure="landscape_failure.png") as page:
        page.goto(f"{dashboard['url']}/?run={run_id}")
        status_is(page, "running")
        # past the first snapshot: the weights' histograms name the layers that Edit a layer offers
        page.get_by_text(re.compile(r"step [1-9][\d,]+ / 1,000,000")).wait_for()
        page.get_by_role("button", name="Pause", exact=True).click()
        status_is(page, "paused")
        page.get_by_text("Code", exact=True).first.click()
        page.get_by_role("button", name="Step", exact=True).click()
        page.get_by_text(re.compile(r"Step [\d,]+: each tensor")).wait_for()
        page.get_by_text(re.compile(r"# ← h: \(16, 8\) ‖·‖")).first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "step_through.png"), full_page=True)
        page.get_by_role("button", name="Apply", exact=True).click()  # scale w1 by 0.5, the defaults
        page.get_by_text("Scale w1 by 0.5: done").wait_for()
        page.get_by_role("button", name="Landscape", exact=True).click()
        page.get_by_text(re.compile("The path: the")).wait_for()
        assert page.locator(".js-plotly-plot").count() >= 3  # the loss, the line, the plane
        page.screenshot(path=str(ARTIFACTS / "landscape.png"), full_page=True)
        page.get_by_role("button", name="Resume", exact=True).click()
        status_is(page, "running")
        wait_for(lambda: "layer edit" in page.evaluate(TRACE_NAMES_JS), what="the edit's mark on the loss chart")
    engine.stop(run_id, dashboard["store"])
