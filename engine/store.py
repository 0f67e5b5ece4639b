"""The run store: SQLite in WAL mode, one writer per run (its worker), many readers.

Tables: runs, scalars (every step's loss and the per-K metrics), histograms, events, control
(commands from viewers, acknowledged by the worker) and meta (the schema version). Readers fetch
incrementally (after_step) or downsampled to a bounded number of points (min and max per bucket,
so spikes survive). Values are stored as numbers and JSON text: nothing is ever unpickled.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from pathlib import Path

SCHEMA_VERSION = 2
BLOCK = 256                 # steps per rollup block
PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = PROJECT / "runs" / "liveprop.db"
ACTIVE = ("queued", "running", "paused")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, config TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, started REAL, ended REAL, pid INTEGER, heartbeat REAL,
    step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER, device TEXT, error TEXT, checkpoint TEXT);
CREATE TABLE IF NOT EXISTS scalars (
    run TEXT NOT NULL, key TEXT NOT NULL, step INTEGER NOT NULL, value REAL,
    PRIMARY KEY (run, key, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS histograms (
    run TEXT NOT NULL, step INTEGER NOT NULL, layer TEXT NOT NULL, kind TEXT NOT NULL,
    edges TEXT NOT NULL, counts TEXT NOT NULL, nonfinite INTEGER NOT NULL,
    PRIMARY KEY (run, kind, layer, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, run TEXT NOT NULL, step INTEGER, time REAL NOT NULL,
    kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_run ON events (run, id);
CREATE TABLE IF NOT EXISTS control (
    id INTEGER PRIMARY KEY, run TEXT NOT NULL, time REAL NOT NULL, command TEXT NOT NULL,
    value REAL, acked REAL, result TEXT);
CREATE INDEX IF NOT EXISTS control_run ON control (run, acked);
CREATE TABLE IF NOT EXISTS rollup (
    run TEXT NOT NULL, key TEXT NOT NULL, block INTEGER NOT NULL,
    n INTEGER NOT NULL, vmin REAL, vmax REAL, vsum REAL NOT NULL,
    PRIMARY KEY (run, key, block)) WITHOUT ROWID;
"""
# v1 -> v2: a rollup of every series per BLOCK steps, so a long run's overview reads 1/BLOCK of the rows
BACKFILL = f"""INSERT OR REPLACE INTO rollup SELECT run, key, step / {BLOCK}, COUNT(value), MIN(value),
    MAX(value), TOTAL(value) FROM scalars GROUP BY run, key, step / {BLOCK}"""
UPSERT_ROLLUP = """INSERT INTO rollup VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, key, block) DO UPDATE SET
    n = n + excluded.n, vsum = vsum + excluded.vsum,
    vmin = COALESCE(MIN(COALESCE(vmin, excluded.vmin), COALESCE(excluded.vmin, vmin)), vmin),
    vmax = COALESCE(MAX(COALESCE(vmax, excluded.vmax), COALESCE(excluded.vmax, vmax)), vmax)"""


def default_path() -> str:
    return os.environ.get("LIVEPROP_STORE") or str(DEFAULT_PATH)


def _nan_to_none(v):
    return None if v is None or not math.isfinite(v) else v


