"""Resume: an ended run goes on from its checkpoint, in place, as if it had never stopped.

The reference is the same configuration trained without a break, in float64 on the CPU: the weights
after N steps and every step's loss are equal bit for bit (torch's CPU ops are deterministic here), in
every mode, Adam's moments included, on data drawn through a shuffling DataLoader whose position the
checkpoint keeps (40 samples in batches of 16: the break falls inside an epoch).
"""

from __future__ import annotations

import pytest
import torch
from conftest import REPO, wait_for

import engine
from dashboard.pages_common import plain
from engine.loop import checkpoint
from engine.runs import api as runs
from engine.runs import worker
from engine.store.db import Store
from engine.store.files import RunFiles

MODES = {
    "manual": dict(mode="manual"),
    "autograd": dict(mode="autograd"),
    "custom_function": dict(mode="custom_function"),
    "nn": dict(mode="nn"),
    "optim-adam": dict(mode="optim", optimizer="adam", lr=1e-2),
}


def config(small, steps, **kw):
    return small(**{"dtype": "float64", "dataset": "teacher", "n_samples": 40, "batch_size": 16, "steps": steps, **kw})


def trained(store, run_id):
    """(final weights and optimizer state, every stored loss) of a run."""
    ckpt = checkpoint.load(RunFiles.of(run_id, store).checkpoint)
    s = Store(store)
    try:
        losses = s.scalars(run_id, "loss")
    finally:
        s.close()
    return ckpt, losses


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    else:
        assert a == b


@pytest.mark.parametrize("kw", MODES.values(), ids=MODES.keys())
def test_a_run_resumed_at_step_k_equals_one_never_stopped(small, store, run_inprocess, monkeypatch, kw):
    ref_id, status = run_inprocess(config(small, 30, **kw), store)
    assert status == "finished"
    run_id, status = run_inprocess(config(small, 11, **kw), store)  # ended at k = 11, inside an epoch
    assert status == "finished"
    started = []
    monkeypatch.setattr(runs, "_start", lambda rid, path: started.append(rid))  # trained here, below
    assert engine.resume_run(run_id, steps=30, store=store) == 11
    assert started == [run_id] and engine.get_run(run_id, store)["status"] == "queued"
    assert worker.run_worker(run_id, store) == "finished"
    (want, want_losses), (got, got_losses) = trained(store, ref_id), trained(store, run_id)
    assert [s for s, _ in got_losses] == list(range(30))  # contiguous, each step once
    assert got_losses == want_losses  # bit for bit, the steps before and after the break
    assert_same(got["model"], want["model"])
    if "optimizer" in want:
        assert_same(got["optimizer"], want["optimizer"])
    assert got["step"] == 30 and engine.get_run(run_id, store)["step"] == 30


def test_a_stopped_detached_run_resumes_from_the_cli_and_ends_where_an_unbroken_one_does(
    small, store, run_inprocess, cli
):
    """As a person does it: launch, Stop, `python -m engine resume RUN`, and the run ends equal."""
    kw = dict(mode="optim", optimizer="adam", lr=1e-2, pace=40.0)
    run_id = engine.launch(config(small, 120, **kw), store)
    wait_for(lambda: engine.get_run(run_id, store)["step"] >= 20, timeout=60, what="20 steps")
    engine.stop(run_id, store)
    run = wait_for(lambda: (r := engine.get_run(run_id, store))["status"] == "stopped" and r, what="stopped")
    k = run["step"]
    assert 20 <= k < 120
    r = cli("resume", run_id, "--store", store)
    assert r.returncode == 0 and f"from step {k}" in r.stdout, r.stderr
    wait_for(lambda: engine.get_run(run_id, store)["status"] == "finished", timeout=90, what="the resumed run's end")
    ref_id, _ = run_inprocess(config(small, 120, **{**kw, "pace": 0.0}), store)
    (want, want_losses), (got, got_losses) = trained(store, ref_id), trained(store, run_id)
    assert got_losses == want_losses
    assert_same(got["model"], want["model"])
    assert_same(got["optimizer"], want["optimizer"])
    s = Store(store)
    assert [e["data"]["step"] for e in s.events(run_id, kind="resumed")] == [k]
    s.close()


