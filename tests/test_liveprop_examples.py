"""The examples a user starts from, run: examples/lecture_autograd.py is the lecture's autograd cell with three
added lines, and its run holds the cell's own losses; examples/digits_cnn.py, started as a script, is paused,
given a new rate and stopped from this process through the public API, and ends with exit 0 and the rate its
OneCycle schedule went on to; the dashboard's pages show a watched run."""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import subprocess
import sys
import time
from operator import itemgetter

import nbformat
import pytest
import torch
from conftest import REPO, wait_for
from nbclient import NotebookClient
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


def test_the_notebook_is_the_lecture_example_in_cells_shows_the_link_and_records_the_same_losses(store, monkeypatch):
    """examples/notebook.ipynb executed by a Jupyter kernel (nbclient, ipykernel) after torch.manual_seed(SEED): its
    code is the lecture example's, the watch cell's output holds the run's link, and the run holds the losses the
    example records after the same seed; the kernel's exit ends the run."""
    nb = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert code_of(code) == code_of((EXAMPLES / "lecture_autograd.py").read_text())
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first, nbformat.v4.new_code_cell(f"import torch\ntorch.manual_seed({SEED})"))
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    [row] = liveprop.list_runs(store)
    link = f"liveprop: run {row['id']} (lecture autograd) is watched: http://127.0.0.1:8501/?run={row['id']}\n"
    [watched] = [c for c in nb.cells if c.cell_type == "code" and "liveprop.watch(" in c.source]
    assert [(o["name"], o["text"]) for o in watched.outputs] == [("stderr", link)]
    wait_for(lambda: liveprop.get_run(row["id"], store)["status"] == "finished", what="the run ended with the kernel")
    example = lecture_run(store, monkeypatch)
    s = Store(store)
    losses = [[v for _, v in s.scalars(run_id, "loss")] for run_id in (row["id"], example)]
    s.close()
    assert len(losses[0]) == 5 and losses[0] == pytest.approx(losses[1], rel=1e-6)


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


def onecycle_rate(total_steps: int, steps: int, max_lr: float = 3e-3) -> float:
    """examples/digits_cnn.py's OneCycle rate after `steps` steps of `total_steps`, without a rate set."""
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=max_lr, total_steps=total_steps)
    for _ in range(steps):
        reference.step()
        schedule.step()
    return reference.param_groups[0]["lr"]


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
    final = float(re.search(r"final lr (\S+)", out).group(1))
    assert final == pytest.approx(onecycle_rate(row["total_steps"], steps) * change["new"] / change["old"], rel=1e-6)
    s = Store(store)
    assert len(s.scalars(run_id, "loss")) == steps
    assert s.hist_layers(run_id, "grad") == ["0.bias", "0.weight", "3.bias", "3.weight", "6.bias", "6.weight"]
    s.close()


def test_the_ddp_example_on_two_processes_records_one_process_losses_and_a_set_lr_reaches_both_ranks_at_once(store):
    """examples/ddp_watch.py under torchrun (2 ranks, gloo) beside the same script in one plain process: rank 0's
    record holds the one process's losses, to the step the rate was set at (after it the runs differ by design);
    the rate set from here reaches both ranks at the same step, the one the record's lr_change names."""
    script, env = EXAMPLES / "ddp_watch.py", {**os.environ, "LIVEPROP_STORE": store, "PYTHONPATH": str(REPO)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    procs = {
        name: subprocess.Popen([*first, script, "--name", name, *more], env=env, stdout=subprocess.PIPE, text=True)
        for name, first, more in (("one", [sys.executable], []), ("two", torchrun, ["--pace", "0.05"]))
    }

    def runs():
        return {r["name"]: r for r in liveprop.list_runs(store)}

    try:
        wait_for(lambda: runs().get("two", {}).get("step", 0) >= 10, 120, what="the two ranks' steps")
        assert wait_ack(liveprop.set_lr(runs()["two"]["id"], 0.01, store), store)["result"] == "ok"
        out = {name: p.communicate(timeout=120)[0] for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    assert [p.returncode for p in procs.values()] == [0, 0], out
    ranks = sorted(
        (json.loads(line) for line in out["two"].splitlines() if line.startswith("{")), key=itemgetter("rank")
    )
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    assert ranks[0]["lr"] == ranks[1]["lr"]  # the same rate at every step on both ranks
    changed = ranks[0]["lr"].index(0.01)  # the first step that ended with the new rate
    assert 10 <= changed < 59 and set(ranks[0]["lr"][:changed]) == {0.05} and set(ranks[0]["lr"][changed:]) == {0.01}
    s = Store(store)
    one, two = (s.get_run(runs()[name]["id"]) for name in ("one", "two"))
    assert (one["status"], two["status"], one["step"], two["step"]) == ("finished", "finished", 60, 60)
    [change] = s.events(two["id"], kind="lr_change")
    assert (change["step"], change["data"]) == (changed + 1, {"old": 0.05, "new": 0.01})  # the next step's update
    losses = {name: [v for _, v in s.scalars(row["id"], "loss")] for name, row in (("one", one), ("two", two))}
    s.close()
    assert len(losses["one"]) == len(losses["two"]) == 60
    same = changed + 2  # losses up to the first step the new rate updated
    assert losses["two"][:same] == pytest.approx(losses["one"][:same], abs=1e-6, rel=1e-6)
    assert losses["two"][same:] != pytest.approx(losses["one"][same:], abs=1e-6, rel=1e-6)