class Store:
    """A connection to the store. Make one per thread (sqlite3 connections are not shared)."""

    def __init__(self, path: str | None = None):
        self.path = str(path or default_path())
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def _migrate(self):
        row = None
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            pass
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {row[0]}; this Liveprop knows {SCHEMA_VERSION}")
        if row is None or int(row[0]) < SCHEMA_VERSION:
            with self.tx():
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                if row is not None:
                    self.db.execute(BACKFILL)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def tx(self):
        return _Tx(self.db)

    def close(self):
        self.db.close()

    # -- runs ----------------------------------------------------------------------------------

    def create_run(self, run_id: str, config: dict, name: str = "", total_steps: int | None = None):
        self.db.execute("INSERT INTO runs (id, name, config, status, created, total_steps) VALUES (?,?,?,?,?,?)",
                        (run_id, name, json.dumps(config), "queued", time.time(), total_steps))

    def update_run(self, run_id: str, **fields):
        cols = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), run_id))

    def set_status(self, run_id: str, status: str, error: str | None = None):
        ended = time.time() if status not in ACTIVE else None
        self.db.execute("UPDATE runs SET status=?, error=COALESCE(?, error), ended=COALESCE(?, ended) WHERE id=?",
                        (status, error, ended, run_id))

    def get_run(self, run_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run_dict(row) if row else None

    def list_runs(self) -> list[dict]:
        return [_run_dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY created DESC")]

    def delete_run(self, run_id: str):
        with self.tx():
            for table in ("scalars", "histograms", "events", "control", "rollup"):
                self.db.execute(f"DELETE FROM {table} WHERE run=?", (run_id,))
            self.db.execute("DELETE FROM runs WHERE id=?", (run_id,))

    # -- writing telemetry (the worker's store thread) -----------------------------------------

    def write_flush(self, run_id: str, flush) -> None:
        """One transaction per flush: losses, scalars, histograms, events, and the run's step."""
        with self.tx():
            self.db.executemany("INSERT OR REPLACE INTO scalars VALUES (?, 'loss', ?, ?)",
                                [(run_id, flush.first_step + i, _nan_to_none(v)) for i, v in enumerate(flush.losses)])
            self.db.executemany("INSERT OR REPLACE INTO scalars VALUES (?, ?, ?, ?)",
                                [(run_id, k, s, _nan_to_none(v)) for s, k, v in flush.scalars])
            self.db.executemany("INSERT OR REPLACE INTO histograms VALUES (?,?,?,?,?,?,?)",
                                [(run_id, h.step, h.layer, h.kind, json.dumps(h.edges), json.dumps(h.counts),
                                  h.nonfinite) for h in flush.hists])
            for step, kind, data in flush.events:
                self.add_event(run_id, step, kind, data)
            points = [("loss", flush.first_step + i, v) for i, v in enumerate(flush.losses)]
            self.db.executemany(UPSERT_ROLLUP, _blocks(run_id, points + [(k, s, v) for s, k, v in flush.scalars]))
            if flush.losses:
                self.db.execute("UPDATE runs SET step=? WHERE id=?", (flush.last_step + 1, run_id))

    def add_event(self, run_id: str, step: int | None, kind: str, data: dict | None = None):
        self.db.execute("INSERT INTO events (run, step, time, kind, data) VALUES (?,?,?,?,?)",
                        (run_id, step, time.time(), kind, json.dumps(data or {})))

    # -- reading ---------------------------------------------------------------------------------

    def scalar_keys(self, run_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT key FROM scalars WHERE run=?", (run_id,))]

    def scalars(self, run_id: str, key: str, after_step: int = -1) -> list[tuple[int, float | None]]:
        """Full resolution, incremental: every (step, value) with step > after_step."""
        return [tuple(r) for r in self.db.execute(
            "SELECT step, value FROM scalars WHERE run=? AND key=? AND step>? ORDER BY step",
            (run_id, key, after_step))]

    def scalars_downsampled(self, run_id: str, key: str, max_points: int = 2000,
                            lo: int | None = None, hi: int | None = None) -> list[tuple[int, float]]:
        """At most about max_points points: per bucket of steps, the min and the max (min-max decimation)."""
        lo_hi = self.db.execute("SELECT MIN(step), MAX(step), COUNT(*) FROM scalars WHERE run=? AND key=?"
                                " AND step BETWEEN ? AND ?", (run_id, key, lo if lo is not None else -1,
                                                             hi if hi is not None else 2**62)).fetchone()
        first, last, count = lo_hi
        if not count:
            return []
        if count <= max_points:
            return [tuple(r) for r in self.db.execute(
                "SELECT step, value FROM scalars WHERE run=? AND key=? AND step BETWEEN ? AND ? ORDER BY step",
                (run_id, key, first, last))]
        width = max(1, math.ceil((last - first + 1) / (max_points // 2)))
        # Each point is a real (step, value): with a single MIN() or MAX() aggregate, SQLite takes the
        # bare column `step` from the row that holds the extreme. Pairing a bucket's first step with its
        # min value instead would draw a falling curve as a saw tooth.
        points = {}
        for agg in ("MIN", "MAX"):
            for _, step, value in self.db.execute(
                    f"SELECT (step - ?) / ? AS b, step, {agg}(value) FROM scalars "
                    "WHERE run=? AND key=? AND step BETWEEN ? AND ? GROUP BY b",
                    (first, width, run_id, key, first, last)):
                points[step] = value
        return sorted(points.items())

    def histograms(self, run_id: str, kind: str | None = None, layer: str | None = None,
                   after_step: int = -1) -> list[dict]:
        q = "SELECT * FROM histograms WHERE run=? AND step>?"
        args = [run_id, after_step]
        if kind:
            q, args = q + " AND kind=?", args + [kind]
        if layer:
            q, args = q + " AND layer=?", args + [layer]
        return [dict(step=r["step"], layer=r["layer"], kind=r["kind"], edges=json.loads(r["edges"]),
                     counts=json.loads(r["counts"]), nonfinite=r["nonfinite"])
                for r in self.db.execute(q + " ORDER BY step", args)]

    def events(self, run_id: str, after_id: int = 0) -> list[dict]:
        return [dict(id=r["id"], step=r["step"], time=r["time"], kind=r["kind"], data=json.loads(r["data"]))
                for r in self.db.execute("SELECT * FROM events WHERE run=? AND id>? ORDER BY id", (run_id, after_id))]

    # -- control --------------------------------------------------------------------------------

    def send_control(self, run_id: str, command: str, value: float | None = None) -> int:
        cur = self.db.execute("INSERT INTO control (run, time, command, value) VALUES (?,?,?,?)",
                              (run_id, time.time(), command, value))
        return cur.lastrowid

    def pending_control(self, run_id: str) -> list[dict]:
        return [dict(r) for r in self.db.execute(
            "SELECT id, command, value FROM control WHERE run=? AND acked IS NULL ORDER BY id", (run_id,))]

    def ack_control(self, control_id: int, result: str = "ok"):
        self.db.execute("UPDATE control SET acked=?, result=? WHERE id=?", (time.time(), result, control_id))

    def control(self, control_id: int) -> dict | None:
        row = self.db.execute("SELECT * FROM control WHERE id=?", (control_id,)).fetchone()
        return dict(row) if row else None


class _Tx:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _blocks(run_id: str, points) -> list[tuple]:
    """Rows for UPSERT_ROLLUP from (key, step, value) points: per key and BLOCK of steps,
    (run, key, block, n, min, max, sum) of the finite values."""
    out = {}
    for key, step, v in points:
        n, lo, hi, total = out.get((key, step // BLOCK), (0, None, None, 0.0))
        if v is not None and math.isfinite(v):
            n, lo, hi, total = n + 1, v if lo is None else min(lo, v), v if hi is None else max(hi, v), total + v
        out[key, step // BLOCK] = (n, lo, hi, total)
    return [(run_id, key, b, *vals) for (key, b), vals in out.items()]


def _run_dict(row) -> dict:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    return d