def test_what_cannot_be_resumed_is_refused_in_one_line(small, store, run_inprocess, cli):
    run_id, _ = run_inprocess(config(small, 5), store)
    r = cli("resume", run_id, "--store", store)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "has done its 5 steps" in r.stderr
    RunFiles.of(run_id, store).checkpoint.unlink()
    r = cli("resume", run_id, "--steps", "9", "--store", store)
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert engine.get_run(run_id, store)["status"] == "finished"  # nothing changed


def test_the_runs_page_resumes_a_stopped_run_and_shows_it_on_the_train_page(small, store, run_inprocess, monkeypatch):
    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    run_id, _ = run_inprocess(config(small, 11), store)
    s = Store(store)
    s.update_run(run_id, status="stopped", total_steps=30)  # as a Stop at step 11 of 30 leaves it
    s.close()
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.setattr(runs, "_start", lambda rid, path: None)  # no worker: the page's part only
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("views/runs.py").run()
    [resume] = [b for b in at.button if b.label == "Resume"]
    assert not resume.disabled
    resume.click().run()
    assert not at.exception, at.exception
    assert engine.get_run(run_id, store)["status"] == "queued"
    assert at.session_state.lp_run == run_id and at.query_params["run"] in (run_id, [run_id])
    assert any("from step 11" in m.value for m in at.success), [m.value for m in at.success]


class NanAfterUpdates:
    """A mode whose reported loss is NaN once its optimizer has taken `bad` steps (its gradients stay
    finite, so the divergence replay steps the optimizer through every step it replays)."""

    def __init__(self, mode, bad):
        self.mode, self.bad = mode, bad

    def __getattr__(self, name):
        return getattr(self.mode, name)

    def forward_backward(self, x, y):
        loss = self.mode.forward_backward(x, y)
        steps = [int(s["step"]) for s in self.mode.optimizer.state.values()]
        return loss * float("nan") if steps and steps[0] >= self.bad else loss


@pytest.mark.parametrize("bad", [13, 41])  # after 3 flushes and after 10: the two sets of copies took turns
def test_the_divergence_replay_puts_back_adams_moments_with_the_weights(small, bad):
    """After a divergence the run holds the weights of the last finite flush and Adam's state of that
    same step, equal to a run that trained exactly that many steps; before, the replay's steps were left
    in Adam's moments, so a resume at a lower lr started from moments pointing at the divergence."""
    from engine.build import assemble as build
    from engine.loop.telemetry import Telemetry
    from engine.loop.trainer import Trainer

    def trainer(steps, bad=None):
        p = build.prepare(config(small, 60, mode="optim", optimizer="adam", lr=1e-2, flush_every=4))
        mode, batches = build.build(p)
        run = Trainer(
            NanAfterUpdates(mode, bad) if bad else mode,
            batches,
            Telemetry.from_config(p.cfg, p.device),
            steps,
            on_divergence="stop",
        )
        run.run()
        return run, mode

    diverged, mode = trainer(60, bad=bad)
    restored = diverged.divergence["restored"]
    assert diverged.divergence["step"] >= bad and 0 < restored <= bad
    reference, ref_mode = trainer(restored)
    assert_same(mode.model.state_dict(), ref_mode.model.state_dict())
    assert_same(mode.optimizer.state_dict(), ref_mode.optimizer.state_dict())


