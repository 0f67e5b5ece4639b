"""liveprop.watch on loops of the test's own: what the store records against what the loop computed, the
gradients the snapshots read (unscaled under GradScaler, clipped), no host sync per step, the viewers' commands
(pause, resume, set lr with schedulers, stop) from another thread, the non-finite guard, how a script that
crashes, is killed or interrupted is marked, and a store that cannot be opened. The examples' own tests are in
tests/test_liveprop_examples.py."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from functools import partial

import pytest
import torch
from conftest import REPO, wait_for
from torch import nn

import liveprop
from engine import Store, wait_ack
from engine.loop.control import Control, Refused, Steering
from engine.loop.telemetry import Telemetry
from liveprop import watching


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=g), torch.randn(16, 2, generator=g)


def stored(store: str, run_id: str, key: str) -> list[tuple[int, float | None]]:
    s = Store(store)
    try:
        return s.scalars(run_id, key)
    finally:
        s.close()


def events(store: str, run_id: str, kind: str) -> list[dict]:
    s = Store(store)
    try:
        return s.events(run_id, kind=kind)
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# the record


def test_the_run_holds_the_losses_the_loop_computed_its_gradients_and_the_script(store, monkeypatch):
    monkeypatch.setattr(sys, "argv", [__file__, "--epochs", "3"])  # as `python this_file.py --epochs 3` has it
    model, (x, y) = mlp(), batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, norms = [], {}
    config = {"hidden": 5, "data": REPO / "data"}  # a Path: kept as its text
    with liveprop.watch(model, opt, name="mlp", config=config, store=store, telemetry_every=3) as run:
        for t in range(20):
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            norms[t] = {n: p.grad.norm().item() for n, p in model.named_parameters()}
            opt.step()
            losses.append(loss.item())
            run.step(loss)
    row = liveprop.get_run(run.id, store)
    assert (row["status"], row["step"], row["pid"], row["name"]) == ("finished", 20, os.getpid(), "mlp")
    c = row["config"]
    assert (c["mode"], c["arch"], c["optimizer"], c["lr"]) == ("script", "Sequential", "Adam", 1e-2)
    assert c["config"] == {"hidden": 5, "data": str(REPO / "data")} and c["argv"] == ["--epochs", "3"]
    assert c["script"] == str(os.path.realpath(__file__))
    assert [v for _, v in stored(store, run.id, "loss")] == losses  # every step, as the loop read it
    for layer in ("0.weight", "0.bias", "2.weight", "2.bias"):  # the snapshots, every 3 steps
        got = stored(store, run.id, f"grad_norm/{layer}")
        assert [s for s, _ in got] == list(range(0, 20, 3))
        assert [v for _, v in got] == pytest.approx([norms[s][layer] for s, _ in got], rel=1e-5)
        assert len(stored(store, run.id, f"update_ratio/{layer}")) == 7
    s = Store(store)
    assert (
        s.hist_layers(run.id, "grad") == s.hist_layers(run.id, "weight") == ["0.bias", "0.weight", "2.bias", "2.weight"]
    )
    s.close()


def test_the_snapshot_reads_the_gradients_unscaled_under_gradscaler_and_clipped(store):
    """What optimizer.step() is given: GradScaler unscales before it, clipping comes before it."""
    model, (x, y) = mlp(), batch()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    clipped, scaled = {}, {}
    with liveprop.watch(model, opt, store=store, telemetry_every=2) as run:
        for t in range(6):
            loss = ((model(x) - y) ** 2).sum()
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaled[t] = {n: p.grad.norm().item() for n, p in model.named_parameters()}
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            clipped[t] = {n: p.grad.norm().item() for n, p in model.named_parameters()}
            scaler.step(opt)
            scaler.update()
            run.step(loss)
    for layer in clipped[0]:
        got = dict(stored(store, run.id, f"grad_norm/{layer}"))
        assert sorted(got) == [0, 2, 4]
        assert [got[t] for t in got] == pytest.approx([clipped[t][layer] for t in got], rel=1e-5)
        assert all(scaled[t][layer] > 100 * got[t] for t in got)  # what a backward hook would have seen
    total = sum(v**2 for v in clipped[0].values()) ** 0.5
    assert total == pytest.approx(0.1, rel=1e-4)  # clipping was active


def test_run_step_makes_no_host_sync(store, sync_spy, monkeypatch):
    """The losses kept as device tensors, as on CUDA: only the flush, the snapshots and the read of the finite
    flag's host copy (not a wait on CUDA, engine/loop/guard.py) may sync. On the CPU the telemetry keeps each
    loss as a float, a read that waits for nothing there: the spy sees that one, which shows it sees
    what liveprop calls."""
    monkeypatch.setattr(watching, "Telemetry", partial(Telemetry, losses_on_host=False))
    model, (x, y) = mlp(), batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run = liveprop.watch(model, opt, store=store, telemetry_every=5, flush_seconds=1e9)
    for obj, name in (
        (run, "_flush"),
        (run.tel, "before_update"),
        (run.tel, "after_update"),
        (run.tel.watch, "_read_flag"),
    ):
        real = getattr(obj, name)

        def allowed(*args, _real=real, **kwargs):
            with sync_spy.allowed():
                return _real(*args, **kwargs)

        monkeypatch.setattr(obj, name, allowed)
    losses = []
    for _ in range(12):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss)
        with sync_spy.allowed():
            losses.append(loss.item())
    assert sync_spy.calls == [], f"host syncs in run.step: {sync_spy.calls}"
    with sync_spy.allowed():
        run.finish()
    assert [v for _, v in stored(store, run.id, "loss")] == losses
    # the CPU's own telemetry reads each loss as a float: the spy catches it
    monkeypatch.undo()
    spy_again = type(sync_spy)(monkeypatch)
    with liveprop.watch(model, opt, store=store, flush_seconds=1e9) as run:
        with spy_again.allowed():
            loss = ((model(x) - y) ** 2).mean()
        run.step(loss)
        run.step(loss)
    read = [where for what, where in spy_again.calls if what == "__float__"]
    assert len(read) == 2 and all(where.startswith("engine/loop/telemetry.py:") for where in read), spy_again.calls


def test_a_store_that_cannot_be_opened_costs_one_line_and_training_goes_on(tmp_path, capfd):
    model, (x, y) = mlp(), batch()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with liveprop.watch(model, opt, store=str(tmp_path), visdom="http://127.0.0.1:9") as run:  # a folder, no Visdom
        for _ in range(10):
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss)
            time.sleep(0.05)
    err = capfd.readouterr().err.splitlines()
    assert run.steps == 10 and run.status == "finished"
    assert [line for line in err if "run store" in line] == [
        f"liveprop: the run store {tmp_path} is a folder; give a file, e.g. {tmp_path / 'liveprop.db'}; "
        "training goes on without a record"
    ]
    assert [line for line in err if "visdom" in line] and len(err) == 2, err  # Visdom gone: one line too


FRONT_END = ("streamlit", "plotly")  # the dashboard's; a script that watches its loop never needs them

WATCHED = """
import sys, torch, liveprop
run = liveprop.watch(torch.nn.Linear(3, 1), torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1))
run.step(1.0)
run.finish()
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
"""


def test_watch_imports_neither_streamlit_nor_plotly(store):
    """In a fresh interpreter, as a user's script starts (the time watch takes to return is bench/bench_watch.py's)."""
    env = {**os.environ, "LIVEPROP_STORE": store, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", WATCHED, *FRONT_END], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert "is watched" in out.stderr  # the run was made


# ---------------------------------------------------------------------------------------------
# steering


def test_steering_applies_each_command_records_its_event_and_acknowledges_it():
    """engine/loop/control.py Steering, which the trainer and a watched loop share, driven by hand: a viewer's
    commands (with ids) and one the loop gives itself (no id), a refusal, and commands the state does not allow."""
    control, events, calls = Control(), [], []

    def set_lr(lr):
        if lr <= 0:
            raise Refused("a rate must be positive")
        calls.append(("set_lr", lr))
        return 0.1

    steering = Steering(
        control,
        events,
        set_lr=set_lr,
        stop=lambda: calls.append(("stop",)),
        pause=lambda kind, data: calls.append((kind, data)),
    )
    assert not steering.apply(3, "set_lr", 0.05, cid=1)
    assert not steering.apply(3, "set_lr", -1.0, cid=2)
    assert not steering.apply(4, "pause", cid=3)
    assert not steering.apply(4, "resume", cid=4)  # while running
    assert not steering.apply(4, "pause", paused=True, cid=5)
    assert steering.apply(5, "resume", paused=True, cid=6)
    assert steering.apply(6, "stop")  # the loop's own: nothing to acknowledge
    assert events == [(3, "lr_change", {"old": 0.1, "new": 0.05}), (5, "resume", {}), (6, "stop", {})]
    assert calls == [("set_lr", 0.05), ("pause", {"reason": "command"}), ("stop",)]
    assert control.acks == [
        (1, "ok"),
        (2, "ignored: a rate must be positive"),
        (3, "ok"),
        (4, "ignored: resume while running"),
        (5, "ignored: pause while paused"),
        (6, "ok"),
    ]


def train_until_stopped(run, model, opt, x, y, seconds: float = 60.0) -> int:
    """Steps until a Stop ends the block; fails the test if none comes within `seconds`."""
    deadline = time.monotonic() + seconds
    with run:
        while time.monotonic() < deadline:
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss)
            time.sleep(0.005)
        pytest.fail("no Stop arrived")
    return run.steps


def test_pause_set_lr_resume_and_stop_from_another_thread(store):
    model, (x, y) = mlp(), batch()
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}], lr=0.1)
    run = liveprop.watch(model, opt, store=store)
    seen, failed = {}, []

    def steer():
        try:
            wait_for(lambda: run.steps >= 5, what="steps")
            assert wait_ack(liveprop.pause(run.id, store), store)["result"] == "ok"
            wait_for(lambda: liveprop.get_run(run.id, store)["status"] == "paused", what="paused")
            seen["reason"] = liveprop.get_run(run.id, store)["pause_reason"]
            at = run.steps
            time.sleep(0.6)  # a paused loop takes no step, while its heartbeat goes on
            seen["paused"] = (at, run.steps, time.time() - liveprop.get_run(run.id, store)["heartbeat"])
            assert wait_ack(liveprop.set_lr(run.id, 0.05, store), store)["result"] == "ok"
            seen["lr"] = [g["lr"] for g in opt.param_groups]
            wait_ack(liveprop.resume(run.id, store), store)
            wait_for(lambda: run.steps >= at + 5, what="steps after resume")
            liveprop.stop(run.id, store)
        except BaseException as e:  # the loop fails with "no Stop arrived"; this says why
            failed.append(e)
            liveprop.stop(run.id, store)

    t = threading.Thread(target=steer)
    t.start()
    steps = train_until_stopped(run, model, opt, x, y)
    t.join()
    assert not failed, failed
    at, after, beat_age = seen["paused"]
    assert seen["reason"] == "command", seen
    assert at == after and beat_age < 1.0
    assert seen["lr"] == pytest.approx([0.05, 0.005])  # every group, their ratio kept
    row = liveprop.get_run(run.id, store)
    assert (row["status"], row["step"], row["error"]) == ("stopped", steps, None)
    change = events(store, run.id, "lr_change")
    assert [e["data"] for e in change] == [{"old": 0.1, "new": 0.05}]
    assert [e["kind"] for e in events(store, run.id, None) if e["kind"] in ("pause", "resume", "stop")] == [
        "pause",
        "resume",
        "stop",
    ]


SCHEDULES = {
    "StepLR": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5),
    "OneCycleLR": lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.1, 0.01], total_steps=40),
    "LambdaLR": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t)),
}


def scheduled(kind: str, change_at: int | None, store: str | None = None) -> list[list[float]]:
    """Each step's rates of two param groups under the schedule, with a Set lr to 0.02 taken at change_at."""
    model, (x, y) = mlp(), batch()
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}], lr=0.1)
    schedule = SCHEDULES[kind](opt)
    run = liveprop.watch(model, opt, store=store, scheduler=schedule) if change_at is not None else None
    rates = []
    for t in range(30):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if run:
            if t == change_at:  # as the store sink would put it, between two steps
                run.control.put(None, "set_lr", 0.02)
            run.step(loss)
        rates.append([g["lr"] for g in opt.param_groups])
    if run:
        run.finish()
    return rates


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_a_scheduler_goes_on_from_the_rate_set(kind, store):
    """From the step the rate is set on, every later rate is the schedule's own times new / old, in both groups."""
    plain, steered = scheduled(kind, None), scheduled(kind, 13, store)
    factor = 0.02 / plain[13][0]
    assert steered[:13] == plain[:13]
    for t in range(13, 30):
        assert steered[t] == pytest.approx([r * factor for r in plain[t]], rel=1e-9), t
    assert all(g0 / g1 == pytest.approx(10) for g0, g1 in steered)


