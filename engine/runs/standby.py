"""The warm standby: a worker process that has imported torch already, waiting for the next run.

A new worker process spends 1.5-5 s importing torch before its first step (bench/bench_dashboard.py,
"worker start-up"), most of the wait between Start and the first point. So each store keeps one
standby, started detached like a worker (`python -m engine standby --store S`, its own session):

    start    import torch and the worker (CUDA stays uninitialised: no device memory held), take
             the store's standby lock (flock: one standby per store, freed by the kernel even on
             kill -9), listen on a UNIX socket in the store's folder (engine/store/files.py StandbyFiles)
    claimed  launch (engine/runs/api.py) connects and offers the run; the standby answers "ok PID",
             launch answers "go". The standby frees its lock and socket, closes the connection,
             takes the launcher's environment, sends its output to the run's log (dup2) and runs
             worker.run_worker, exactly as `python -m engine worker RUN`: its pid is the run's pid,
             it leads its own process group, so signals, kill and delete_run work as for any worker
    refused  no answer within HANDOFF_S, a refusal, a dead standby, no socket: launch spawns a plain
             worker, as it always did. A failed hand-over never fails a launch. A standby that
             refuses a run exits, so that the next one started is one that fits
    next     after either, a thread in the launcher starts a new standby, NEXT_AFTER_S later (not
             beside the new run's start) and once the claimed one has closed the connection (its
             lock is free); launch does not wait for it
    idle     unclaimed for $LIVEPROP_STANDBY_IDLE seconds (10 minutes), it exits; retire() asks it to

A standby refuses a run when it would not be the worker a fresh process is: another store, another
Python, engine source changed since it started (a student editing a mode gets the edit), or a
variable read at start-up (START_UP_VARS: thread counts, library paths) that differs. Other
variables (the Visdom URL and login, ...) it takes from the launcher. LIVEPROP_STANDBY=0 turns
standbys off: launch then behaves as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from engine.store.files import RunFiles, StandbyFiles
from engine.store.db import PROJECT, default_path

HANDOFF_S = 0.2  # launch waits this long for the standby's answer, then spawns a plain worker
IDLE_S = 600.0  # an unclaimed standby exits after this long ($LIVEPROP_STANDBY_IDLE)
# the next standby starts this long after a launch, so that its torch import (1.5 s of CPU and more)
# does not compete with the new run's first point (the worker's part takes 0.1-0.2 s, the dashboard's
# refresh and drawing the rest of a second). On 2 busy CPUs, starting it at once made the median
# first point 1.5-1.9 s instead of 1.1 s (bench/bench_dashboard.py). A Start that comes sooner than
# NEXT_AFTER_S plus the import gets a plain worker.
NEXT_AFTER_S = 1.0
# variables read when Python, OpenMP and torch start: a standby cannot take new values from the launcher
START_UP_VARS = ("PYTHON", "LD_", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH_", "CUDA_", "NVIDIA_")


class Claim(NamedTuple):
    conn: socket.socket  # the standby closes it once its lock is free
    pid: int  # the standby's, now the run's worker


def enabled() -> bool:
    return os.environ.get("LIVEPROP_STANDBY", "1") != "0"


def detached(argv: list[str], log) -> subprocess.Popen:
    """Start argv as a process of its own session (it outlives the dashboard or the CLI that started it), its
    output appended to `log`, with the workers' environment; a thread reaps it, so no zombie lingers."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=PROJECT,
            env=worker_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def worker_env() -> dict:
    """The environment of every worker, plain or standby."""
    # torch's OpenMP threads (GNU libgomp) wait for the next op by spinning, then sleep. The default spin
    # lasts long enough that beside busy processes on a small machine they fight them for the CPU: the
    # lecture's manual loop on 2 cores beside 2 busy processes ran 975 steps/s. Sleeping at once
    # (OMP_WAIT_POLICY=PASSIVE) made every op wake its threads: 1,350 steps/s alone, against 4,970 by
    # default. A short spin keeps both: 4,970 alone, 2,090 beside the busy ones (bench/results/, issue 11).
    # A setting already in the environment wins.
    return {"GOMP_SPINCOUNT": "30000", **os.environ}


# ---------------------------------------------------------------------------------------------
# the launcher's side


def warm(store: str | None = None) -> None:
    """Start the store's standby unless one lives (or is starting), or standbys are off. Returns at once."""
    store_path = os.path.abspath(store or default_path())
    files = StandbyFiles.of(store_path)
    if not enabled() or files.socket is None:
        return
    files.log.parent.mkdir(parents=True, exist_ok=True)
    if _held(files.lock):
        return
    detached([sys.executable, "-m", "engine", "standby", "--store", store_path], files.log)


def hand_over(run_id: str, store_path: str) -> Claim | None:
    """Offer run_id to the store's standby: the claim once it has taken the run; None when standbys
    are off, there is none, it refuses, or it does not answer within HANDOFF_S."""
    if not enabled():
        return None
    store_path = os.path.abspath(store_path)
    offer = {"run": run_id, "store": store_path, "python": sys.executable, "code": _code_stamp(), "env": worker_env()}
    answer, conn = _ask(offer, store_path)
    try:
        if answer[:1] == [b"ok"]:
            conn.sendall(b"go\n")
            return Claim(conn, int(answer[1]))
    except (OSError, ValueError, IndexError):
        pass
    conn.close()
    return None


