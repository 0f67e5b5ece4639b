"""The store's tables, and how a store written by an older Liveprop is brought up to date (migrate).

Every version's change is one statement here, run once inside the transaction that opens the store.
"""

from __future__ import annotations

import math
import sqlite3

from engine.errors import StorageError

SCHEMA_VERSION = 4
BLOCK = 256  # steps per rollup block

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, config TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, started REAL, ended REAL, pid INTEGER, heartbeat REAL,
    step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER, device TEXT, error TEXT, checkpoint TEXT,
    pause_reason TEXT);
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
CREATE TABLE IF NOT EXISTS pictures (
    run TEXT NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (run, name, step)) WITHOUT ROWID;
"""
# v1 -> v2: a rollup of every series per BLOCK steps, so a long run's overview reads 1/BLOCK of the rows;
# the same statement, for one run from a step on, rebuilds what a truncate removed ("" and -1: every run)
BACKFILL = f"""INSERT OR REPLACE INTO rollup SELECT run, key, step / {BLOCK}, COUNT(value), MIN(value),
    MAX(value), TOTAL(value) FROM scalars WHERE (?1 = '' OR run = ?1) AND step >= ?2
    GROUP BY run, key, step / {BLOCK}"""
# v3 -> v4: the pictures of what a playground run learned (engine/loop/learned.py), created by SCHEMA's statement
MAX_PICTURE_STEPS = 100  # snapshots of pictures kept per run: past it, every other one is dropped (Store.write_flush)
# v2 -> v3: why a paused run waits, a field instead of words in `error` (schedule, rule: engine/loop/plan.py, rules.py)
PAUSE_REASONS = ("command", "divergence", "disk_full", "schedule", "rule")
UPSERT_ROLLUP = """INSERT INTO rollup VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, key, block) DO UPDATE SET
    n = n + excluded.n, vsum = vsum + excluded.vsum,
    vmin = COALESCE(MIN(COALESCE(vmin, excluded.vmin), COALESCE(excluded.vmin, vmin)), vmin),
    vmax = COALESCE(MAX(COALESCE(vmax, excluded.vmax), COALESCE(excluded.vmax, vmax)), vmax)"""


def version(db: sqlite3.Connection) -> int | None:
    """The store's schema version; None for a new store."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.OperationalError:  # no meta table: a new store
        return None
    return None if row is None else int(row[0])


def outdated(db: sqlite3.Connection) -> bool:
    """Whether the store needs migrate() (read without a lock); a newer store is refused."""
    v = version(db)
    if v is not None and v > SCHEMA_VERSION:
        raise StorageError(f"it has schema version {v}; this Liveprop knows {SCHEMA_VERSION}")
    return v != SCHEMA_VERSION


def migrate(db: sqlite3.Connection) -> None:
    """Create the tables, or bring an older store's up to SCHEMA_VERSION; inside the caller's transaction."""
    v = version(db)
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
    if "pause_reason" not in {c[1] for c in db.execute("PRAGMA table_info(runs)")}:
        db.execute("ALTER TABLE runs ADD COLUMN pause_reason TEXT")
    if v is not None and v < 2:
        db.execute(BACKFILL, ("", -1))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def rollup_rows(run_id: str, points) -> list[tuple]:
    """Rows for UPSERT_ROLLUP from (key, step, value) points: per key and BLOCK of steps,
    (run, key, block, n, min, max, sum) of the finite values."""
    out = {}
    for key, step, v in points:
        n, lo, hi, total = out.get((key, step // BLOCK), (0, None, None, 0.0))
        if v is not None and math.isfinite(v):
            n, lo, hi, total = n + 1, v if lo is None else min(lo, v), v if hi is None else max(hi, v), total + v
        out[key, step // BLOCK] = (n, lo, hi, total)
    return [(run_id, key, b, *vals) for (key, b), vals in out.items()]
