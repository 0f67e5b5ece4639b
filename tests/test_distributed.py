"""Several processes under torchrun (engine/loop/distributed.py), started for real: gloo on the CPU.

The reference is one process on the same global batch: 2 processes must follow its parameter trajectory
(the loss at every step, the weight norms at every telemetry step, the final weights) to 1e-6 relative,
in float64. The figures go to tests/artifacts/distributed_equivalence.txt for the closing note.

A rank that dies or hangs must fail the run, with the reason, within 10 s, and leave no process behind.
"""

import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_cmd, cli_env, run_in_process, wait_for

from engine import RunConfig
from engine.__main__ import main
from engine.loop import checkpoint
from engine.runs import api as runs
from engine.store.db import ACTIVE, opened
from engine.store.files import RunFiles

ARTIFACTS = Path(__file__).parent / "artifacts"
RTOL = 1e-6
LECTURE = dict(steps=40, dtype="float64", telemetry_every=5, visdom="off", checkpoint_seconds=0)
MODES = {
    "manual": {},
    "autograd": {},
    "custom_function": {},
    "nn": {},
    "optim": {"optimizer": "adam"},
}


def launched(cfg: RunConfig, store: str, timeout: float = 120.0) -> dict:
    run_id = runs.launch(cfg, store)
    wait_for(lambda: runs.get_run(run_id, store)["status"] not in ACTIVE, timeout, what=f"run {run_id} to end")
    return runs.get_run(run_id, store)


def trajectory(run_id: str, store: str) -> dict:
    """What the run's parameters did: every loss, the weight norms at each telemetry step, the final weights."""
    with opened(store) as s:
        losses = torch.tensor([v for _, v in s.scalars(run_id, "loss")], dtype=torch.float64)
        norms = {k: torch.tensor([v for _, v in s.scalars(run_id, k)]) for k in s.scalar_keys(run_id)}
    norms = {k: v for k, v in norms.items() if k.startswith("weight_norm/")}
    weights = checkpoint.load(RunFiles.of(run_id, store).checkpoint)["model"]
    return {"loss": losses, **norms, **{f"final/{k}": v.double() for k, v in weights.items()}}


def relative_gap(a: dict, b: dict) -> float:
    """The largest ||a - b|| / ||b|| over the trajectory's series (same keys, same lengths)."""
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    gaps = []
    for k in a:
        assert a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)
        gaps.append(((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-300)).item())
    return max(gaps)


def record(line: str):
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "distributed_equivalence.txt", "a") as f:
        f.write(line + "\n")


def checksums(run_id: str, store: str, more: str = "") -> list[str]:
    """The ranks' end-of-run lines in the run's log (and `more`, another machine's output): 'rank R of W:
    weights sum to X'."""
    log = RunFiles.of(run_id, store).log.read_text() + more
    return sorted(line.split("]", 1)[-1].strip() for line in log.splitlines() if "weights sum to" in line)


def torn_down_cleanly(run_id: str, store: str) -> bool:
    """design.md: gloo on 2 cores once aborted 1 launch in 5 at exit, after the work was done. The ranks
    now tear their groups down deliberately (Ranks.close), and 0 of 10 launches aborted. The tests are not
    blind to it (a warning, and a line in the artifacts) but do not fail on it: the run's outcome is
    written before the exit and checked on its own."""
    log = RunFiles.of(run_id, store).log.read_text()
    clean = "terminate called" not in log and "ChildFailedError" not in log
    if not clean:
        record(f"run {run_id}: torchrun reported an abort at exit after the run ended")
        warnings.warn(f"run {run_id}: a process aborted at exit (see its log)", stacklevel=2)
    return clean


def agree(lines: list[str], world: int):
    assert len(lines) == world, lines
    sums = {line.rsplit(" ", 1)[1] for line in lines}
    assert len(sums) == 1, f"the ranks' weights differ: {lines}"


@pytest.mark.parametrize("mode", MODES)
def test_two_processes_follow_the_one_process_trajectory(mode, store):
    cfg = RunConfig(mode=mode, **LECTURE, **MODES[mode])
    one, status = run_in_process(cfg, store)
    assert status == "finished"
    two = launched(RunConfig(mode=mode, nproc=2, **LECTURE, **MODES[mode]), store)
    assert two["status"] == "finished", two["error"]
    gap = relative_gap(trajectory(two["id"], store), trajectory(one, store))
    record(f"{mode:16s} lecture, 1 vs 2 processes (gloo), float64, 40 steps: max relative gap {gap:.2e}")
    assert gap < RTOL
    agree(checksums(two["id"], store), 2)
    torn_down_cleanly(two["id"], store)