def test_the_divergence_copies_are_reused_across_flushes_and_skipped_when_ignored(small):
    """A flush copies the weights and Adam's state into the set the last good one no longer needs: the
    copies take turns between two sets of tensors, allocated once. With on_divergence ignore, none is made."""
    from engine.build import assemble as build
    from engine.loop.telemetry import Telemetry
    from engine.loop.trainer import Trainer

    def trainer(on_divergence):
        p = build.prepare(config(small, 40, mode="optim", optimizer="adam", flush_every=4))
        mode, batches = build.build(p)
        return Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), 40, on_divergence=on_divergence)

    run, seen = trainer("pause"), []  # the tensors themselves, held: none is freed and its memory reused
    run.add_callback("on_flush", lambda f: seen.append(run.guard.candidate.optimizer["state"][0]["exp_avg"]))
    run.run()
    distinct = [t for i, t in enumerate(seen) if all(t is not u for u in seen[:i])]
    assert len(seen) >= 8 and len(distinct) <= 3, len(distinct)  # the first set's Adam moments are new: then 2
    assert all(torch.equal(w, p) for w, (_, p) in zip(run.guard.candidate.weights, run.mode.named_params()))
    ignored = trainer("ignore")
    ignored.run()
    assert ignored.guard is None


class Recorded:
    """The run's batches, the inputs of each one it draws kept in order (Batches.seek's own draws are not counted)."""

    def __init__(self, batches):
        self.batches, self.drawn = batches, []

    def __next__(self):
        x, y = next(self.batches)
        self.drawn.append(x)
        return x, y

    def position(self):
        return self.batches.position()

    def seek(self, position):
        self.batches.seek(position)


def test_a_divergence_on_a_data_loader_replays_its_own_batches_and_resumes_where_its_weights_were(small):
    """lr 1e200 from step 20 overflows the loss at step 21 of a run whose batches come from a shuffling DataLoader
    (64 samples in batches of 16). The replay runs the batches of the steps from the restored weights on, not new
    ones; then, resumed at the first lr, every loss equals that of a run restored from a checkpoint of the
    restored step (weights, Adam's state, the data's position), which replayed nothing."""
    from engine.build import assemble as build
    from engine.loop.telemetry import Telemetry
    from engine.loop.trainer import Trainer

    steps, lr = 60, 1e-2
    p = build.prepare(config(small, steps, mode="optim", optimizer="adam", lr=lr, n_samples=64, flush_every=4))

    def trainer(total, start=None):
        mode, batches = build.build(p)
        at = checkpoint.restore(start, mode, batches, p.cfg) if start else 0
        run = Trainer(mode, Recorded(batches), Telemetry.from_config(p.cfg, p.device), total, start_step=at)
        run.losses = {}
        run.add_callback("on_flush", lambda f: run.losses.update(zip(range(f.first_step, f.last_step + 1), f.losses)))
        return run

    diverged, seen = trainer(steps), []

    def on_status(status, info):
        if status == "diverged":
            seen.append(dict(info, at=diverged.step, drawn=len(diverged.batches.drawn)))
            diverged.control.put(None, "set_lr", lr)
            diverged.control.put(None, "resume")

    diverged.add_callback("on_status", on_status)
    diverged.run(max_steps=20)
    diverged.control.put(None, "set_lr", 1e200)
    diverged.run()
    [info] = seen
    r, at, drawn = info["restored"], info["at"], diverged.batches.drawn
    assert info["step"] == 21 and r <= 21 and info["layer"] is not None and diverged.step == steps
    replayed = drawn[at : info["drawn"]]  # the replay's batches: those of steps r, r + 1, ...
    assert 1 <= len(replayed) <= 21 - r + 1
    assert all(torch.equal(a, b) for a, b in zip(replayed, drawn[r:], strict=False))
    after = drawn[info["drawn"] :]  # resumed: the batches of steps r, r + 1, ... again
    assert all(torch.equal(a, b) for a, b in zip(after[: at - r], drawn[r:at], strict=True))

    reference = trainer(r)
    reference.run()
    snap = checkpoint.snapshot(reference.mode, r, p.cfg, reference.batches.batches)
    restored = trainer(r + steps - at, start=snap)
    restored.run()
    want = [restored.losses[s] for s in range(r, r + steps - at)]
    assert [diverged.losses[s] for s in range(at, steps)] == want  # bit for bit


# ---------------------------------------------------------------------------------------------
# fork: "what if I had lowered the lr here?"


