"""The fast path (engine/loop/fast.py), checked against the plain loop (engine/loop/trainer.py).

On the CPU nothing is captured: the graph-safe step (the one full batch, the lr in a tensor, the gradients
zeroed in place, the losses through a ring at a device-side index) runs eagerly in the trainer's blocks, and
equals the plain loop step by step in float64 for every mode, with a set-lr midway. Users are refused fast on
the CPU, on data a DataLoader serves and on several processes, in one line. The CUDA tests (capture and replay
against the plain loop, set-lr without a re-capture, snapshots between replays, a divergence, the worker) skip
here; bench/gpu_check.sh runs them on the GPU machine, where `-k cuda` picks them by their names.
"""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, cli_cmd, cli_env, run_in_process, syncs_refused_but_in_flush

from engine.__main__ import main
from engine.build import assemble as build
from engine.loop.fast import BLOCK, GraphStep
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer
from engine.store.db import Store

CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here; bench/gpu_check.sh runs this on the GPU machine"
)

CASES = {
    "manual": dict(mode="manual"),  # the lecture's two-layer net and draws
    "autograd": dict(mode="autograd", arch="mlp", depth=3),
    "custom_function": dict(mode="custom_function"),  # MyReLU
    "nn": dict(mode="nn", arch="parallel_block", lr=0.05),
    "optim-adam": dict(mode="optim", optimizer="adam", lr=1e-2),
    "optim-adamw": dict(mode="optim", optimizer="adamw", weight_decay=0.01, lr=1e-2),
    "optim-sgd-momentum": dict(mode="optim", optimizer="sgd", momentum=0.9, nesterov=True, lr=1e-2),
    "optim-rmsprop": dict(mode="optim", optimizer="rmsprop", momentum=0.5, lr=1e-3),
    "manual-deterministic": dict(mode="manual", deterministic=True),  # CUDA: index_copy_ becomes an index_put_
}
STEPS, SET_LR = 50, 25  # the lr is halved at step SET_LR, by a set_lr command
CPU_RTOL = 1e-12  # float64 on the CPU: the same kernels, but fused SGD rounds its momentum step differently
# capturable Adam (what CUDA runs) keeps its step count in float32, so its bias correction is not the plain Adam's:
# in float64 the losses part by 7e-6 and the weights by 1e-5 after 50 steps here (test_capturable_optimizers_on_the_cpu)
ADAM_CAPTURABLE_RTOL = 1e-4


def trajectory(small, fast, device="cpu", dtype="float64", **kw) -> dict:
    """A Trainer's STEPS steps, the lr halved at SET_LR by a command: each step's loss, the final weights, the
    flushes, and the captured graph before and after the set-lr (None on the CPU)."""
    p = build.prepare(small(device=device, dtype=dtype, steps=STEPS, telemetry_every=7, flush_every=10, **kw))
    p = dataclasses.replace(p, cfg=dataclasses.replace(p.cfg, fast=fast))  # built for it (prepare refuses the CPU)
    mode, batches = build.build(p)
    trainer = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), STEPS, fast=fast)
    flushes = []
    trainer.add_callback("on_flush", flushes.append)
    trainer.run(max_steps=SET_LR)
    graph = trainer.fast and trainer.fast.graph
    trainer.control.put(None, "set_lr", p.cfg.lr / 2)
    trainer.run()
    return {
        "losses": torch.tensor([v for f in flushes for v in f.losses], dtype=torch.float64),
        "weights": [w.detach().cpu().clone() for _, w in mode.named_params()],
        "flushes": flushes,
        "graphs": (graph, trainer.fast and trainer.fast.graph),
        "trainer": trainer,
    }


def rel(a, b) -> float:
    """The largest relative difference: step by step for losses, ||a - b|| / ||b|| tensor by tensor for weights."""
    if isinstance(a, list):
        return max(((x - y).norm() / y.norm()).item() for x, y in zip(a, b))
    return ((a - b).abs() / b.abs()).max().item()


def snapshots(run) -> tuple:
    """What the telemetry saw, minus what depends on time: the histograms' (step, layer, kind), the scalars
    (step, key) with their values, and the events (step, kind)."""
    timed = ("steps_per_s", "samples_per_s", "mem_bytes")
    fl = run["flushes"]
    hists = sorted((h.step, h.layer, h.kind) for f in fl for h in f.hists)
    scalars = sorted((s, k, v) for f in fl for s, k, v in f.scalars if k not in timed)
    events = sorted((s, kind) for f in fl for s, kind, _ in f.events)
    return hists, scalars, events


