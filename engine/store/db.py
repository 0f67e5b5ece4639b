"""The run store: SQLite in WAL mode, one writer per run (its worker), many readers.

This module (with its part engine/store/pictures.py) is the only code that speaks SQL: the worker, the CLI,
the exporter and the dashboard all read and write through Store. Tables: runs, scalars (every step's loss and
the per-K metrics), histograms, pictures, events, control (commands from viewers, acknowledged by the
worker), rollup (per BLOCK steps: count, min, max, sum of each series) and meta (the schema version). Readers fetch
incrementally (after a step or event id) or bucketed to a bounded number of rows (min and max
per bucket, so spikes survive). Values are stored as numbers, JSON text and packed half floats: nothing is
ever unpickled.

The tables themselves, and how an older store is brought up to date, are engine/store/schema.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from pathlib import Path

from engine.errors import StorageError
from engine.store.pictures import Pictures
from engine.store.schema import BACKFILL, BLOCK, UPSERT_ROLLUP, migrate, outdated, rollup_rows
from engine.store.sqlite import Transaction, writes

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = PROJECT / "runs" / "liveprop.db"
ACTIVE = ("queued", "running", "paused")


def default_path() -> str:
    return os.environ.get("LIVEPROP_STORE") or str(DEFAULT_PATH)


@contextlib.contextmanager
def opened(store: str | Store | None):
    """The Store passed in, or one opened (and closed again) on a path (None: the default)."""
    if isinstance(store, Store):
        yield store
        return
    s = Store(store)
    try:
        yield s
    finally:
        s.close()


def _nan_to_none(v):
    return None if v is None or not math.isfinite(v) else v


class Store(Pictures):
    """A connection to the store. Use it from one thread at a time: the worker's store thread
    has its own, a dashboard session keeps one for all its refreshes (which Streamlit may run on
    different threads, one after another)."""

    def __init__(self, path: str | None = None):
        self.path = str(path or default_path())
        if Path(self.path).is_dir():
            raise StorageError(
                f"the run store {self.path} is a folder; give a file, e.g. {Path(self.path, 'liveprop.db')}"
            )
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the run store {self.path}: {getattr(e, 'strerror', None) or e}") from None
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            if outdated(self.db):
                with self.tx():
                    migrate(self.db)
        except (sqlite3.Error, StorageError) as e:
            self.db.close()
            raise StorageError(f"cannot open the run store {self.path}: {e}") from None

    def tx(self):
        return Transaction(self.db)

    def close(self):
        self.db.close()

    # -- runs ----------------------------------------------------------------------------------

    @writes
    def create_run(self, run_id: str, config: dict, name: str = "", total_steps: int | None = None):
        self.db.execute(
            "INSERT INTO runs (id, name, config, status, created, total_steps) VALUES (?,?,?,?,?,?)",
            (run_id, name, json.dumps(config), "queued", time.time(), total_steps),
        )

    @writes
    def update_run(self, run_id: str, **fields):
        cols = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), run_id))

    @writes
    def set_status(self, run_id: str, status: str, error: str | None = None, pause_reason: str | None = None):
        """pause_reason, one of PAUSE_REASONS, is kept while the run is paused and cleared by any other status."""
        ended = time.time() if status not in ACTIVE else None
        self.db.execute(
            "UPDATE runs SET status=?, error=COALESCE(?, error), ended=COALESCE(?, ended), "
            "pause_reason=CASE WHEN ?1='paused' THEN COALESCE(?, pause_reason) END WHERE id=?",
            (status, error, ended, pause_reason, run_id),
        )

    def get_run(self, run_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run_dict(row) if row else None

    def list_runs(self) -> list[dict]:
        return [_run_dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY created DESC")]

    @writes
    def delete_run(self, run_id: str):
        with self.tx():
            for table in ("scalars", "histograms", "events", "control", "rollup", "pictures"):
                self.db.execute(f"DELETE FROM {table} WHERE run=?", (run_id,))
            self.db.execute("DELETE FROM runs WHERE id=?", (run_id,))

    @writes
    def truncate(self, run_id: str, step: int):
        """Forget what a run stored from `step` on, so that a resume from its checkpoint at `step`
        writes those steps again (engine/runs/api.py resume_run); events at `step` itself (the stop) stay."""
        with self.tx():
            for table in ("scalars", "histograms", "pictures"):
                self.db.execute(f"DELETE FROM {table} WHERE run=? AND step>=?", (run_id, step))
            self.db.execute("DELETE FROM events WHERE run=? AND step>?", (run_id, step))
            self.db.execute("DELETE FROM rollup WHERE run=? AND block>=?", (run_id, step // BLOCK))
            self.db.execute(BACKFILL, (run_id, step // BLOCK * BLOCK))
            self.db.execute("UPDATE runs SET step=? WHERE id=?", (step, run_id))

    # -- writing telemetry (the worker's store thread) -----------------------------------------

    @writes
    def write_flush(self, run_id: str, flush) -> None:
        """One transaction per flush: losses, scalars, histograms, events, and the run's step."""
        with self.tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO scalars VALUES (?, 'loss', ?, ?)",
                [(run_id, flush.first_step + i, _nan_to_none(v)) for i, v in enumerate(flush.losses)],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO scalars VALUES (?, ?, ?, ?)",
                [(run_id, k, s, _nan_to_none(v)) for s, k, v in flush.scalars],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO histograms VALUES (?,?,?,?,?,?,?)",
                [
                    (run_id, h.step, h.layer, h.kind, json.dumps(h.edges), json.dumps(h.counts), h.nonfinite)
                    for h in flush.hists
                ],
            )
            for step, kind, data in flush.events:
                self.add_event(run_id, step, kind, data)
            if flush.pictures:
                self._write_pictures(run_id, flush.pictures)
            points = [("loss", flush.first_step + i, v) for i, v in enumerate(flush.losses)]
            self.db.executemany(UPSERT_ROLLUP, rollup_rows(run_id, points + [(k, s, v) for s, k, v in flush.scalars]))
            if flush.losses:
                self.db.execute("UPDATE runs SET step=? WHERE id=?", (flush.last_step + 1, run_id))

    @writes
    def add_event(self, run_id: str, step: int | None, kind: str, data: dict | None = None):
        self.db.execute(
            "INSERT INTO events (run, step, time, kind, data) VALUES (?,?,?,?,?)",
            (run_id, step, time.time(), kind, json.dumps(data or {})),
        )

    # -- reading: incremental after a cursor, or bucketed for an overview ------------------------
    # Every query is an index range: scalars are keyed (run, key, step), histograms
    # (run, kind, layer, step), events by (run, id).

    def _distinct(self, sql_first: str, sql_next: str, args: tuple) -> list[str]:
        """Distinct values of an index column, by seeking to the next one: no scan of every row
        (SELECT DISTINCT read all of a 1,000,000-step run's rows)."""
        out = []
        row = self.db.execute(sql_first, args).fetchone()
        while row and row[0] is not None:
            out.append(row[0])
            row = self.db.execute(sql_next, (*args, row[0])).fetchone()
        return out

    def scalar_keys(self, run_id: str) -> list[str]:
        return self._distinct(
            "SELECT MIN(key) FROM scalars WHERE run=?", "SELECT MIN(key) FROM scalars WHERE run=? AND key>?", (run_id,)
        )

    def scalars(
        self, run_id: str, key: str, after_step: int = -1, limit: int | None = None
    ) -> list[tuple[int, float | None]]:
        """Full resolution, incremental: (step, value) with step > after_step, in step order."""
        q = "SELECT step, value FROM scalars WHERE run=? AND key=? AND step>? ORDER BY step"
        args = (run_id, key, after_step)
        if limit:
            q, args = q + " LIMIT ?", args + (int(limit),)
        return [tuple(r) for r in self.db.execute(q, args)]

    def last_value(self, run_id: str, key: str) -> tuple[int | None, float | None]:
        row = self.db.execute(
            "SELECT step, value FROM scalars WHERE run=? AND key=? ORDER BY step DESC LIMIT 1", (run_id, key)
        ).fetchone()
        return tuple(row) if row else (None, None)

    def step_span(self, run_id: str, key: str, lo: int = -1, hi: int = 2**62) -> tuple[int, int] | None:
        """(first, last) step of a series within [lo, hi], by two index seeks."""
        q = "SELECT {}(step) FROM scalars WHERE run=? AND key=? AND step BETWEEN ? AND ?"
        first = self.db.execute(q.format("MIN"), (run_id, key, lo, hi)).fetchone()[0]
        if first is None:
            return None
        return first, self.db.execute(q.format("MAX"), (run_id, key, lo, hi)).fetchone()[0]

    def bucketed(self, run_id: str, key: str, buckets: int, lo: int = -1, hi: int = 2**62) -> list[tuple]:
        """A series within [lo, hi] as at most about `buckets` rows (s0, s1, vmin, vmax, vsum, n),
        aggregated in SQL so that the rows never reach Python: one row per step when the range is
        no longer than `buckets`; else equal step ranges, read from the rollup when it still gives
        at least half the resolution asked for. engine/store/decimate.py's Buckets.from_rows takes them."""
        span = self.step_span(run_id, key, lo, hi)
        if span is None:
            return []
        first, last = span
        if last - first + 1 <= buckets:
            return [
                (s, s, v, v, v if v is not None else 0.0, 0 if v is None else 1)
                for s, v in self.db.execute(
                    "SELECT step, value FROM scalars WHERE run=? AND key=? AND step BETWEEN ? AND ? ORDER BY step",
                    (run_id, key, first, last),
                )
            ]
        blocks = (last - first + 1) // BLOCK
        if blocks >= buckets // 2:
            rows = self._rollup(run_id, key, max(1, -(-blocks // buckets)), first, last)
            if rows:  # else a store written around write_flush: read the rows
                return rows
        # The bucket bounds go in a temp table keyed by their first step, so that the join walks the
        # buckets in order and SQLite aggregates without sorting: twice as fast as GROUP BY (step-a)/w,
        # which pushes every row through a temp b-tree.
        width = -(-(last - first + 1) // buckets)
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS lp_buckets (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL)")
        self.db.execute("DELETE FROM lp_buckets")
        self.db.executemany(
            "INSERT INTO lp_buckets VALUES (?, ?)", ((b, b + width - 1) for b in range(first, last + 1, width))
        )
        return [
            tuple(r)
            for r in self.db.execute(
                "SELECT MIN(s.step), MAX(s.step), MIN(s.value), MAX(s.value), TOTAL(s.value), COUNT(s.value) "
                "FROM lp_buckets b JOIN scalars s ON s.run=? AND s.key=? AND s.step BETWEEN b.lo AND b.hi "
                "GROUP BY b.lo ORDER BY b.lo",
                (run_id, key),
            )
        ]

    def _rollup(self, run_id: str, key: str, k: int, first: int, last: int) -> list[tuple]:
        """bucketed() rows from the rollup: buckets of k blocks (k * BLOCK steps), aligned to block
        boundaries. A 1,000,000-step run's loss reads about 4,000 rows instead of 10**6."""
        rows = self.db.execute(
            "SELECT MIN(block), MAX(block), MIN(vmin), MAX(vmax), TOTAL(vsum), SUM(n) FROM rollup "
            "WHERE run=? AND key=? AND block BETWEEN ? AND ? GROUP BY block / ? ORDER BY block / ?",
            (run_id, key, first // BLOCK, last // BLOCK, k, k),
        ).fetchall()
        return [
            (max(first, b0 * BLOCK), min(last, b1 * BLOCK + BLOCK - 1), vmin, vmax, vsum, n)
            for b0, b1, vmin, vmax, vsum, n in rows
        ]

    def hist_layers(self, run_id: str, kind: str) -> list[str]:
        return self._distinct(
            "SELECT MIN(layer) FROM histograms WHERE run=? AND kind=?",
            "SELECT MIN(layer) FROM histograms WHERE run=? AND kind=? AND layer>?",
            (run_id, kind),
        )

    def hist_steps(self, run_id: str, kind: str, layer: str, after_step: int = -1) -> list[int]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT step FROM histograms WHERE run=? AND kind=? AND layer=? AND step>? ORDER BY step",
                (run_id, kind, layer, after_step),
            )
        ]

    def histograms(
        self,
        run_id: str,
        kind: str | None = None,
        layer: str | None = None,
        after_step: int = -1,
        steps: list[int] | None = None,
    ) -> list[dict]:
        """Histograms after after_step, of one kind (weight, grad) and layer if given, at the given
        steps if given. Each: step, layer, kind, edges, counts, nonfinite."""
        q, args = "SELECT * FROM histograms WHERE run=? AND step>?", [run_id, after_step]
        for col, v in (("kind", kind), ("layer", layer)):
            if v is not None:
                q, args = q + f" AND {col}=?", args + [v]
        chunks = [None] if steps is None else [steps[i : i + 500] for i in range(0, len(steps), 500)]
        out = []
        for c in chunks:
            where = "" if c is None else f" AND step IN ({','.join('?' * len(c))})"
            out += [
                dict(
                    step=r["step"],
                    layer=r["layer"],
                    kind=r["kind"],
                    edges=json.loads(r["edges"]),
                    counts=json.loads(r["counts"]),
                    nonfinite=r["nonfinite"],
                )
                for r in self.db.execute(q + where + " ORDER BY step", args + (c or []))
            ]
        return out

    def nonfinite(self, run_id: str, kind: str, layer: str, after_step: int = -1) -> list[tuple[int, int]]:
        """(step, count of NaN and inf values) of one layer's histograms, after after_step."""
        return [
            tuple(r)
            for r in self.db.execute(
                "SELECT step, nonfinite FROM histograms WHERE run=? AND kind=? AND layer=? AND step>? ORDER BY step",
                (run_id, kind, layer, after_step),
            )
        ]

    def events(self, run_id: str, after_id: int = 0, limit: int | None = None, kind: str | None = None) -> list[dict]:
        q, args = "SELECT id, step, time, kind, data FROM events WHERE run=? AND id>?", (run_id, after_id)
        if kind:
            q, args = q + " AND kind=?", args + (kind,)
        q += " ORDER BY id"
        if limit:
            q, args = q + " LIMIT ?", args + (int(limit),)
        return [dict(id=i, step=s, time=t, kind=k, data=json.loads(d)) for i, s, t, k, d in self.db.execute(q, args)]

    def last_event(self, run_id: str, kind: str) -> dict | None:
        """The run's newest event of this kind, or None."""
        row = self.db.execute(
            "SELECT id, step, time, kind, data FROM events WHERE run=? AND kind=? ORDER BY id DESC LIMIT 1",
            (run_id, kind),
        ).fetchone()
        return None if row is None else dict(id=row[0], step=row[1], time=row[2], kind=row[3], data=json.loads(row[4]))

    def events_naming(self, kind: str, key: str, value: str) -> list[dict]:
        """Every run's events of this kind whose data[key] is value, oldest first, from runs that still exist."""
        rows = self.db.execute(
            "SELECT e.run, e.step, e.data FROM events e JOIN runs r ON r.id = e.run "
            "WHERE e.kind=? AND json_extract(e.data, '$.' || ?)=? ORDER BY e.id",
            (kind, key, value),
        )
        return [dict(run=r, step=s, data=json.loads(d)) for r, s, d in rows]

    # -- control --------------------------------------------------------------------------------

    @writes
    def send_control(self, run_id: str, command: str, value: float | None = None) -> int:
        cur = self.db.execute(
            "INSERT INTO control (run, time, command, value) VALUES (?,?,?,?)", (run_id, time.time(), command, value)
        )
        return cur.lastrowid

    def pending_control(self, run_id: str) -> list[dict]:
        return [
            dict(r)
            for r in self.db.execute(
                "SELECT id, command, value FROM control WHERE run=? AND acked IS NULL ORDER BY id", (run_id,)
            )
        ]

    @writes
    def ack_control(self, control_id: int, result: str = "ok"):
        self.db.execute("UPDATE control SET acked=?, result=? WHERE id=?", (time.time(), result, control_id))

    def control(self, control_id: int) -> dict | None:
        row = self.db.execute("SELECT * FROM control WHERE id=?", (control_id,)).fetchone()
        return dict(row) if row else None


def _run_dict(row) -> dict:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    return d