def test_a_fork_with_a_new_lr_is_the_run_with_its_lr_changed_at_that_step(small, store, run_inprocess, monkeypatch):
    """The fork starts at step 10 (from the parent's nearest checkpoint at or before it, replayed to 10) and
    equals, bit for bit, the parent's own training with its lr changed at that step (the reference: a Trainer
    doing just that)."""
    from engine.build import assemble as build
    from engine.loop.telemetry import Telemetry
    from engine.loop.trainer import Trainer

    kw = dict(mode="optim", optimizer="sgd", momentum=0.9, lr=1e-2, checkpoint_seconds=1e-6)  # one per flush
    parent, _ = run_inprocess(config(small, 30, **kw), store)
    monkeypatch.setattr(runs, "_start", lambda rid, path: None)
    child = engine.fork(parent, 10, {"lr": 2e-3}, store)
    at = engine.get_run(child, store)["step"]
    assert at == 10
    assert worker.run_worker(child, store) == "finished"

    p = build.prepare(config(small, 30, **kw))
    mode, batches = build.build(p)
    t = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), 30)
    t.run(max_steps=at)
    mode.lr = 2e-3
    t.run()
    got, losses = trained(store, child)
    assert_same(got["model"], {k: v for k, v in mode.model.state_dict().items()})
    assert [s for s, _ in losses] == list(range(at, 30)) and got["lr"] == 2e-3
    s = Store(store)
    assert engine.forks_of(parent, s) == [(child, at)] and engine.forks_of(child, s) == []
    s.close()


def test_a_fork_may_change_the_optimizer_and_keeps_counting_from_its_step(small, store, run_inprocess, monkeypatch):
    parent, _ = run_inprocess(config(small, 12, mode="optim", optimizer="adam", checkpoint_seconds=1e-6), store)
    monkeypatch.setattr(runs, "_start", lambda rid, path: None)
    child = engine.fork(parent, 8, {"optimizer": "sgd", "lr": 1e-3, "steps": 20}, store)
    assert worker.run_worker(child, store) == "finished"
    got, losses = trained(store, child)
    at = losses[0][0]
    assert got["config"]["optimizer"] == "sgd" and "exp_avg" not in str(got["optimizer"]["state"])
    assert [s for s, _ in losses] == list(range(at, 20)) and at <= 8


def test_a_fork_that_would_change_the_model_or_has_no_checkpoint_is_refused_in_one_line(
    small, store, run_inprocess, cli
):
    parent, _ = run_inprocess(config(small, 6), store)
    r = cli("fork", parent, "--step", "3", "--hidden", "64", "--store", store)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "hidden cannot change" in r.stderr
    for path in RunFiles.of(parent, store).history.glob("*.pt"):
        path.unlink()
    r = cli("fork", parent, "--step", "3", "--lr", "1e-3", "--store", store)
    assert r.returncode == 2 and "no checkpoint at or before step 3" in r.stderr and "Traceback" not in r.stderr
    assert [row["id"] for row in engine.list_runs(store)] == [parent]  # nothing written


def test_the_runs_page_forks_at_a_step_with_a_new_lr_and_the_train_page_draws_the_parent(
    small, store, run_inprocess, monkeypatch
):
    from streamlit.testing.v1 import AppTest

    parent, _ = run_inprocess(config(small, 12, mode="optim", optimizer="adam", checkpoint_seconds=1e-6), store)
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.setattr(runs, "_start", lambda rid, path: None)  # trained below, in this process
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("views/runs.py").run()
    at.number_input(key="fork_step").set_value(8)
    at.number_input(key="fork_lr").set_value(1e-4)
    at.selectbox(key="fork_optimizer").set_value("sgd")
    at.button(key="runs_fork").click().run()
    assert not at.exception, at.exception
    [child] = [r["id"] for r in engine.list_runs(store) if r["id"] != parent]
    c = engine.get_run(child, store)["config"]
    assert (c["lr"], c["optimizer"]) == (1e-4, "sgd") and at.session_state.lp_run == child
    assert any("the new run" in m.value and plain(child) in m.value for m in at.success) and not at.error
    assert worker.run_worker(child, store) == "finished"
    s = Store(store)
    assert engine.forks_of(parent, s) == [
        (child, engine.get_run(child, store)["step"] and s.scalars(child, "loss")[0][0])
    ]
    s.close()