def assert_same_snapshots(a, b, rtol):
    (ha, sa, ea), (hb, sb, eb) = snapshots(a), snapshots(b)
    assert ha == hb and ea == eb and [(s, k) for s, k, _ in sa] == [(s, k) for s, k, _ in sb]
    assert ha and any(k.startswith("grad_norm/") for _, k, _ in sa)
    values = torch.tensor([v for *_, v in sa], dtype=torch.float64)
    torch.testing.assert_close(values, torch.tensor([v for *_, v in sb], dtype=torch.float64), rtol=rtol, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# the CPU: the graph-safe step, eagerly, against the plain loop


@pytest.mark.parametrize("case", list(CASES))
def test_the_graph_safe_step_equals_the_plain_loop_step_by_step(small, case):
    plain = trajectory(small, False, **CASES[case])
    fast = trajectory(small, True, **CASES[case])
    assert len(fast["losses"]) == len(plain["losses"]) == STEPS
    assert rel(fast["losses"], plain["losses"]) <= CPU_RTOL
    assert rel(fast["weights"], plain["weights"]) <= CPU_RTOL
    assert_same_snapshots(fast, plain, rtol=1e-6)  # the snapshots are float32
    assert fast["trainer"].fast.lr_t.item() == plain["trainer"].mode.lr  # the set-lr reached the tensor


@pytest.mark.parametrize("case", ["nn", "optim-adam"])
def test_bf16_without_the_autocast_cache_takes_the_same_steps(small, case):
    """bf16: a fast run's autocast (build's) keeps no weight cache (a capture must not), which changes no number."""
    plain = trajectory(small, False, dtype="float32", precision="bf16", **CASES[case])
    fast = trajectory(small, True, dtype="float32", precision="bf16", **CASES[case])
    assert plain["trainer"].mode.autocast._cache_enabled and not fast["trainer"].mode.autocast._cache_enabled
    assert rel(fast["losses"], plain["losses"]) <= 1e-6 and rel(fast["weights"], plain["weights"]) <= 1e-6


@pytest.mark.parametrize("case", list(CASES))
def test_the_update_reads_the_lr_tensor(small, case):
    """What a graph replays is the lr tensor, not mode.lr (a Python float, which a capture would keep): with the
    tensor at 0 and mode.lr as it was, a step moves no weight; with the tensor at mode.lr, it moves them all."""
    p = build.prepare(small(dtype="float64", **CASES[case]))
    mode, batches = build.build(p)
    graph_safe = GraphStep(mode, batches)
    before = [w.clone() for _, w in mode.named_params()]
    graph_safe.lr_t.fill_(0.0)
    graph_safe.step()
    assert all(torch.equal(a, w) for a, (_, w) in zip(before, mode.named_params()))
    graph_safe.lr_t.fill_(mode.lr)
    graph_safe.step()
    assert not any(torch.equal(a, w) for a, (_, w) in zip(before, mode.named_params()))


def test_commands_that_arrive_during_a_block_act_at_its_end(small, monkeypatch):
    """A set-lr, then a stop, each put while a block runs: the lr changes at the next block's first step and the
    stop ends the run at the block after; the plain loop with the set-lr at that step gives the same losses."""
    cfg = small(dtype="float64", steps=400, telemetry_every=1000, flush_every=10**6, flush_seconds=3600)
    p = build.prepare(cfg)
    mode, batches = build.build(p)
    trainer = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), 400, fast=True)
    flushes = []
    trainer.add_callback("on_flush", flushes.append)
    eager, calls = trainer.fast.step, []

    def step(*args, **kwargs):  # the 10th step of a block puts the command
        calls.append(trainer.step)
        if len(calls) == 10:
            trainer.control.put(None, "set_lr", p.cfg.lr / 3)
        if len(calls) == 10 + BLOCK:
            trainer.control.put(None, "stop")
        eager(*args, **kwargs)

    trainer.run(max_steps=1)  # step 0, with its snapshot
    monkeypatch.setattr(trainer.fast, "step", step)
    trainer.run()
    assert trainer.stopped and trainer.step == 1 + 2 * BLOCK
    events = [(s, kind) for f in flushes for s, kind, _ in f.events]
    assert events == [(1 + BLOCK, "lr_change"), (1 + 2 * BLOCK, "stop")]

    mode, batches = build.build(build.prepare(cfg))
    plain = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), 400)
    plain_flushes = []
    plain.add_callback("on_flush", plain_flushes.append)
    plain.run(max_steps=1 + BLOCK)
    plain.control.put(None, "set_lr", p.cfg.lr / 3)
    plain.run(max_steps=BLOCK)
    a = torch.tensor([v for f in flushes for v in f.losses], dtype=torch.float64)
    b = torch.tensor([v for f in plain_flushes for v in f.losses], dtype=torch.float64)
    assert len(a) == len(b) == 1 + 2 * BLOCK and rel(a, b) <= CPU_RTOL