# ---------------------------------------------------------------------------------------------
# the non-finite guard


def test_a_nonfinite_loss_pauses_the_loop_and_resume_goes_on(store):
    model, (x, y) = mlp(), batch()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    run = liveprop.watch(model, opt, store=store)
    paused_at, reasons = [], []

    def resume_when_paused():
        wait_for(lambda: liveprop.get_run(run.id, store)["status"] == "paused", what="the guard's pause")
        paused_at.append(run.steps)
        reasons.append(liveprop.get_run(run.id, store)["pause_reason"])
        liveprop.resume(run.id, store)

    t = threading.Thread(target=resume_when_paused)
    t.start()
    with run:
        for i in range(20):
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss * float("nan") if i == 7 else loss)  # what the loop is shown, not what it trains on
    t.join(timeout=30)
    [div] = events(store, run.id, "divergence")
    assert div["data"]["step"] == 7 and div["data"]["layer"] is None  # the loss alone: every layer is finite
    assert 0 <= div["data"]["ran_after"] <= 3 and paused_at == [8 + div["data"]["ran_after"]]  # within a look (4)
    assert reasons == ["divergence"], reasons
    row = liveprop.get_run(run.id, store)
    assert (row["status"], row["step"]) == ("finished", 20)
    assert dict(stored(store, run.id, "loss"))[7] is None