def warm_next(store_path: str, claim: Claim | None) -> None:
    """In a thread: wait NEXT_AFTER_S and for the claimed standby to free its lock, then start the next one."""

    def run():
        time.sleep(NEXT_AFTER_S)
        if claim:
            with claim.conn, contextlib.suppress(OSError):
                claim.conn.settimeout(5.0)
                _read_line(claim.conn)
        try:
            warm(store_path)
        except OSError as e:  # the next launch spawns a plain worker; say why there was no standby
            print(f"liveprop: no standby started for {store_path}: {e}", file=sys.stderr)

    if enabled():
        threading.Thread(target=run, daemon=True).start()


def retire(store: str | None = None) -> bool:
    """Make the store's waiting standby exit; False when none was waiting."""
    answer, conn = _ask({"retire": True}, os.path.abspath(store or default_path()))
    conn.close()
    return answer == [b"bye"]


def _ask(offer: dict, store_path: str) -> tuple[list[bytes], socket.socket]:
    """Send the offer; the standby's answer as words ([] when none came within HANDOFF_S)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = StandbyFiles.of(store_path).socket
    deadline = time.monotonic() + HANDOFF_S
    try:
        if path is None:
            return [], conn
        conn.settimeout(HANDOFF_S)
        conn.connect(str(path))  # at once: absent or refused when no standby listens
        conn.sendall(json.dumps(offer).encode() + b"\n")
        answer = _read_line(conn).split()
        return (answer if time.monotonic() < deadline else []), conn
    except (OSError, ValueError):
        return [], conn


def _held(lock: Path) -> bool:
    """Whether a standby holds the lock now."""
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False  # closing the file frees it again
        except BlockingIOError:
            return True


# ---------------------------------------------------------------------------------------------
# the standby's side


def serve(store: str | None = None, idle_s: float | None = None) -> int:
    """The standby's body: wait for a run, train it as the worker would, and return the worker's
    exit status. 0 at once when another standby holds the lock or the socket path is too long; 0
    when retired, unclaimed for idle_s seconds, or after refusing a run."""
    from engine.runs import worker  # torch and the whole engine, now: that is the point of a standby

    store_path = os.path.abspath(store or default_path())
    files = StandbyFiles.of(store_path)
    idle_s = float(os.environ.get("LIVEPROP_STANDBY_IDLE", IDLE_S)) if idle_s is None else idle_s
    if files.socket is None:
        return 0
    files.log.parent.mkdir(parents=True, exist_ok=True)
    lock = open(files.lock, "a")  # noqa: SIM115 (held until a run is claimed)
    for _ in range(10):  # a launcher probes the lock for an instant before it starts a standby
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.02)
    else:
        lock.close()
        return 0  # another standby serves this store
    files.socket.unlink(missing_ok=True)  # a killed standby's; the lock is ours, so no live one's
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(files.socket))
        server.listen(8)
        claimed = _next_claim(server, store_path, idle_s)
    finally:
        files.socket.unlink(missing_ok=True)  # while the lock is still ours
        server.close()
        lock.close()  # the next standby may start now
    if claimed is None:
        return 0
    offer, conn = claimed
    conn.close()  # tells the launcher that the lock is free
    os.environ.clear()
    os.environ.update(offer["env"])  # what differs is not read at start-up (_refusal)
    log = RunFiles.of(offer["run"], store_path).log
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    status = worker.run_worker(offer["run"], store_path)
    return 0 if status in ("finished", "stopped") else 1


def _next_claim(server: socket.socket, store_path: str, idle_s: float) -> tuple[dict, socket.socket] | None:
    """(the offer, its connection) once a launcher has said "go"; None when idle_s passes, when
    retired, or after refusing a run."""
    code = _code_stamp()
    deadline = time.monotonic() + idle_s
    while (left := deadline - time.monotonic()) > 0:
        server.settimeout(left)
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return None
        conn.settimeout(5.0)
        try:
            offer = json.loads(_read_line(conn))
            if offer.get("retire"):
                conn.sendall(b"bye\n")
                conn.close()
                return None
            why = _refusal(offer, store_path, code)
            if why:  # logged before the launcher hears it, so the log has it when launch returns
                print(f"standby {os.getpid()}: refused run {offer.get('run')}, and exits: {why}", flush=True)
                conn.sendall(f"no {why}\n".encode())
                conn.close()
                return None  # stale for this store's launches: the launcher starts one that fits
            conn.sendall(f"ok {os.getpid()}\n".encode())
            if _read_line(conn) == b"go":
                return offer, conn
        except (OSError, ValueError, AttributeError):  # a launcher that gave up, or a stranger
            pass
        conn.close()
    return None


def _refusal(offer: dict, store_path: str, code: int) -> str:
    """Why this standby is not the worker a fresh process would be for the offer ("" when it is)."""
    if not isinstance(offer.get("run"), str):
        return "no run id"
    if offer.get("store") != store_path:
        return "another store"
    if offer.get("python") != sys.executable:
        return "another Python"
    if offer.get("code") != code:
        return "the engine's source changed since the standby started"
    theirs, mine = offer.get("env") or {}, worker_env()
    changed = sorted(
        k for k in theirs.keys() | mine.keys() if k.startswith(START_UP_VARS) and theirs.get(k) != mine.get(k)
    )
    return f"start-up variables differ: {', '.join(changed)}" if changed else ""  # names only: values may be secret


# ---------------------------------------------------------------------------------------------


def _read_line(conn: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.strip()


def _code_stamp() -> int:
    """The newest modification time of the engine's source: a standby older than that is stale."""
    stamps = []
    for path in Path(__file__).parents[1].rglob("*.py"):
        with contextlib.suppress(OSError):
            stamps.append(path.stat().st_mtime_ns)
    return max(stamps, default=0)
