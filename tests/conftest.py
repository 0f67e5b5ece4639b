"""Shared fixtures for the engine tests.

Every test gets its own run store under tmp_path (LIVEPROP_STORE points there too, so nothing can
reach the project's runs/ store), and every background worker and standby a test starts is killed
at the end of the test if it is still alive. Sizes are tiny unless a test is about the lecture's sizes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

# One intra-op thread, here and in every worker and CLI subprocess (they inherit the environment).
# The machine is small and shared: with two OpenMP threads and a busy neighbour, a tiny ResNet step
# went from 0.07 s to 2.7 s. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# No warm standbys (engine/runs/standby.py), unless a test turns them on: each test has its own store, so a
# standby started after a launch would only import torch beside the test's worker and be killed
# unused. tests/test_engine_standby.py tests them; LIVEPROP_STANDBY=1 runs the whole suite with them.
os.environ.setdefault("LIVEPROP_STANDBY", "0")

REPO = Path(__file__).resolve().parent.parent
ACTIVE = ("queued", "running", "paused")

# the tiny configuration most tests start from: D_in, H, D_out = 20, 8, 3 on 16 samples
SMALL = dict(
    d_in=20,
    hidden=8,
    d_out=3,
    n_samples=16,
    batch_size=16,
    steps=5,
    telemetry_every=2,
    flush_every=4,
    hist_bins=8,
    device="cpu",
)


# ---------------------------------------------------------------------------------------------
# stores and worker clean-up


# Settings a developer may have exported that would change what the tests see: a Visdom server their
# test did not start, the exposed mode's password gate, a data root that confines every path.
FROM_THE_DEVELOPER = (
    "LIVEPROP_VISDOM_URL",
    "LIVEPROP_PASSWORD",
    "LIVEPROP_PASSWORD_HASH",
    "LIVEPROP_DATA_ROOT",
    "LIVEPROP_VISDOM_PASSWORD",
)


@pytest.fixture(autouse=True, scope="session")
def _session_store(tmp_path_factory):
    """LIVEPROP_STORE points into the session's temp dir for every test and every subprocess."""
    import torch

    torch.set_num_threads(1)  # in case torch was imported before the variables above were set
    base = tmp_path_factory.mktemp("default-store")
    saved = {k: os.environ.get(k) for k in ("LIVEPROP_STORE", *FROM_THE_DEVELOPER)}
    os.environ["LIVEPROP_STORE"] = str(base / "liveprop.db")
    for k in FROM_THE_DEVELOPER:  # a test that wants one sets it
        os.environ.pop(k, None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    kill_workers(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def _reap_workers(tmp_path):
    yield
    kill_workers(tmp_path)


def _argv(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _is_worker(pid: int, run_id: str, db: Path | None = None) -> bool:
    """Only a process that is our `python -m engine worker RUN`, or the standby of the run's store
    that claimed it (`python -m engine standby --store DB`), is ever killed."""
    argv = _argv(pid)
    if b"engine" not in argv:
        return False
    return (b"worker" in argv and run_id.encode() in argv) or (db is not None and _is_standby(argv, Path(db).parent))


def _is_standby(argv: list[bytes], root: Path) -> bool:
    """`python -m engine standby --store S` with S under root."""
    if b"standby" not in argv or b"--store" not in argv or argv.index(b"--store") + 1 >= len(argv):
        return False
    store = Path(os.fsdecode(argv[argv.index(b"--store") + 1]))
    return b"engine" in argv and store.is_absolute() and store.is_relative_to(root)


def kill_workers(root: Path) -> None:
    """SIGKILL the worker of every still-active run in every store under root, and every standby
    of a store under root (waiting ones are in no run)."""
    pids = set()
    for db in Path(root).rglob("*.db"):
        try:
            con = sqlite3.connect(db, timeout=5)
            rows = con.execute("SELECT id, pid, status FROM runs").fetchall()
            con.close()
        except sqlite3.Error:
            continue
        pids |= {pid for run_id, pid, status in rows if pid and status in ACTIVE and _is_worker(pid, run_id, db)}
    pids |= {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_standby(_argv(int(p.name)), root)}
    for pid in pids:
        try:  # a launched worker or standby leads its own process group; one a test started may not
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh run store path (the file does not exist yet)."""
    return str(tmp_path / "runs" / "liveprop.db")


# ---------------------------------------------------------------------------------------------
# configs and runs


@pytest.fixture
def small():
    """small(**overrides) -> a RunConfig with tiny sizes on the CPU."""
    from engine import RunConfig

    def make(**kw):
        return RunConfig(**{**SMALL, **kw})

    return make


def run_in_process(cfg, store, callbacks=None):
    """(run_id, status): create the run and train it with the worker's own body, in this process.

    Faster than a subprocess, and monkeypatches apply. run_worker installs SIGTERM and SIGINT
    handlers for the worker; pytest's own are put back afterwards."""
    from engine.runs import api as runs
    from engine.runs import worker

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_id, _ = runs.create_run(cfg, store)
        status = worker.run_worker(run_id, store, callbacks=callbacks)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return run_id, status


@pytest.fixture
def run_inprocess():
    """run_inprocess(cfg, store, callbacks=None) -> (run_id, status); see run_in_process."""
    return run_in_process


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    """Poll until predicate() is truthy; return its value, or fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# the CLI as a subprocess


def cli_env(store: str | None = None) -> dict:
    env = dict(os.environ)
    if store:
        env["LIVEPROP_STORE"] = store
    return env


def cli_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "engine", *map(str, args)]


@pytest.fixture
def cli():
    """cli(*args, store=None, timeout=120) -> CompletedProcess of `python -m engine ARGS`."""

    def run(*args, store=None, timeout=120):
        return subprocess.run(
            cli_cmd(*args),
            cwd=REPO,
            env=cli_env(store),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

    return run


@pytest.fixture
def servers(tmp_path):
    """start(port=0) -> a started Visdom server on loopback; all are stopped afterwards."""
    from engine.sinks.visdom import server as visdom_server

    started = []

    def start(port=0):
        s = visdom_server.start(port=port, env_path=tmp_path / "env")
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


# ---------------------------------------------------------------------------------------------
# spotting host syncs on the CPU

ENGINE_DIR = str(REPO / "engine") + os.sep
WATCHED_DIRS = (ENGINE_DIR, str(REPO / "liveprop") + os.sep)  # the code whose syncs count: the engine's and liveprop's
# torch code that calls .item()/.tolist() on tensors that live on the host even in a CUDA run:
# torch.optim's step counters, and the DataLoader's sampler indices
HOST_SIDE_DIRS = tuple(os.sep + os.path.join("torch", *d) + os.sep for d in (("optim",), ("utils", "data")))
SYNC_METHODS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__complex__",
    "__format__",
    "__repr__",
    "nonzero",
)


class SyncSpy:
    """Records every tensor call that would make the host wait for the device, made while engine (or liveprop)
    code is on the stack: item, tolist, cpu, numpy, bool/float/int conversion, printing, nonzero, and
    boolean-mask indexing (the lecture's grad_h[h < 0] = 0). torch.set_sync_debug_mode does this
    for real, but only on CUDA; this works on the CPU, by structure.

    Calls made inside `with spy.allowed():` (the flush) are not counted, nor are those torch itself
    makes on tensors that stay on the host in a CUDA run too (HOST_SIDE_DIRS)."""

    def __init__(self, monkeypatch):
        import torch

        self.calls = []  # (what, "file:line" of the innermost engine frame)
        self._allowed = 0
        for name in SYNC_METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        for name in ("__getitem__", "__setitem__"):
            monkeypatch.setattr(torch.Tensor, name, self._wrap_index(name, getattr(torch.Tensor, name)))

    def allowed(self):
        spy = self

        class _Allowed:
            def __enter__(self):
                spy._allowed += 1

            def __exit__(self, *exc):
                spy._allowed -= 1

        return _Allowed()

    def _note(self, what):
        if self._allowed:
            return
        frame = sys._getframe(2)  # the caller of the patched method
        if any(d in frame.f_code.co_filename for d in HOST_SIDE_DIRS):
            return
        while frame is not None:
            if frame.f_code.co_filename.startswith(WATCHED_DIRS):
                self.calls.append((what, f"{os.path.relpath(frame.f_code.co_filename, REPO)}:{frame.f_lineno}"))
                return
            frame = frame.f_back

    def _wrap(self, name, original):
        def patched(tensor, *args, **kwargs):
            self._note(name)
            return original(tensor, *args, **kwargs)

        return patched

    def _wrap_index(self, name, original):
        import torch

        def is_mask(index):
            items = index if isinstance(index, tuple) else (index,)
            return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

        def patched(tensor, index, *args):
            if is_mask(index):
                self._note(f"{name} with a boolean mask")
            return original(tensor, index, *args)

        return patched


@pytest.fixture
def sync_spy(monkeypatch):
    return SyncSpy(monkeypatch)


@contextlib.contextmanager
def syncs_refused_but_in_flush(trainer):
    """CUDA: inside the block, any host sync raises (torch.cuda.set_sync_debug_mode("error")), except in
    trainer.flush, which is the one place allowed to wait for the device."""
    import torch

    real_flush, armed = trainer.flush, []

    def flush():
        torch.cuda.set_sync_debug_mode(0)
        try:
            return real_flush()
        finally:
            if armed:
                torch.cuda.set_sync_debug_mode("error")

    trainer.flush = flush
    torch.cuda.synchronize()
    armed.append(True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        armed.clear()
        torch.cuda.set_sync_debug_mode(0)
        trainer.flush = real_flush


class NanFrom:
    """A mode whose loss is NaN from step `bad` on (a Python counter: no sync to make it so)."""

    def __init__(self, mode, bad):
        self.mode, self.bad, self.n = mode, bad, 0

    def __getattr__(self, name):
        return getattr(self.mode, name)

    def forward_backward(self, x, y):
        loss = self.mode.forward_backward(x, y)
        self.n += 1
        return loss * float("nan") if self.n > self.bad else loss


# ---------------------------------------------------------------------------------------------
# the fault table (make fault; a fast subset runs in make test)
#
# Two kinds of rows. A test marked @pytest.mark.fault("case") counts as one trial of that case,
# failed when the test fails (the hostile inputs, each refused in one line). A test that runs its
# own trials (kill -9 at random moments, ...) records them with the fault_table fixture:
# fault_table.add(case, trials, failures, points_lost). LIVEPROP_FAULT_FULL=1 (make fault) asks
# those tests for the campaign's full number of trials.

FAULT_FULL = os.environ.get("LIVEPROP_FAULT_FULL") == "1"
FAULT_ROWS: dict[str, list] = {}  # case -> [trials, failures, points lost, note], in the process that reports


def trials(fast: int, full: int) -> int:
    """How many trials a fault test runs: `full` under make fault, `fast` in make test."""
    return full if FAULT_FULL else fast


class FaultTable:
    """A test's own rows. They travel in its report's user_properties, which pytest-xdist carries from the
    worker that ran the test to the process that prints the table."""

    def __init__(self, node):
        self.node = node

    def add(self, case: str, trials: int, failures: int, lost: int | str = 0, note: str = ""):
        self.node.user_properties.append(("fault_row", (case, trials, failures, lost, note)))


@pytest.fixture
def fault_table(request) -> FaultTable:
    return FaultTable(request.node)


def _add_row(case, trials, failures, lost, note):
    row = FAULT_ROWS.setdefault(case, [0, 0, 0, ""])
    row[0] += trials
    row[1] += failures
    row[2] = lost if isinstance(lost, str) else (row[2] if isinstance(row[2], str) else row[2] + lost)
    row[3] = note or row[3]


def pytest_configure(config):
    config.addinivalue_line("markers", "fault(case): one trial of a fault case in the fault table (make fault)")
    config.addinivalue_line("markers", "full: a slow check that make fault runs and make test leaves out")


# The files that take a minute or more, the longest first. They run before the rest, so that make test's two
# pytest-xdist workers (each file in one) end together instead of one waiting out a long file at the end.
LONG_FILES = (
    "test_dashboard_browser.py",
    "test_engine_cli.py",
    "test_distributed.py",
    "test_browser_forensics.py",
    "test_landscape.py",
    "test_plan_browser.py",
    "test_engine_standby.py",
    "test_engine_worker.py",
    "test_browser_playground.py",
    "test_liveprop_watch.py",
    "test_faults.py",
    "test_config_fuzz.py",
    "test_engine_resume.py",
    "test_browser_watch.py",
    "test_bench_report.py",
    "test_dashboard_injection.py",
    "test_visdom_sink.py",
    "test_visdom_server.py",
    "test_exposed.py",
    "test_faults_visdom.py",
    "test_dashboard_app.py",
)


def pytest_collection_modifyitems(config, items):
    """The long files first (LONG_FILES), the rest in their order. make test leaves out the `full` checks (minutes
    each); make fault (LIVEPROP_FAULT_FULL=1) runs them."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
    if FAULT_FULL:
        return
    skip = pytest.mark.skip(reason="a slow full check: make fault runs it")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report):
    """A test with rows of its own adds them; a test marked fault("case") counts as one trial of it."""
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    rows = [value for key, value in report.user_properties if key == "fault_row"]
    for row in rows:
        _add_row(*row)
    marker = next((value for key, value in report.user_properties if key == "fault_marker"), None)
    if rows or marker is None:
        return
    if report.skipped:
        why = str(report.longrepr[-1]).removeprefix("Skipped: ")
        FAULT_ROWS.setdefault(marker, [0, 0, "–", ""])[3] = f"skipped: {why}"
        return
    row = FAULT_ROWS.setdefault(marker, [0, 0, "–", ""])
    row[0] += 1
    row[1] += report.failed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()  # a list of its own: item.user_properties is shared by the three phases
    markers = [("fault_marker", m.args[0]) for m in item.iter_markers("fault")]
    report.user_properties = [*report.user_properties, *markers]


def pytest_terminal_summary(terminalreporter):
    if not FAULT_ROWS or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    w = max(len(c) for c in FAULT_ROWS)
    terminalreporter.section(f"fault table ({'make fault: full' if FAULT_FULL else 'make test: the fast subset'})")
    terminalreporter.line(f"{'case':<{w}}  {'trials':>6}  {'failures':>8}  {'points lost':>11}  note")
    for case, (n, failed, lost, note) in sorted(FAULT_ROWS.items()):
        terminalreporter.line(f"{case:<{w}}  {n:>6}  {failed:>8}  {lost!s:>11}  {note}")
