"""The examples a user starts from, run: examples/lecture_autograd.py is the lecture's autograd cell with three
added lines, and its run holds the cell's own losses; examples/digits_cnn.py, started as a script, is paused,
given a new rate and stopped from this process through the public API, and ends with exit 0 and the rate its
OneCycle schedule went on to; the dashboard's pages show a watched run."""

from __future__ import annotations

import ast
import os
import re
import runpy
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, wait_for
from streamlit.testing.v1 import AppTest
from test_engine_lecture_seed import NOTES, SEED, lecture_cell

import liveprop
from engine import Store, wait_ack

EXAMPLES = REPO / "examples"
APP = str(REPO / "dashboard" / "app.py")
CPU_OR_CUDA = 'torch.device("cuda" if torch.cuda.is_available() else "cpu")'


def code_of(text: str) -> str:
    """The statements of a module, without its docstring and comments, as ast.dump writes them."""
    tree = ast.parse(text)
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant):
        tree.body = tree.body[1:]
    return ast.dump(tree)


def lecture_run(store: str, monkeypatch) -> str:
    """examples/lecture_autograd.py run in this process after torch.manual_seed(SEED); its run's id."""
    monkeypatch.setenv("LIVEPROP_STORE", store)
    torch.manual_seed(SEED)
    run = runpy.run_path(str(EXAMPLES / "lecture_autograd.py"), run_name="__main__")["run"]
    run.finish()  # a script's interpreter exit does it (atexit); this one goes on
    return run.id


@pytest.mark.skipif(not NOTES.is_file(), reason=f"the lecture notes are not at {NOTES}")
def test_the_lecture_example_is_the_autograd_cell_with_three_lines_and_records_its_losses(store, monkeypatch):
    cell = lecture_cell("autograd").replace("torch.device('cuda')", CPU_OR_CUDA)
    example = (EXAMPLES / "lecture_autograd.py").read_text()
    added = [line for line in example.splitlines() if line.endswith("# liveprop")]
    assert len(added) == 3
    assert code_of("\n".join(line for line in example.splitlines() if line not in added)) == code_of(cell)
    # the cell itself, run after the same seed, keeping each step's loss and w1's gradient norm
    losses, grads = [], []
    kept = re.sub(r"^( +)(loss = .*)$", r"\1\2\n\1losses.append(loss.item())", cell, flags=re.M)
    kept = re.sub(r"^( +)(loss\.backward\(\).*)$", r"\1\2\n\1grads.append(w1.grad.norm().item())", kept, flags=re.M)
    torch.manual_seed(SEED)
    exec(kept, {"losses": losses, "grads": grads})
    run_id = lecture_run(store, monkeypatch)
    s = Store(store)
    assert [v for _, v in s.scalars(run_id, "loss")] == losses and len(losses) == 5
    snapshots = s.scalars(run_id, "grad_norm/w1")  # read as autograd accumulated it, before the update
    assert snapshots and [v for _, v in snapshots] == pytest.approx([grads[t] for t, _ in snapshots], rel=1e-5)
    assert s.hist_layers(run_id, "grad") == ["w1", "w2"] and s.scalars(run_id, "update_ratio/w2")
    assert s.get_run(run_id)["status"] == "finished"
    s.close()


def test_the_dashboard_shows_a_watched_run(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with liveprop.watch(model, opt, name="mine", config={"width": 3}, telemetry_every=2) as run:
        for _ in range(6):
            loss = model(torch.ones(2, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run.id
    at.run()
    assert not at.exception, at.exception
    assert any("script" in m.value and "Sequential" in m.value for m in at.markdown)
    for view in ("Weights", "Gradients", "Per-layer", "Health", "Gradient check", "Code"):
        at.button_group(key="detail_view").set_value(view).run()
        assert not at.exception, (view, at.exception)
        assert at.get("plotly_chart") or view in ("Gradient check", "Code"), view
    assert any("watched with liveprop.watch" in c.value for c in at.caption)  # the Code view names the script
    at.switch_page("views/runs.py").run()
    assert not at.exception, at.exception
    row = at.dataframe[0].value.iloc[0]
    assert (row["run"], row["status"], row["mode"], row["arch"], row["optimizer"]) == (
        run.id,
        "finished",
        "script",
        "Sequential",
        "SGD",
    )
    # what needs the engine to own the program is greyed out, with the reason
    for key in ("runs_resume", "runs_again", "runs_fork"):
        button = at.button(key=key)
        assert button.disabled and "script" in (button.help or "") + " ".join(c.value for c in at.caption), key


def test_the_digits_cnn_is_paused_given_a_rate_and_stopped_from_another_process(store):
    proc = subprocess.Popen(
        [sys.executable, EXAMPLES / "digits_cnn.py", "--epochs", "100"],
        cwd=REPO,
        env={**os.environ, "LIVEPROP_STORE": store, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = wait_for(
            lambda: next((r["id"] for r in liveprop.list_runs(store) if r["pid"] == proc.pid), None), 60, what="run"
        )
        wait_for(lambda: liveprop.get_run(run_id, store)["step"] >= 3, 60, what="steps")
        assert wait_ack(liveprop.pause(run_id, store), store)["result"] == "ok"
        wait_for(lambda: liveprop.get_run(run_id, store)["status"] == "paused", what="paused")
        at = liveprop.get_run(run_id, store)["step"]
        time.sleep(1.0)
        assert liveprop.get_run(run_id, store)["step"] == at  # no step while paused
        assert wait_ack(liveprop.set_lr(run_id, 1e-4, store), store)["result"] == "ok"
        liveprop.resume(run_id, store)
        wait_for(lambda: liveprop.get_run(run_id, store)["step"] >= at + 3, 60, what="steps after resume")
        liveprop.stop(run_id, store)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    row = liveprop.get_run(run_id, store)
    assert row["status"] == "stopped" and row["config"]["config"]["epochs"] == 100
    steps = row["step"]
    # the OneCycle schedule went on from the rate set: its own rate after `steps` steps, times new / old
    [change] = [e["data"] for e in Store(store).events(run_id, kind="lr_change")]
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=3e-3, total_steps=row["total_steps"])
    for _ in range(steps):
        reference.step()
        schedule.step()
    final = float(re.search(r"final lr (\S+)", out).group(1))
    assert final == pytest.approx(reference.param_groups[0]["lr"] * change["new"] / change["old"], rel=1e-6)
    s = Store(store)
    assert len(s.scalars(run_id, "loss")) == steps
    assert s.hist_layers(run_id, "grad") == ["0.bias", "0.weight", "3.bias", "3.weight", "6.bias", "6.weight"]
    s.close()