def test_the_guard_puts_back_the_last_finite_weights_and_resume_goes_on_from_them(store):
    """An inf gradient at step 7 turns the weights non-finite; the guard's pause puts back the weights (and the
    momentum) of the last flush vouched finite by the next (every step flushes here), and Resume trains on."""
    model, (x, y) = mlp(), batch()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    run = liveprop.watch(model, opt, store=store, telemetry_every=1, flush_seconds=0.0)
    before, seen = [], {}

    def not_running():
        status = liveprop.get_run(run.id, store)["status"]
        return None if status == "running" else status

    def look_while_paused():
        wait_for(lambda: not_running() == "paused", what="the guard's pause")
        seen["weights"] = [p.detach().clone() for p in model.parameters()]
        seen["momentum"] = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
        wait_ack(liveprop.resume(run.id, store), store)
        if wait_for(not_running, what="the end") == "paused":  # the weights it went on from diverged again
            liveprop.stop(run.id, store)

    t = threading.Thread(target=look_while_paused)
    t.start()
    losses = []
    with run:
        for i in range(20):
            before.append([p.detach().clone() for p in model.parameters()])
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            if i == 7:
                model[2].weight.grad[0, 0] = float("inf")
            opt.step()
            losses.append(loss.item())
            run.step(loss)
    t.join(timeout=30)
    [div] = events(store, run.id, "divergence")
    assert (div["data"]["step"], div["data"]["layer"], div["data"]["restored"]) == (7, "2.weight", 6)
    assert all(torch.equal(w, b) for w, b in zip(seen["weights"], before[6]))
    assert all(torch.isfinite(m).all() for m in seen["momentum"])
    assert all(map(math.isfinite, losses[9:])) and all(torch.isfinite(p).all() for p in model.parameters())
    assert liveprop.get_run(run.id, store)["status"] == "finished"