def test_a_two_process_run_resumed_ends_where_one_unbroken_process_does(store):
    """Every rank loads the checkpoint rank 0 wrote (weights, Adam's moments, the step) and goes on."""
    kw = dict(mode="optim", optimizer="adam", **{**LECTURE, "steps": 20})
    one, _ = run_in_process(RunConfig(**{**kw, "steps": 40}), store)
    two = launched(RunConfig(**kw, nproc=2), store)
    assert runs.resume_run(two["id"], steps=40, store=store) == 20
    wait_for(lambda: runs.get_run(two["id"], store)["status"] not in ACTIVE, 120, what="the resumed run to end")
    assert runs.get_run(two["id"], store)["status"] == "finished"
    # the loss at every step and the final weights (the first sitting also took a snapshot at its last step)
    got, want = ({k: v for k, v in trajectory(r, store).items() if "norm" not in k} for r in (two["id"], one))
    gap = relative_gap(got, want)
    record(f"optim (adam)     lecture, 2 processes stopped at 20 and resumed to 40 vs 1 process to 40: {gap:.2e}")
    assert gap < RTOL


@pytest.mark.parametrize("sampler", ["none", "sequential"], ids=["shuffled", "sequential"])
def test_two_processes_split_the_batches_of_a_data_loader_like_one(sampler, store):
    """Every world size takes one order per epoch, shuffled by default (engine/build/batches.py), and rank r
    the rows r, r + 2, ... of each global batch: 40 samples in batches of 8, reshuffled at steps 5 and 10."""
    data = dict(dataset="teacher", n_samples=40, batch_size=8, sampler=sampler, init="torch", d_in=6, hidden=8,
                d_out=2, arch="mlp", mode="optim", optimizer="adam", seed=5)  # fmt: skip
    kw = {**LECTURE, "steps": 12}
    one, _ = run_in_process(RunConfig(**data, **kw), store)
    two = launched(RunConfig(**data, **kw, nproc=2), store)
    assert two["status"] == "finished", two["error"]
    gap = relative_gap(trajectory(two["id"], store), trajectory(one, store))
    record(f"optim (adam)     teacher data, DataLoader ({sampler}), 12 steps, 5 an epoch, 1 vs 2 processes: {gap:.2e}")
    assert gap < RTOL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_follow_one_process(store, tmp_path):
    """--nnodes 2 with a c10d rendezvous: this machine's torchrun, and `python -m engine join RUN` as the
    second machine would run it, with no store: its LIVEPROP_STORE names a folder that does not exist, and
    nothing is created there (the run's config comes from rank 0)."""
    cfg = dict(mode="optim", optimizer="adam", **LECTURE)
    one, _ = run_in_process(RunConfig(**cfg), store)
    endpoint = f"127.0.0.1:{free_port()}"
    run_id = runs.launch(RunConfig(**cfg, nnodes=2, rdzv_endpoint=endpoint), store)
    elsewhere = tmp_path / "another-machine" / "runs" / "liveprop.db"
    argv = cli_cmd("join", run_id, "--rdzv-endpoint", endpoint, "--nnodes", 2, "--nproc", 1, "--device", "cpu")
    join = subprocess.run(argv, env=cli_env(str(elsewhere)), cwd=REPO, capture_output=True, timeout=180)
    assert not (tmp_path / "another-machine").exists()
    wait_for(lambda: runs.get_run(run_id, store)["status"] not in ACTIVE, 60, what="the run to end")
    run = runs.get_run(run_id, store)
    assert run["status"] == "finished", (run["error"], join.stderr.decode()[-2000:])
    assert join.returncode == 0
    gap = relative_gap(trajectory(run_id, store), trajectory(one, store))
    record(f"optim (adam)     lecture, 1 process vs 2 nodes x 1 process (c10d on localhost): {gap:.2e}")
    assert gap < RTOL
    agree(checksums(run_id, store, join.stderr.decode()), 2)


def test_pause_set_lr_resume_and_stop_reach_every_rank(store):
    cfg = RunConfig(mode="autograd", nproc=2, until_stopped=True, pace=200, dtype="float64", visdom="off")
    run_id = runs.launch(cfg, store)
    wait_for(lambda: (runs.get_run(run_id, store)["step"] or 0) > 20, 60, what="the run to train")
    for send, expect in ((runs.pause, "paused"), (lambda r, s: runs.set_lr(r, 3e-7, s), None), (runs.resume, None)):
        ack = runs.wait_ack(send(run_id, store), store, timeout=10)
        assert ack and ack["result"] == "ok", ack
        if expect:
            wait_for(lambda e=expect: runs.get_run(run_id, store)["status"] == e, 10, what=expect)
    step = runs.get_run(run_id, store)["step"]
    wait_for(lambda: runs.get_run(run_id, store)["step"] > step + 20, 30, what="training to go on")
    assert runs.wait_ack(runs.stop(run_id, store), store, timeout=10)["result"] == "ok"
    wait_for(lambda: runs.get_run(run_id, store)["status"] == "stopped", 30, what="stopped")
    with opened(store) as s:
        kinds = [e["kind"] for e in s.events(run_id)]
    assert {"pause", "lr_change", "resume", "stop"} <= set(kinds), kinds
    agree(checksums(run_id, store), 2)  # had rank 1 missed the new lr, its weights would differ