def test_a_divergence_is_handled_as_in_the_plain_loop_and_the_graph_dropped(small, monkeypatch):
    """lr 1e30 from step 20 (float32): the loss overflows at step 21 in both loops; the fast one finds the same
    step and layer, puts back finite weights from before it, and drops its graph (a capture holds replaced
    tensors). Which earlier weights come back depends on where the flushes fell, one per block here."""
    forgotten = []

    def run(fast):
        p = build.prepare(small(dtype="float32", steps=200, telemetry_every=1000, on_divergence="stop"))
        mode, batches = build.build(p)
        trainer = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), 200, on_divergence="stop", fast=fast)
        if fast:
            monkeypatch.setattr(trainer.fast, "forget", lambda: forgotten.append(trainer.step))
        trainer.run(max_steps=20)
        trainer.control.put(None, "set_lr", 1e30)
        trainer.run()
        return trainer

    plain, fast = run(False), run(True)
    assert fast.stopped and fast.divergence["step"] == plain.divergence["step"] == 21
    assert fast.divergence["layer"] == plain.divergence["layer"] and forgotten
    assert fast.divergence["restored"] <= 21 and all(torch.isfinite(w).all() for _, w in fast.mode.named_params())


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_capturable_optimizers_on_the_cpu(small, monkeypatch, optimizer):
    """What CUDA runs: the optimizer with capturable=True (torch allows it on CUDA only; its device check is
    widened here), driven by the same blocks. Its step count is a float32 tensor, so capturable Adam's bias
    correction is not the plain Adam's: within ADAM_CAPTURABLE_RTOL in float64. RMSprop's is exact."""
    for name in ("torch.optim.adam", "torch.optim.rmsprop"):
        monkeypatch.setattr(sys.modules[name], "_get_capturable_supported_devices", lambda *a, **k: ["cpu"])
    kw = CASES[f"optim-{optimizer}"]
    plain = trajectory(small, False, **kw)
    p = build.prepare(small(dtype="float64", steps=STEPS, telemetry_every=7, flush_every=10, **kw))
    mode, batches = build.build(p)
    trainer = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), STEPS)
    trainer.fast = GraphStep(mode, batches, capturable=True)
    flushes = []
    trainer.add_callback("on_flush", flushes.append)
    trainer.run(max_steps=SET_LR)
    trainer.control.put(None, "set_lr", p.cfg.lr / 2)
    trainer.run()
    assert all(g["capturable"] for g in mode.optimizer.param_groups)
    assert all(s["step"].dtype == torch.float32 for s in mode.optimizer.state.values())
    losses = torch.tensor([v for f in flushes for v in f.losses], dtype=torch.float64)
    assert rel(losses, plain["losses"]) <= (ADAM_CAPTURABLE_RTOL if optimizer != "rmsprop" else CPU_RTOL)


def test_a_resumed_runs_step_counts_move_to_the_device_with_capturable():
    """_graph_safe on an optimizer with state (a checkpoint's): capturable needs the step count beside the weights;
    SGD gets its fused kernel, the one that reads a tensor lr on the device."""
    from engine.loop.fast import _graph_safe

    w = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(3)
    adam.step()
    _graph_safe(adam, capturable=True)
    assert adam.param_groups[0]["capturable"] and adam.state[w]["step"].device == w.device
    sgd = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    _graph_safe(sgd, capturable=True)
    assert sgd.param_groups[0]["fused"] and "capturable" not in sgd.param_groups[0]