# ---------------------------------------------------------------------------------------------
# reproducibility


def test_two_deterministic_runs_are_bit_identical_and_record_what_produced_them(small, store, run_inprocess):
    cfg = config(small, 25, mode="optim", optimizer="adam", dtype="float32", deterministic=True)
    (a, _), (b, _) = run_inprocess(cfg, store), run_inprocess(cfg, store)
    (wa, la), (wb, lb) = trained(store, a), trained(store, b)
    assert la == lb and len(la) == 25
    assert_same(wa["model"], wb["model"])
    s = Store(store)
    [env] = [e["data"] for e in s.events(a, kind="environment")]
    s.close()
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and "git" in env
    run_inprocess(config(small, 2), store)
    assert not torch.are_deterministic_algorithms_enabled()  # set by each run: not left on for the next


def test_an_op_without_a_deterministic_version_fails_the_run_naming_it(small, store, run_inprocess, monkeypatch):
    from engine.modes import autograd

    plain_step = autograd.TwoLayer.forward_backward

    def with_put(self, x, y):  # put_ has no deterministic implementation in torch, on the CPU too
        torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))
        return plain_step(self, x, y)

    monkeypatch.setattr(autograd.TwoLayer, "forward_backward", with_put)
    run_id, status = run_inprocess(config(small, 3, mode="autograd", deterministic=True), store)
    error = engine.get_run(run_id, store)["error"]
    assert status == "failed" and error.startswith("put_ has no deterministic implementation"), error
    assert "--deterministic" in error and "\n" not in error
    assert run_inprocess(config(small, 3, mode="autograd"), store)[1] == "finished"  # the same op, allowed


def test_run_again_starts_the_same_configuration(small, store, run_inprocess, monkeypatch):
    from streamlit.testing.v1 import AppTest

    first, _ = run_inprocess(config(small, 5, seed=7, lr=3e-4, mode="autograd"), store)
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.setattr(runs, "_start", lambda rid, path: None)
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("views/runs.py").run()
    at.button(key="runs_again").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [again] = [r for r in engine.list_runs(store) if r["id"] != first]
    assert again["config"] == engine.get_run(first, store)["config"] and at.session_state.lp_run == again["id"]


def test_a_run_keeps_its_first_checkpoint_and_its_newest(small, store, run_inprocess, monkeypatch):
    monkeypatch.setattr(checkpoint, "HISTORY", 3)
    run_id, _ = run_inprocess(config(small, 40, checkpoint_seconds=1e-6), store)  # one per flush: 0, 4, ...
    kept = sorted(int(p.stem) for p in RunFiles.of(run_id, store).history.glob("*.pt"))
    assert kept[0] == 0 and len(kept) == 4 and kept[-1] == 40
    assert RunFiles.of(run_id, store).checkpoint.samefile(RunFiles.of(run_id, store).history_at(40))


def test_the_train_pages_resume_goes_on_from_the_checkpoint_once_the_run_has_ended(
    small, store, run_inprocess, monkeypatch
):
    """After Stop, a learner on the Train page presses Resume: the run goes on in place (it used to be
    greyed out: "takes no more commands"), and a later visit to the Runs page stays there."""
    from streamlit.testing.v1 import AppTest

    run_id, _ = run_inprocess(config(small, 11), store)
    s = Store(store)
    s.update_run(run_id, status="stopped", total_steps=30)
    s.close()
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.setattr(runs, "_start", lambda rid, path: None)
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    resume = at.button(key="btn_resume")
    assert not resume.disabled
    resume.click().run()
    assert not at.exception and engine.get_run(run_id, store)["status"] == "queued"
    at.switch_page("views/runs.py").run()
    assert not at.exception and any(t.value == "Runs" for t in at.title)