def test_a_divergence_pauses_every_rank_and_a_lower_lr_goes_on_in_lockstep(store):
    """Each rank finds the divergence in the same reduced losses, replays to the same bad layer and
    pauses at the same step; a set-lr and a resume then reach them all."""
    run_id = runs.launch(RunConfig(mode="manual", nproc=2, steps=300, lr=0.01, visdom="off"), store)
    wait_for(lambda: runs.get_run(run_id, store)["status"] == "paused", 60, what="the divergence's pause")
    for send in (lambda: runs.set_lr(run_id, 1e-7, store), lambda: runs.resume(run_id, store)):
        assert runs.wait_ack(send(), store, timeout=10)["result"] == "ok"
    wait_for(lambda: runs.get_run(run_id, store)["status"] == "finished", 60, what="finished")
    with opened(store) as s:
        [divergence] = [e["data"] for e in s.events(run_id, kind="divergence")]
    assert divergence["layer"] in ("w1", "w2") and divergence["restored"] is not None
    agree(checksums(run_id, store), 2)


def _ranks(run_id: str) -> dict[int, int]:
    """{rank: pid} of the run's torchrun workers, from their environment."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
            env = dict(v.split(b"=", 1) for v in (p / "environ").read_bytes().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if run_id.encode() in argv and b"worker" in argv and b"RANK" in env and b"torch.distributed.run" not in argv:
            found[int(env[b"RANK"])] = int(p.name)
    return found


def _everything_gone(run_id: str) -> bool:
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and run_id.encode() in (p / "cmdline").read_bytes():
                state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    return False
        except OSError:
            continue
    return True


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("kill -9", marks=pytest.mark.fault("a rank killed (kill -9 of rank 1 of 2)")),
        pytest.param("SIGSTOP", marks=[pytest.mark.fault("a rank hung (SIGSTOP of rank 1 of 2)"), pytest.mark.full]),
    ],
)
def test_a_rank_that_dies_or_hangs_fails_the_run_within_10_s(how, store, fault_table):
    cfg = RunConfig(mode="manual", nproc=2, until_stopped=True, pace=100, visdom="off")
    run_id = runs.launch(cfg, store)
    wait_for(lambda: (runs.get_run(run_id, store)["step"] or 0) > 10, 60, what="the run to train")
    rank1 = wait_for(lambda: _ranks(run_id).get(1), 10, what="rank 1's pid")
    os.kill(rank1, signal.SIGKILL if how == "kill -9" else signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        wait_for(lambda: runs.get_run(run_id, store)["status"] == "failed", 10, interval=0.1, what="failed")
        took = time.monotonic() - t0
        run = runs.get_run(run_id, store)
        assert "another process" in run["error"] and "\n" not in run["error"], run["error"]
        assert ("died" if how == "kill -9" else "stopped answering") in run["error"], run["error"]
        wait_for(lambda: _everything_gone(run_id), 45, interval=0.5, what="every process of the run to exit")
        gone = time.monotonic() - t0
    finally:
        if how == "SIGSTOP":
            try:
                os.kill(rank1, signal.SIGKILL)
            except ProcessLookupError:
                pass
    note = f"failed after {took:.1f} s, every process gone after {gone:.0f} s"
    fault_table.add(f"a rank {'killed' if how == 'kill -9' else 'hung'} ({how} of rank 1 of 2)", 1, 0, "–", note)


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--nproc", "3"], "does not split evenly over 3 processes"),
        (["--nproc", "2", "--sampler", "random"], "draws for one process"),
        (["--nnodes", "2"], "needs rdzv_endpoint"),
        (["--nproc", "2", "--n-samples", "63", "--batch-size", "64"], "do not split evenly over 2"),
    ],
)
def test_a_split_that_cannot_be_even_is_refused_in_one_line(flags, says, store, capsys):
    assert main(["--store", store, "train", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert not os.path.exists(store) or not runs.list_runs(store)


def test_join_refuses_one_machine_or_a_bad_rendezvous_in_one_line(capsys):
    assert main(["join", "some-run", "--rdzv-endpoint", "127.0.0.1:29500", "--nnodes", "1"]) == 2
    assert "nothing to join" in capsys.readouterr().err
    assert main(["join", "some-run", "--rdzv-endpoint", "no port here"]) == 2
    err = capsys.readouterr().err
    assert "needs rdzv_endpoint HOST:PORT" in err and err.count("\n") == 1