# ---------------------------------------------------------------------------------------------
# refusals: one line, exit status 2, nothing written

PRETEND_CUDA = {  # refused on a CUDA device too: checked here with the device pretended
    "a DataLoader's batches": (["--n-samples", "100", "--batch-size", "64"], "100 samples, batch_size 64"),
    "a dataset loaded batch by batch": (["--mode", "nn", "--dataset", "mnist"], "comes batch by batch"),
    "a sampler": (["--sampler", "random"], "sampler 'random'"),
    "two processes": (["--nproc", "2"], "2 processes"),
    "a pace": (["--pace", "10"], "pace"),
    "adagrad": (["--mode", "optim", "--optimizer", "adagrad"], "adagrad"),
    "compile": (["--mode", "nn", "--compile"], "with compile"),
}


def refused(argv, store, capsys) -> str:
    try:
        code = main(["train", "--fast", *argv, "--store", store])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("liveprop: error: fast: "), err
    assert not os.path.exists(store) and not os.path.exists(os.path.dirname(store)), "the store was written"
    return lines[0]


def test_fast_is_refused_on_the_cpu(tmp_path, capsys):
    line = refused(["--device", "cpu"], str(tmp_path / "store" / "liveprop.db"), capsys)
    assert "CUDA graphs need a CUDA device" in line


