"""`python -m engine ...` as a subprocess, each with its own temp --store.

Starting Python with torch costs ~2 s of CPU, so independent invocations are started together and
awaited together (the `batch` helper). Every bad input is checked in-process through
engine.__main__.main (the same code, milliseconds each) and a representative set also as real
subprocesses, which also proves nothing else reaches stderr."""

import csv
import io
import json
import os
import subprocess

import pytest
import torch
from conftest import REPO, cli_cmd, cli_env, run_in_process, wait_for

from engine import RunConfig, Store, current_lr, get_run, launch
from engine.__main__ import main
from engine.config.load import from_dict, load_file
from engine.runs import api as runs
from engine.runs.progress import eta_text

MODES = ("manual", "autograd", "custom_function", "nn", "optim")


def batch(jobs, timeout=180):
    """jobs: {key: argv}; run them all at once; {key: CompletedProcess}."""
    procs = {
        k: subprocess.Popen(
            cli_cmd(*argv),
            cwd=REPO,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, argv in jobs.items()
    }
    out = {}
    for k, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            pytest.fail(f"`python -m engine {' '.join(map(str, jobs[k]))}` ran over {timeout} s")
        out[k] = subprocess.CompletedProcess(jobs[k], p.returncode, stdout, stderr)
    return out


def runs_in(store):
    if not os.path.exists(store):
        return []
    s = Store(store)
    try:
        return s.list_runs()
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# dry runs and config files, all started at once

TOML = """
# a TOML config; flags override it
mode = "nn"
arch = "parallel_block"
name = "from toml"
lr = 0.05
"""

JSON = {
    "mode": "optim",
    "optimizer": "sgd",
    "momentum": 0.9,
    "nesterov": True,
    "arch": "mlp",
    "depth": 3,
    "name": "from json",
}


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-dry")
    (root / "cfg.toml").write_text(TOML)
    (root / "cfg.json").write_text(json.dumps(JSON))
    jobs = {mode: ["train", "--dry-run", "--mode", mode, "--store", root / f"{mode}.db"] for mode in MODES}
    # nn and optim take their mode from a config file, TOML and JSON (one process less each)
    jobs["nn"] = ["train", "--dry-run", "--config", root / "cfg.toml", "--name", "flag wins", "--store", root / "nn.db"]
    jobs["optim"] = ["--store", root / "optim.db", "train", "--dry-run", "--config", root / "cfg.json"]
    return root, batch(jobs)


@pytest.mark.parametrize("mode", MODES)
def test_dry_run_of_every_mode_prints_a_run_id(dry, mode):
    root, results = dry
    r = results[mode]
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    [run] = runs_in(str(root / f"{mode}.db"))
    assert run["id"] == run_id and run["status"] == "finished" and run["config"]["mode"] == mode
    assert run["step"] == run["total_steps"] == 3
    assert "device: cpu" in r.stderr and "finished" in r.stderr


def test_config_files_toml_and_json(dry):
    root, results = dry
    for key in ("nn", "optim"):
        assert results[key].returncode == 0, results[key].stderr
    [toml_run] = runs_in(str(root / "nn.db"))
    c = toml_run["config"]
    assert (c["mode"], c["arch"], c["lr"], toml_run["name"]) == ("nn", "parallel_block", 0.05, "flag wins")
    [json_run] = runs_in(str(root / "optim.db"))
    c = json_run["config"]
    assert (c["mode"], c["optimizer"], c["momentum"], c["nesterov"], c["depth"]) == ("optim", "sgd", 0.9, True, 3)
    assert json_run["name"] == "from json" and json_run["status"] == "finished"


# ---------------------------------------------------------------------------------------------
# runs and metrics


@pytest.fixture(scope="module")
def run_300(tmp_path_factory):
    """A 300-step run, made in-process, then read back through the CLI."""
    from engine import RunConfig

    store = str(tmp_path_factory.mktemp("cli-metrics") / "liveprop.db")
    cfg = RunConfig(
        mode="autograd",
        arch="mlp",
        d_in=10,
        hidden=6,
        d_out=2,
        n_samples=16,
        batch_size=16,
        steps=300,
        telemetry_every=100,
        flush_every=64,
        hist_bins=4,
        device="cpu",
        lr=1e-3,
    )
    run_id, status = run_in_process(cfg, store)
    assert status == "finished"
    s = Store(store)
    loss = s.scalars(run_id, "loss")
    s.close()
    results = batch(
        {
            "csv": ["metrics", run_id, "--format", "csv", "--store", store],
            "json": ["metrics", run_id, "--format", "json", "--store", store],
            "runs": ["runs", "--store", store],
        }
    )
    return run_id, loss, results


def test_metrics_csv_is_the_full_series(run_300):
    run_id, loss, results = run_300
    r = results["csv"]
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(table) == 300 == len(loss)
    assert [int(row["step"]) for row in table] == list(range(300))
    assert [float(row["loss"]) for row in table] == [v for _, v in loss]
    assert {row["step"] for row in table if row.get("grad_norm/w1")} == {"0", "100", "200", "299"}


def test_metrics_json_is_the_full_series(run_300):
    run_id, loss, results = run_300
    r = results["json"]
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["run"] == run_id
    assert [tuple(p) for p in doc["series"]["loss"]] == loss
    assert len(doc["series"]["loss"]) == 300
    assert len(doc["series"]["lr"]) == 4


def test_runs_prints_a_table(run_300):
    run_id, loss, results = run_300
    r = results["runs"]
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.strip().splitlines()
    assert header.split()[:4] == ["run", "status", "mode", "arch"]
    [row] = rows
    assert row.split()[:4] == [run_id, "finished", "autograd", "mlp"]
    assert "300/300" in row and f"{loss[-1][1]:.4g}" in row


def test_a_reader_that_closes_the_pipe_early_ends_every_command_quietly(tmp_path):
    """`python -m engine ... | head` where head has already gone: every write meets a closed pipe."""
    store = str(tmp_path / "liveprop.db")
    run_id = "20260101-000000-0000a1"
    s = Store(store)
    s.create_run(run_id, vars(RunConfig(mode="manual")), total_steps=10)
    s.close()
    commands = {
        "runs": ["runs"],
        "runs json": ["runs", "--format", "json"],
        "metrics": ["metrics", run_id],
        "metrics json": ["metrics", run_id, "--format", "json"],
        "help": ["train", "--help"],
    }
    read, write = os.pipe()
    os.close(read)  # the reader is gone before any command writes a byte
    try:
        procs = {
            k: subprocess.Popen(
                cli_cmd(*argv, "--store", store),
                cwd=REPO,
                env=cli_env(store),
                stdin=subprocess.DEVNULL,
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k, argv in commands.items()
        }
    finally:
        os.close(write)
    ended = {k: (p.communicate(timeout=180)[1], p.returncode) for k, p in procs.items()}
    assert {k: stderr for k, (stderr, _) in ended.items()} == {k: "" for k in commands}
    # 141: a shell's status for a process that SIGPIPE ended; argparse's help ignores a failed write itself
    assert {k: code for k, (_, code) in ended.items()} == {**{k: 141 for k in commands}, "help": 0}


# ---------------------------------------------------------------------------------------------
# controlling a detached run


def test_detached_run_is_controlled_from_the_cli(cli, tmp_path):
    store = str(tmp_path / "liveprop.db")
    r = cli(
        "train",
        "--detach",
        "--mode",
        "nn",
        "--arch",
        "mlp",
        "--d-in",
        10,
        "--hidden",
        6,
        "--n-samples",
        16,
        "--batch-size",
        16,
        "--steps",
        10**7,
        "--flush-seconds",
        0.05,
        "--telemetry-every",
        1000,
        "--lr",
        0.001,
        "--store",
        store,
    )
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]

    def step():
        s = Store(store)
        try:
            return s.get_run(run_id)["step"]
        finally:
            s.close()

    wait_for(lambda: step() > 100, timeout=60, what="the detached worker to train")

    for argv, expect in (
        (["pause", run_id], "pause: ok"),
        (["set-lr", run_id, "0.0005"], "set_lr: ok"),
        (["resume", run_id], "resume: ok"),
        (["stop", run_id], "stop: ok"),
    ):
        c = cli(*argv, "--wait", 30, "--store", store)
        assert c.returncode == 0 and c.stdout.strip() == expect, (argv, c.stdout, c.stderr)

    s = Store(store)
    try:
        run = wait_for(
            lambda: (lambda r: r if r["status"] not in ("running", "paused") else None)(s.get_run(run_id)),
            timeout=30,
            what="the stop",
        )
        kinds = [
            (e["kind"], e["data"]) for e in s.events(run_id) if e["kind"] in ("pause", "resume", "lr_change", "stop")
        ]
    finally:
        s.close()
    assert run["status"] == "stopped", run["error"]
    assert kinds == [
        ("pause", {"reason": "command"}),
        ("lr_change", {"old": 0.001, "new": 0.0005}),
        ("resume", {}),
        ("stop", {}),
    ]
    assert torch.load(run["checkpoint"], weights_only=True)["step"] == run["step"]


# ---------------------------------------------------------------------------------------------
# bad input: exit status 2, one line on stderr, nothing written


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-inputs")
    (d / "bad.csv").write_text("a,b,y\n1,2,3\n4,five,6\n")
    (d / "bad.toml").write_text('mode = "nn"\nlr = \n')
    (d / "bad.json").write_text('{"mode": "nn",')
    (d / "list.json").write_text('["mode", "nn"]')
    (d / "unknown.toml").write_text('mood = "nn"\n')
    (d / "zero.toml").write_text("lr = 0.0\n")
    (d / "steps.toml").write_text("steps = 2.9\n")
    (d / "steps.json").write_text('{"steps": 2.9}')
    (d / "steps-true.toml").write_text("steps = true\n")
    (d / "shuffle.toml").write_text("shuffle = 2\n")
    (d / "bias.json").write_text('{"bias": "maybe"}')
    return d


BAD = {
    "unknown mode": (["--mode", "warp"], "unknown mode 'warp'"),
    "unknown arch": (["--arch", "transformer"], "unknown arch"),
    "unknown dataset": (["--dataset", "imagenet"], "unknown dataset"),
    "unknown optimizer": (["--mode", "optim", "--optimizer", "lbfgs"], "unknown optimizer"),
    "unknown torchvision model": (
        ["--mode", "optim", "--arch", "torchvision", "--tv-model", "resnet9000", "--dataset", "digits"],
        "unknown torchvision model",
    ),
    "unknown sampler": (["--sampler", "fair"], "unknown sampler"),
    "lr 0": (["--lr", "0"], "learning rate"),
    "lr -1": (["--lr", "-1"], "learning rate"),
    "lr nan": (["--lr", "nan"], "learning rate"),
    "lr inf": (["--lr", "inf"], "learning rate"),
    "lr not a number": (["--lr", "fast"], "--lr"),
    "batch size 0": (["--batch-size", "0"], "batch_size"),
    "negative steps": (["--steps", "-5"], "steps"),
    "hidden too big": (["--hidden", "100000000"], "GiB"),
    "data too big": (["--n-samples", "100000000000"], "GiB"),
    "csv not numeric": (
        ["--mode", "nn", "--dataset", "csv", "--csv-path", "{d}/bad.csv", "--csv-target", "y"],
        "line 3, column 'b'",
    ),
    "csv missing": (
        ["--mode", "nn", "--dataset", "csv", "--csv-path", "{d}/nope.csv", "--csv-target", "y"],
        "not found",
    ),
    "image folder missing": (["--mode", "nn", "--dataset", "imagefolder", "--image-dir", "{d}/no-images"], "not found"),
    "toml does not parse": (["--config", "{d}/bad.toml"], "does not parse"),
    "json does not parse": (["--config", "{d}/bad.json"], "does not parse"),
    "json not a table": (["--config", "{d}/list.json"], "top level"),
    "config missing": (["--config", "{d}/missing.toml"], "not found"),
    "config unknown key": (["--config", "{d}/unknown.toml"], "unknown config key 'mood'"),
    "config lr 0": (["--config", "{d}/zero.toml"], "learning rate"),
    "toml steps 2.9": (["--config", "{d}/steps.toml"], "steps must be a whole number, got 2.9"),
    "json steps 2.9": (["--config", "{d}/steps.json"], "steps must be a whole number, got 2.9"),
    "toml steps true": (["--config", "{d}/steps-true.toml"], "steps: True is not a valid int"),
    "toml bool 2": (["--config", "{d}/shuffle.toml"], "shuffle must be true or false, got 2"),
    "json bool maybe": (["--config", "{d}/bias.json"], "bias must be true or false, got 'maybe'"),
    "nonsense pair": (["--mode", "manual", "--arch", "cnn", "--dataset", "digits"], "nn or optim"),
    "cuda without cuda": (["--device", "cuda"], "no CUDA device"),
}
# caught by argparse, the memory estimate, the data, the device check and the file's types, each in a real process
SUBPROCESS = ("lr not a number", "hidden too big", "csv not numeric", "cuda without cuda", "toml steps 2.9")


def bad_argv(name, d, store):
    flags, _ = BAD[name]
    return ["train", *(f.format(d=d) for f in flags), "--store", store]


def skip_cuda_case(name):
    if name == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is good input here")


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_with_one_line_in_process(name, inputs, tmp_path, capsys):
    skip_cuda_case(name)
    store = str(tmp_path / "store" / "liveprop.db")
    try:
        code = main([str(a) for a in bad_argv(name, inputs, store)])
    except SystemExit as e:  # argparse's errors exit from inside
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("liveprop: error: "), err
    assert BAD[name][1] in lines[0], lines[0]
    assert out == ""
    assert not os.path.exists(store) and not os.path.exists(os.path.dirname(store)), "the store was written"


def test_bad_input_exits_2_with_one_line_as_a_subprocess(inputs, tmp_path):
    names = [n for n in SUBPROCESS if not (n == "cuda without cuda" and torch.cuda.is_available())]
    stores = {n: str(tmp_path / n.replace(" ", "-") / "liveprop.db") for n in names}
    results = batch({n: bad_argv(n, inputs, stores[n]) for n in names})
    for n, r in results.items():
        lines = r.stderr.splitlines()
        assert r.returncode == 2, (n, r.stderr)
        assert len(lines) == 1 and BAD[n][1] in lines[0], (n, r.stderr)
        assert r.stdout == "", (n, r.stdout)
        assert not os.path.exists(stores[n]), f"{n}: the store was written"


def test_a_whole_number_written_as_a_float_is_an_int(tmp_path):
    (tmp_path / "a.toml").write_text("steps = 3.0\nshuffle = 0\n")
    (tmp_path / "a.json").write_text('{"steps": 3.0, "shuffle": "off", "d_in": "12"}')
    for name in ("a.toml", "a.json"):
        cfg = from_dict(load_file(str(tmp_path / name)))
        assert type(cfg.steps) is int and (cfg.steps, cfg.shuffle) == (3, False)


# ---------------------------------------------------------------------------------------------
# a --store that cannot be a store: one line, exit 2, nothing created, for every command that opens it

STORE_COMMANDS = {
    "train": ["train", "--dry-run"],
    "runs": ["runs"],
    "metrics": ["metrics", "some-run"],
    "pause": ["pause", "some-run"],
    "delete": ["delete", "some-run"],
}


def bad_store(kind, root):
    """A --store path under root that cannot be a run store."""
    (root / "a-folder").mkdir(exist_ok=True)
    (root / "a-file.txt").write_text("not a database\n" * 8)
    paths = {
        "folder": root / "a-folder",
        "under a file": root / "a-file.txt" / "x.db",
        "not sqlite": root / "a-file.txt",
    }
    return str(paths[kind])


def tree(root):
    """Every path under root, with a file's bytes: to see that nothing was created or changed."""
    return {str(p): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("kind", ["folder", "under a file", "not sqlite"])
@pytest.mark.parametrize("command", list(STORE_COMMANDS))
def test_a_store_that_cannot_be_one_is_one_line_in_process(command, kind, tmp_path, capsys):
    store = bad_store(kind, tmp_path)
    before = tree(tmp_path)
    code = main([*STORE_COMMANDS[command], "--store", store])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 1, (out, err)
    assert lines[0].startswith("liveprop: error: ") and store in lines[0], lines
    assert ("is a folder" if kind == "folder" else "cannot open the run store") in lines[0]
    assert tree(tmp_path) == before


def test_a_store_that_is_a_folder_is_one_line_as_a_subprocess(tmp_path):
    store = bad_store("folder", tmp_path)
    results = batch({c: [*STORE_COMMANDS[c], "--store", store] for c in ("train", "runs")})
    for c, r in results.items():
        assert r.returncode == 2 and r.stdout == "", (c, r.stderr)
        assert (
            r.stderr == f"liveprop: error: the run store {store} is a folder; give a file, e.g. {store}/liveprop.db\n"
        )
    assert os.listdir(store) == []


@pytest.mark.parametrize(
    "argv,message",
    [
        (["fly"], "invalid choice: 'fly'"),
        (["metrics", "no-such-run"], "no run 'no-such-run'"),
        (["pause", "no-such-run"], "no run 'no-such-run'"),
        (["set-lr", "no-such-run", "0"], "learning rate must be a positive finite number"),
    ],
)
def test_unknown_command_and_unknown_run(argv, message, tmp_path, capsys):
    store = str(tmp_path / "liveprop.db")
    try:
        code = main([*argv, "--store", store])
    except SystemExit as e:
        code = e.code
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert runs_in(store) == []


def test_delete_removes_a_finished_run_and_refuses_an_unknown_one(cli, small, store):
    from engine.store.files import RunFiles

    run_id, status = run_in_process(small(steps=3), store)
    assert status == "finished" and RunFiles.of(run_id, store).checkpoint.is_file()
    r = cli("delete", run_id, store=store)
    assert r.returncode == 0 and r.stdout.strip() == f"deleted {run_id}", r.stderr
    assert get_run(run_id, store) is None and RunFiles.of(run_id, store).existing() == []
    r = cli("delete", run_id, store=store)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.strip() == f"liveprop: error: no run {run_id!r}"


# ---------------------------------------------------------------------------------------------
# commands that make no sense now, and the learning rate now


def test_resume_while_running_and_pause_while_paused_exit_non_zero_and_runs_shows_the_lr_now(
    small, store, capsys, monkeypatch
):
    cfg = small(mode="nn", arch="mlp", dataset="teacher", steps=10**7, telemetry_every=500, flush_seconds=0.05, lr=1e-3)
    run_id = launch(cfg, store)
    wait_for(lambda: get_run(run_id, store)["step"] > 50, timeout=60, what="the worker to train")

    def cli(*argv):
        code = main([*map(str, argv), "--store", store])
        out, err = capsys.readouterr()
        return code, out, err.splitlines()

    def status(wanted):
        wait_for(lambda: get_run(run_id, store)["status"] == wanted, what=f"status {wanted}")

    # refused before anything is sent (runs.py), so the dashboard gets the same answer
    assert cli("resume", run_id) == (2, "", [f"liveprop: error: run {run_id} is already running; resume does nothing"])
    assert cli("pause", run_id, "--wait", 30) == (0, "pause: ok\n", [])
    status("paused")
    assert cli("pause", run_id) == (2, "", [f"liveprop: error: run {run_id} is already paused; pause does nothing"])

    # a command the status allowed but the worker ignored (the status changed in between) exits 1
    def send_anyway(run_id, store=None):
        s = Store(store)
        try:
            return s.send_control(run_id, "pause")
        finally:
            s.close()

    monkeypatch.setattr(runs, "pause", send_anyway)
    assert cli("pause", run_id, "--wait", 30) == (1, "", ["liveprop: error: the worker ignored pause while paused"])

    # runs: the rate now, after a set-lr, in the table and in JSON
    assert cli("resume", run_id, "--wait", 30)[:2] == (0, "resume: ok\n")
    status("running")
    assert cli("set-lr", run_id, 5e-4, "--wait", 30)[:2] == (0, "set_lr: ok\n")
    s = Store(store)
    try:
        wait_for(lambda: current_lr(run_id, s) == 5e-4, what="the lr_change event in the store")
    finally:
        s.close()
    code, out, _ = cli("runs", "--format", "json")
    [row] = json.loads(out)
    assert code == 0 and (row["current_lr"], row["config"]["lr"]) == (5e-4, 1e-3)
    code, out, _ = cli("runs")
    [row] = out.splitlines()[1:]
    assert code == 0 and row.split()[:6] == [run_id, "running", "nn", "mlp", "-", "5.0e-04"], row
    assert cli("stop", run_id, "--wait", 30)[:2] == (0, "stop: ok\n")


@pytest.mark.parametrize(
    "seconds,text",
    [
        (0, "00:00"),
        (59.4, "00:59"),
        (754, "12:34"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (3723, "1:02:03"),
        (100 * 3600 + 61, "100:01:01"),
        (float("inf"), "--:--"),
        (float("nan"), "--:--"),
    ],
)
def test_eta_shows_hours_past_an_hour(seconds, text):
    assert eta_text(seconds) == text
