"""The run store: SQLite in WAL mode, a versioned schema, incremental and downsampled reads while a
writer writes, and deleting a run. (Reading while a real background worker writes: test_engine_worker.py.)"""

import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading

import pytest
from conftest import REPO, cli_env

from engine import Store, current_lr
from engine.errors import LivepropError, StorageError
from engine.loop.telemetry import Flush, Hist
from engine.store.schema import SCHEMA_VERSION


def test_wal_mode_and_schema_version(store):
    s = Store(store)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    raw = sqlite3.connect(store)  # WAL is a property of the file: a plain connection sees it
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "runs", "scalars", "histograms", "events", "control"} <= tables
    raw.close()


def test_a_newer_schema_is_refused(store):
    Store(store).close()
    raw = sqlite3.connect(store)
    raw.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    raw.commit()
    raw.close()
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(store)


def tree(root):
    """Every path under root, with a file's bytes: to see that nothing was created or changed."""
    return {str(p): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def store_path_of(kind, root):
    """A store path of this kind under root, where nothing can be a run store."""
    (root / "a-folder").mkdir()
    (root / "a-file.txt").write_text("not a database, and long enough to have no SQLite header\n" * 3)
    (root / "read-only").mkdir(mode=0o555)
    return str(
        {
            "folder": root / "a-folder",
            "under a file": root / "a-file.txt" / "liveprop.db",
            "not sqlite": root / "a-file.txt",
            "read-only folder": root / "read-only" / "runs" / "liveprop.db",
        }[kind]
    )


OPEN_WITHOUT_CAPABILITIES = """
import sys
from engine.errors import LivepropError, StorageError
from engine.store.db import Store
try:
    Store(sys.argv[1])
except StorageError as e:
    print(isinstance(e, LivepropError), e, sep="\\n", end="")
"""


def store_error(path: str, as_root: bool) -> str:
    """The message of the StorageError that opening a store at path raises, a LivepropError too. As root, in a
    subprocess with every capability dropped (setpriv): root without CAP_DAC_OVERRIDE is held to a
    folder's mode like any other owner, so a read-only folder refuses it too."""
    if not as_root:
        with pytest.raises(StorageError) as e:
            Store(path)
        assert isinstance(e.value, LivepropError)
        return str(e.value)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root writes into a read-only folder, and setpriv (util-linux) is not here to drop that right")
    argv = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", sys.executable, "-c", OPEN_WITHOUT_CAPABILITIES]
    r = subprocess.run([*argv, path], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("True\n"), (r.stdout, r.stderr)
    return r.stdout.removeprefix("True\n")


@pytest.mark.parametrize("kind", ["folder", "under a file", "not sqlite", "read-only folder"])
def test_a_path_that_cannot_be_a_store_is_one_line_and_creates_nothing(kind, tmp_path):
    """A StorageError (a LivepropError), which the CLI prints as one line (test_engine_cli.py tries each command)."""
    path = store_path_of(kind, tmp_path)
    before = tree(tmp_path)
    message = store_error(path, as_root=kind == "read-only folder" and os.geteuid() == 0)
    assert path in message and "\n" not in message, message
    assert tree(tmp_path) == before


def flush_of(first_step, losses, **kw):
    return Flush(first_step, list(losses), **kw)


def test_flush_round_trip(store):
    s = Store(store)
    s.create_run("r1", {"mode": "manual"}, total_steps=4)
    hist = Hist(step=2, layer="w1", kind="grad", lo=-1.0, hi=1.0, counts=[1.0, 3.0], nonfinite=2)
    s.write_flush(
        "r1",
        flush_of(
            0,
            [4.0, 3.0, float("nan"), 1.0],
            scalars=[(2, "grad_norm/w1", 0.5)],
            hists=[hist],
            events=[(2, "divergence", {"step": 2, "layer": "w1"})],
        ),
    )
    assert s.scalars("r1", "loss") == [(0, 4.0), (1, 3.0), (2, None), (3, 1.0)]  # NaN is stored as NULL
    assert s.scalars("r1", "grad_norm/w1") == [(2, 0.5)]
    [h] = s.histograms("r1", kind="grad", layer="w1")
    assert h == dict(step=2, layer="w1", kind="grad", edges=[-1.0, 0.0, 1.0], counts=[1.0, 3.0], nonfinite=2)
    [e] = s.events("r1")
    assert (e["step"], e["kind"], e["data"]) == (2, "divergence", {"step": 2, "layer": "w1"})
    assert s.get_run("r1")["step"] == 4
    s.close()


def test_incremental_reads_while_another_thread_writes(store):
    """A reader on its own connection fetches only what is new ("after step S") while a writer commits."""
    Store(store).create_run("r1", {})
    n_flushes, per_flush = 60, 25
    errors = []
    writing = threading.Event()

    read_some = threading.Event()

    def writer():
        try:
            w = Store(store)
            writing.set()
            for i in range(n_flushes):
                if i == n_flushes // 2:  # halfway, until the reader has seen rows: it reads mid-write,
                    read_some.wait(30)  # however the two threads are scheduled
                w.write_flush("r1", flush_of(i * per_flush, [float(i * per_flush + j) for j in range(per_flush)]))
            w.close()
        except Exception as e:  # surfaces in the assertion below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    writing.wait(10)
    reader = Store(store)
    got, polls_with_news = [], 0
    while True:
        writer_done = not t.is_alive()  # before the read: everything it wrote is then visible
        new = reader.scalars("r1", "loss", after_step=got[-1][0] if got else -1)
        polls_with_news += bool(new)
        got += new
        if new:
            read_some.set()
        if writer_done and not new:
            break
    t.join()
    reader.close()
    assert not errors, errors
    assert got == [(i, float(i)) for i in range(n_flushes * per_flush)]  # in order, no gap, no repeat
    assert polls_with_news >= 2, "the reader saw the data only once: it did not read while writes happened"


def test_readers_in_threads_see_whole_flushes_only(store):
    """Each flush is one transaction: a reader never sees half of one."""
    Store(store).create_run("r1", {})
    done = threading.Event()
    sizes, errors = [], []

    def reader():
        r = Store(store)
        try:
            while not done.is_set():
                sizes.append(len(r.scalars("r1", "loss")))
        except Exception as e:
            errors.append(e)
        finally:
            r.close()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    w = Store(store)
    for i in range(40):
        w.write_flush("r1", flush_of(i * 50, [1.0] * 50))
    done.set()
    for t in threads:
        t.join()
    w.close()
    assert not errors, errors
    assert sizes and all(n % 50 == 0 for n in sizes), sorted(set(n % 50 for n in sizes))


def series(n, seed=0):
    rng = random.Random(seed)
    values, v = [], 100.0
    for _ in range(n):
        v = v * 0.999 + rng.gauss(0, 0.5)
        values.append(v)
    return values


@pytest.mark.parametrize("buckets", [50, 200, 2000])
def test_bucketed_reads_are_bounded_and_keep_min_and_max(store, buckets):
    values = series(10_001)
    values[3_333] = -1e6  # a spike each way: the min and the max
    values[7_777] = 1e6
    s = Store(store)
    s.create_run("r1", {})
    s.write_flush("r1", flush_of(0, values))
    rows = s.bucketed("r1", "loss", buckets)
    s.close()
    assert 0 < len(rows) <= buckets
    [low] = [r for r in rows if r[0] <= 3_333 <= r[1]]
    [high] = [r for r in rows if r[0] <= 7_777 <= r[1]]
    assert low[2] == -1e6 and high[3] == 1e6


@pytest.mark.parametrize("shape", ["decreasing", "random"])
def test_bucketed_figures_equal_a_brute_force_over_the_raw_rows(store, shape):
    """Each bucket's min, max, sum and count are those of the values of its steps; the buckets
    tile the series in order, each step in exactly one."""
    n = 5_000
    values = [100.0 / (1 + i) for i in range(n)] if shape == "decreasing" else series(n, seed=1)
    values[1_234] = math.nan  # stored as NULL: not counted
    s = Store(store)
    s.create_run("r1", {})
    s.write_flush("r1", flush_of(0, values))
    rows = s.bucketed("r1", "loss", 100)
    s.close()
    assert len(rows) <= 100 and rows[0][0] == 0 and rows[-1][1] == n - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(rows, rows[1:]))
    for s0, s1, vmin, vmax, vsum, count in rows:
        inside = [v for v in values[s0 : s1 + 1] if math.isfinite(v)]
        assert (vmin, vmax, count) == (min(inside), max(inside), len(inside))
        assert vsum == pytest.approx(sum(inside))


def test_short_series_and_windows_come_back_whole(store):
    s = Store(store)
    s.create_run("r1", {})
    s.write_flush("r1", flush_of(0, [float(i) for i in range(1000)]))
    whole = [(i, i, float(i), float(i), float(i), 1) for i in range(1000)]
    assert s.bucketed("r1", "loss", 2000) == whole
    assert s.bucketed("r1", "loss", 500, lo=100, hi=199) == whole[100:200]
    assert s.bucketed("r1", "nothing", 2000) == []
    s.close()


def test_delete_run_removes_everything_of_that_run_only(store):
    s = Store(store)
    for run in ("keep", "gone"):
        s.create_run(run, {"mode": "manual"})
        s.write_flush(
            run,
            flush_of(
                0,
                [1.0, 2.0],
                scalars=[(0, "lr", 0.1)],
                hists=[Hist(0, "w1", "weight", 0.0, 1.0, [1.0], 0)],
                events=[(1, "pause", {})],
            ),
        )
        s.ack_control(s.send_control(run, "pause"))
    s.delete_run("gone")
    assert s.get_run("gone") is None and [r["id"] for r in s.list_runs()] == ["keep"]
    for table in ("scalars", "histograms", "events", "control"):
        counts = dict(s.db.execute(f"SELECT run, COUNT(*) FROM {table} GROUP BY run").fetchall())
        assert "gone" not in counts and counts.get("keep", 0) > 0, table
    s.close()


def test_control_rows_are_pending_until_acknowledged(store):
    s = Store(store)
    s.create_run("r1", {})
    a = s.send_control("r1", "pause")
    b = s.send_control("r1", "set_lr", 0.5)
    assert [(c["id"], c["command"], c["value"]) for c in s.pending_control("r1")] == [
        (a, "pause", None),
        (b, "set_lr", 0.5),
    ]
    s.ack_control(a, "ok")
    assert [c["id"] for c in s.pending_control("r1")] == [b]
    row = s.control(a)
    assert row["acked"] is not None and row["result"] == "ok"
    s.close()


def test_values_are_never_pickled(store):
    """Config and events are JSON text; numbers are numbers."""
    s = Store(store)
    s.create_run("r1", {"lr": 0.1, "mode": "nn"})
    s.add_event("r1", 3, "lr_change", {"old": 0.1, "new": 0.01})
    raw = sqlite3.connect(store)
    assert raw.execute("SELECT typeof(config) FROM runs").fetchone()[0] == "text"
    assert raw.execute("SELECT typeof(data) FROM events").fetchone()[0] == "text"
    raw.close()
    assert s.get_run("r1")["config"] == {"lr": 0.1, "mode": "nn"}
    assert not math.isnan(s.events("r1")[0]["data"]["new"])
    s.close()


def test_current_lr_is_the_last_change_else_the_config(store):
    s = Store(store)
    s.create_run("r1", {"lr": 1e-3, "mode": "nn"})
    s.create_run("r2", {"lr": 0.5, "mode": "nn"})
    assert current_lr("r1", s) == 1e-3 and current_lr("nope", s) is None
    s.add_event("r1", 3, "lr_change", {"old": 1e-3, "new": 5e-4})
    s.add_event("r1", 4, "pause", {})
    s.add_event("r1", 9, "lr_change", {"old": 5e-4, "new": 2e-4})
    s.add_event("r2", 9, "lr_change", {"old": 0.5, "new": 0.25})
    assert (current_lr("r1", s), current_lr("r2", s)) == (2e-4, 0.25)
    s.close()


def test_truncate_leaves_the_rollup_equal_to_one_computed_from_what_is_left(store):
    """A resume forgets the steps after its checkpoint: the rows, and their share of the rollup blocks,
    the block the cut falls in included (the reference: the rollup recomputed from the rows left)."""
    from engine.store.schema import BLOCK

    s = Store(store)
    s.create_run("r", {})
    rng = random.Random(3)
    for first in range(0, 1000, 100):
        s.write_flush("r", Flush(first, [rng.gauss(0, 1) for _ in range(100)], [(first, "lr", 0.1)]))
    s.truncate("r", 600)
    rows = s.db.execute("SELECT key, step, value FROM scalars WHERE run='r'").fetchall()
    want = {}
    for key, step, v in rows:
        n, lo, hi, total = want.get((key, step // BLOCK), (0, v, v, 0.0))
        want[key, step // BLOCK] = (n + 1, min(lo, v), max(hi, v), total + v)
    got = {
        (k, b): (n, lo, hi, total)
        for k, b, n, lo, hi, total in s.db.execute("SELECT key, block, n, vmin, vmax, vsum FROM rollup WHERE run='r'")
    }
    assert max(step for _, step, _ in rows) == 599 and s.get_run("r")["step"] == 600
    assert got.keys() == want.keys()
    for k in want:
        assert got[k][:3] == want[k][:3] and got[k][3] == pytest.approx(want[k][3])