@pytest.mark.parametrize("name", list(PRETEND_CUDA))
def test_fast_is_refused_where_it_cannot_apply(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(build, "resolve_device", lambda _name: (torch.device("cuda"), "cuda (pretended)"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what engine/config/reasons.py asks
    argv, why = PRETEND_CUDA[name]
    assert why in refused(argv, str(tmp_path / "store" / "liveprop.db"), capsys)


def test_fast_on_the_cpu_is_refused_by_the_cli_in_one_line(tmp_path):
    store = tmp_path / "store" / "liveprop.db"
    r = subprocess.run(
        cli_cmd("train", "--fast", "--device", "cpu", "--store", store),
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert "CUDA graphs need a CUDA device" in r.stderr and not store.parent.exists()


def test_the_dashboard_greys_the_checkbox_out_with_the_reason():
    from dashboard import rules  # here, not at the top: bench/gpu_check.sh leaves out files that import it there

    lecture = {"mode": "manual", "dataset": "random", "device": "auto"}
    assert "fast" not in rules.disabled_reasons(lecture, cuda=True)
    assert "this machine has none" in rules.disabled_reasons(lecture, cuda=False)["fast"]
    assert "device is cpu" in rules.disabled_reasons({**lecture, "device": "cpu"}, cuda=True)["fast"]
    assert "2 processes" in rules.disabled_reasons({**lecture, "nproc": 2}, cuda=True)["fast"]
    for data in ({"n_samples": 100, "batch_size": 64}, {"dataset": "mnist"}, {"sampler": "random"}):
        assert "one fixed batch" in rules.disabled_reasons({**lecture, **data}, cuda=True)["fast"]
    assert "adagrad" in rules.disabled_reasons({"mode": "optim", "optimizer": "adagrad"}, cuda=True)["fast"]
    assert "compile" in rules.disabled_reasons({"mode": "nn", "compile": True}, cuda=True)["fast"]
    cfg = rules.config_from_values({**lecture, "fast": True, "lr": 1e-6})
    assert cfg.fast == torch.cuda.is_available()  # greyed out here: the value never reaches the engine


# ---------------------------------------------------------------------------------------------
# CUDA: capture and replay (skipped here)


def cuda_rtol(case) -> float:
    """Float64 on CUDA: the raw modes and nn run the same kernels as the plain loop; SGD and RMSprop get their lr
    as a float32 tensor (what torch's fused and capturable kernels read); capturable Adam counts in float32."""
    if case in ("optim-adam", "optim-adamw"):
        return ADAM_CAPTURABLE_RTOL
    return 1e-6 if case.startswith("optim") else 1e-9


@CUDA
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_capture_and_replay_match_the_plain_loop(small, case):
    """The captured step, replayed in blocks, against the plain loop on CUDA: the same losses and weights, the
    same snapshots between replays, and a set-lr that changes the lr tensor with no re-capture."""
    plain = trajectory(small, False, "cuda", **CASES[case])
    fast = trajectory(small, True, "cuda", **CASES[case])
    before, after = fast["graphs"]
    assert before is not None and after is before  # captured once: the set-lr filled the lr tensor
    assert rel(fast["losses"], plain["losses"]) <= cuda_rtol(case)
    assert rel(fast["weights"], plain["weights"]) <= cuda_rtol(case)
    assert_same_snapshots(fast, plain, rtol=max(cuda_rtol(case), 1e-6))
    assert fast["trainer"].fast.lr_t.item() == pytest.approx(plain["trainer"].mode.lr, rel=1e-7)


@CUDA
@pytest.mark.parametrize("case", ["nn", "optim-adam"])
def test_cuda_capture_in_bf16_tracks_the_plain_bf16_loop(small, case):
    """bf16: autocast inside the capture, without its weight cache (the same numbers, recomputed). nn runs the
    plain loop's kernels; Adam's capturable step parts from the plain one in the 6th digit, which bf16's own
    resolution (2**-8) can turn into a few 1e-3 of the loss."""
    plain = trajectory(small, False, "cuda", dtype="float32", precision="bf16", **CASES[case])
    fast = trajectory(small, True, "cuda", dtype="float32", precision="bf16", **CASES[case])
    assert fast["graphs"][0] is not None
    assert rel(fast["losses"], plain["losses"]) <= (1e-6 if case == "nn" else 1e-2)


@CUDA
@pytest.mark.parametrize("case", ["manual", "autograd", "optim-adam"])
def test_cuda_replays_and_snapshots_do_not_sync_between_flushes(small, case):
    """set_sync_debug_mode("error") raises on any host sync: once the step is captured, only a flush may sync."""
    p = build.prepare(
        small(device="cuda", steps=200, telemetry_every=7, flush_every=30, flush_seconds=3600, **CASES[case])
    )
    mode, batches = build.build(p)
    trainer = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), 200, fast=True)
    trainer.run(max_steps=8)  # the first snapshot, the warm-up and the capture
    assert trainer.fast.graph is not None
    with syncs_refused_but_in_flush(trainer):
        trainer.run()
    assert trainer.step == 200


@CUDA
def test_cuda_divergence_drops_the_graph_and_the_resumed_run_captures_anew(small):
    """lr 1e30 (float32) overflows the loss; the trainer puts back finite weights and optimizer state, which
    replaces tensors the graph wrote, so the resumed run (a lower lr, then resume) captures a new graph."""
    p = build.prepare(small(device="cuda", dtype="float32", steps=300, telemetry_every=1000, **CASES["optim-adam"]))
    mode, batches = build.build(p)
    trainer = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), 300, fast=True)
    graphs = []
    capture = trainer.fast._capture

    def counted():
        capture()
        graphs.append(trainer.fast.graph)

    def on_status(status, _info):
        if status == "diverged":
            trainer.control.put(None, "set_lr", 1e-3)
            trainer.control.put(None, "resume")

    trainer.fast._capture = counted
    trainer.add_callback("on_status", on_status)
    trainer.run(max_steps=20)
    trainer.control.put(None, "set_lr", 1e30)
    trainer.run()
    assert trainer.step == 300 and not trainer.stopped and len(graphs) == 2 and graphs[1] is not graphs[0]
    assert all(torch.isfinite(w).all() for _, w in mode.named_params())


@CUDA
def test_cuda_worker_run_with_fast_stores_the_plain_runs_losses(small, store):
    """The worker's whole path with fast (the config, the trainer, the store): the same losses as without."""
    kw = dict(device="cuda", dtype="float64", steps=120, flush_every=50, telemetry_every=10)
    fast_id, status = run_in_process(small(fast=True, **kw), store)
    plain_id, plain_status = run_in_process(small(**kw), store)
    assert status == plain_status == "finished"
    s = Store(store)
    try:
        a = torch.tensor([v for _, v in s.scalars(fast_id, "loss")], dtype=torch.float64)
        b = torch.tensor([v for _, v in s.scalars(plain_id, "loss")], dtype=torch.float64)
        assert s.hist_steps(fast_id, "weight", "w1") == s.hist_steps(plain_id, "weight", "w1")
    finally:
        s.close()
    assert len(a) == len(b) == 120
    torch.testing.assert_close(a, b, rtol=1e-9, atol=0)