def test_a_nonfinite_gradient_names_its_layer_and_raise_ends_the_run_diverged(store):
    model, (x, y) = mlp(), batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with pytest.raises(liveprop.NonFinite, match=r"step 7 \(first layer: 2.weight\)"):
        with liveprop.watch(model, opt, store=store, telemetry_every=1, on_nonfinite="raise") as run:
            for i in range(30):
                loss = ((model(x) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                if i == 7:
                    model[2].weight.grad[0, 0] = float("inf")
                opt.step()
                run.step(loss)
    assert run.steps <= 12
    row = liveprop.get_run(run.id, store)
    assert row["status"] == "diverged" and "first layer: 2.weight" in row["error"]
    assert [e["data"]["layer"] for e in events(store, run.id, "divergence")] == ["2.weight"]


# ---------------------------------------------------------------------------------------------
# a script that crashes, is killed or is interrupted

SCRIPT = """
import sys, time, torch, liveprop
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
run = liveprop.watch(model, opt, name="crash test")
print(run.id, flush=True)
for t in range(400):
    loss = model(torch.ones(1, 3)).pow(2).sum()
    opt.zero_grad(); loss.backward(); opt.step()
    run.step(loss)
    if sys.argv[1] == "raise" and t == 20:
        raise ValueError("boom at step 20")
    time.sleep(0.02 if sys.argv[1] != "exit" else 0)
"""


ENDINGS = {  # how the script ends: the run's status, and what its error says
    "raise": ("failed", "ValueError: boom at step 20"),
    "exit": ("finished", None),  # the script ends without run.finish()
    "interrupt": ("stopped", None),  # Ctrl-C
    "kill": ("failed", "died"),  # kill -9: the reaper finds its pid gone
}


def test_a_script_is_marked_as_it_ended_within_5_s(store, tmp_path):
    """The four scripts run at once (each imports torch)."""
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "LIVEPROP_STORE": store, "PYTHONPATH": str(REPO)}
    procs = {
        how: subprocess.Popen([sys.executable, script, how], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for how in ENDINGS
    }
    ids = {how: p.stdout.readline().decode().strip() for how, p in procs.items()}
    for how, sig in (("interrupt", signal.SIGINT), ("kill", signal.SIGKILL)):
        wait_for(lambda how=how: (liveprop.get_run(ids[how], store) or {}).get("step", 0) >= 2, what=f"{how}: steps")
        procs[how].send_signal(sig)
    for how, (status, error) in ENDINGS.items():
        _, err = procs[how].communicate(timeout=60)
        assert (procs[how].returncode == 0) == (how == "exit"), (how, err.decode())

        def ended(how=how):
            row = liveprop.get_run(ids[how], store)  # a dead pid is marked failed as it is read
            return row if row["status"] not in ("running", "paused") else None

        row = wait_for(ended, timeout=5, what=f"{how}: the run marked ended")
        assert row["status"] == status, (how, row)
        assert row["error"] is None if error is None else error in row["error"], (how, row)
        if how == "raise":
            assert "ValueError: boom at step 20" in err.decode()  # the traceback, as Python prints it


# ---------------------------------------------------------------------------------------------
# wrapped models: torch.compile and DistributedDataParallel


def losses_of(model: nn.Module, store: str | None, steps: int = 8) -> tuple[list[float], str | None]:
    """(each step's loss, the run's id) of a loop training model with Adam; watched when store is given."""
    (x, y), opt = batch(), torch.optim.Adam(model.parameters(), lr=1e-2)
    run = liveprop.watch(model, opt, store=store, telemetry_every=2) if store else None
    losses = []
    for _ in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if run:
            run.step(loss)
    if run:
        run.finish()
    return losses, run and run.id


@pytest.mark.parametrize("wrap", ["compile", "ddp"])
def test_a_compiled_or_ddp_wrapped_model_is_watched_under_its_own_layer_names(wrap, store, tmp_path):
    """The wrappers' prefixes (_orig_mod., module.) are not the user's layer names; the loop trains as unwatched."""
    eager, _ = losses_of(mlp(), None)
    if wrap == "compile":
        wrapped = torch.compile(mlp(), backend="aot_eager")  # Dynamo and AOTAutograd, without a C++ compiler
    else:
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
        wrapped = nn.parallel.DistributedDataParallel(mlp())
    try:
        watched, run_id = losses_of(wrapped, store)
    finally:
        if wrap == "ddp":
            torch.distributed.destroy_process_group()
    assert watched == pytest.approx(eager, rel=1e-5)
    assert [v for _, v in stored(store, run_id, "loss")] == watched
    s = Store(store)
    assert s.hist_layers(run_id, "grad") == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert s.get_run(run_id)["config"]["arch"] == "Sequential"
    s.close()
