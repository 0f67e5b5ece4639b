"""Fast read paths over the run store for live panels (SQL only; no Streamlit, no writes).

The store's scalars table is keyed (run, key, step) and histograms (run, kind, layer, step), so
every query here is an index range: new rows after a cursor, the distinct keys by skipping along
the index, or per-bucket min/max/sum/count over a step range (one join over a temp table of
bucket bounds, no Python loop over rows). Nothing here writes to the store (only to the
connection's own temp schema). Engine gap worked around here: Store.scalar_keys() is a SELECT DISTINCT that scans every
row of a run, and Store.scalars_downsampled() needs two passes; on a 1,000,000-step run both cost
several hundred milliseconds.
"""
from __future__ import annotations

import json
import os
import sqlite3

from engine.store import BLOCK, Store, default_path


def connect(path: str | None = None) -> sqlite3.Connection:
    """A connection that only reads (creating the store first if it does not exist yet)."""
    path = str(path or default_path())
    if not os.path.exists(path):
        Store(path).close()                     # creates the file and its schema
    db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)   # autocommit
    db.execute("PRAGMA busy_timeout=10000")
    return db


def _distinct(db, sql_first: str, sql_next: str, args: tuple) -> list[str]:
    """Distinct values of an index column, by seeking to the next one (no full scan)."""
    out = []
    row = db.execute(sql_first, args).fetchone()
    while row and row[0] is not None:
        out.append(row[0])
        row = db.execute(sql_next, (*args, row[0])).fetchone()
    return out


def scalar_keys(db, run: str) -> list[str]:
    return _distinct(db, "SELECT MIN(key) FROM scalars WHERE run=?",
                     "SELECT MIN(key) FROM scalars WHERE run=? AND key>?", (run,))


def hist_layers(db, run: str, kind: str) -> list[str]:
    return _distinct(db, "SELECT MIN(layer) FROM histograms WHERE run=? AND kind=?",
                     "SELECT MIN(layer) FROM histograms WHERE run=? AND kind=? AND layer>?", (run, kind))


def step_span(db, run: str, key: str, lo: int = -1, hi: int = 2**62) -> tuple[int, int] | None:
    """(first, last) step of a key within [lo, hi], by two index seeks."""
    q = "SELECT {}(step) FROM scalars WHERE run=? AND key=? AND step BETWEEN ? AND ?"
    first = db.execute(q.format("MIN"), (run, key, lo, hi)).fetchone()[0]
    if first is None:
        return None
    last = db.execute(q.format("MAX"), (run, key, lo, hi)).fetchone()[0]
    return first, last


def rows_after(db, run: str, key: str, after: int, limit: int | None = None) -> list[tuple]:
    """Full resolution: (step, value) with step > after, in step order."""
    q = "SELECT step, value FROM scalars WHERE run=? AND key=? AND step>? ORDER BY step"
    if limit:
        q += f" LIMIT {int(limit)}"
    return db.execute(q, (run, key, after)).fetchall()


def bucket_rows(db, run: str, key: str, buckets: int, lo: int = -1, hi: int = 2**62) -> list[tuple]:
    """Rows (s0, s1, vmin, vmax, vsum, n) of at most about `buckets` equal step ranges within
    [lo, hi]; one row per step when the range spans no more steps than that (full resolution)."""
    span = step_span(db, run, key, lo, hi)
    if span is None:
        return []
    first, last = span
    if last - first + 1 <= buckets:
        return [(s, s, v, v, v if v is not None else 0.0, 0 if v is None else 1)
                for s, v in db.execute("SELECT step, value FROM scalars WHERE run=? AND key=? "
                                       "AND step BETWEEN ? AND ? ORDER BY step", (run, key, first, last))]
    width = -(-(last - first + 1) // buckets)
    blocks = (last - first + 1) // BLOCK
    if blocks >= buckets // 2:         # the rollup still gives at least half the resolution asked for
        rows = rollup_rows(db, run, key, max(1, -(-blocks // buckets)), first, last)
        if rows:                       # else a store written around Store.write_flush: read the rows
            return rows
    # The bucket bounds go in a temp table keyed by their first step, so that the join walks the
    # buckets in order and SQLite aggregates without sorting: twice as fast as GROUP BY (step-a)/w,
    # which pushes every row through a temp b-tree.
    db.execute("CREATE TEMP TABLE IF NOT EXISTS lp_buckets (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL)")
    db.execute("DELETE FROM lp_buckets")
    db.executemany("INSERT INTO lp_buckets VALUES (?, ?)",
                   ((lo, lo + width - 1) for lo in range(first, last + 1, width)))
    return db.execute(
        "SELECT MIN(s.step), MAX(s.step), MIN(s.value), MAX(s.value), TOTAL(s.value), COUNT(s.value) "
        "FROM lp_buckets b JOIN scalars s ON s.run=? AND s.key=? AND s.step BETWEEN b.lo AND b.hi "
        "GROUP BY b.lo ORDER BY b.lo", (run, key)).fetchall()


def rollup_rows(db, run: str, key: str, k: int, first: int, last: int) -> list[tuple]:
    """bucket_rows from the store's rollup: buckets of k blocks (k * BLOCK steps), aligned to
    block boundaries. A 1,000,000-step run's loss reads about 4,000 rows instead of 10**6."""
    lo_b, hi_b = first // BLOCK, last // BLOCK
    rows = db.execute(
        "SELECT MIN(block), MAX(block), MIN(vmin), MAX(vmax), TOTAL(vsum), SUM(n) FROM rollup "
        "WHERE run=? AND key=? AND block BETWEEN ? AND ? GROUP BY block / ? ORDER BY block / ?",
        (run, key, lo_b, hi_b, k, k)).fetchall()
    return [(max(first, b0 * BLOCK), min(last, b1 * BLOCK + BLOCK - 1), vmin, vmax, vsum, n)
            for b0, b1, vmin, vmax, vsum, n in rows]


def hist_steps(db, run: str, kind: str, layer: str, after: int = -1) -> list[int]:
    return [r[0] for r in db.execute("SELECT step FROM histograms WHERE run=? AND kind=? AND layer=? AND step>? "
                                     "ORDER BY step", (run, kind, layer, after))]


def hist_at(db, run: str, kind: str, layer: str, steps: list[int]) -> list[dict]:
    """The histograms of one layer and kind at the given steps."""
    out = []
    for i in range(0, len(steps), 500):
        chunk = steps[i:i + 500]
        out += [dict(step=s, edges=json.loads(e), counts=json.loads(c), nonfinite=nf) for s, e, c, nf in db.execute(
            f"SELECT step, edges, counts, nonfinite FROM histograms WHERE run=? AND kind=? AND layer=? "
            f"AND step IN ({','.join('?' * len(chunk))}) ORDER BY step", (run, kind, layer, *chunk))]
    return out


def nonfinite_after(db, run: str, kind: str, layer: str, after: int) -> list[tuple]:
    return db.execute("SELECT step, nonfinite FROM histograms WHERE run=? AND kind=? AND layer=? AND step>? "
                      "ORDER BY step", (run, kind, layer, after)).fetchall()


def events_after(db, run: str, after_id: int = 0, limit: int = 500) -> list[dict]:
    return [dict(id=i, step=s, time=t, kind=k, data=json.loads(d)) for i, s, t, k, d in db.execute(
        "SELECT id, step, time, kind, data FROM events WHERE run=? AND id>? ORDER BY id LIMIT ?",
        (run, after_id, limit))]


def last_value(db, run: str, key: str):
    row = db.execute("SELECT step, value FROM scalars WHERE run=? AND key=? ORDER BY step DESC LIMIT 1",
                     (run, key)).fetchone()
    return row if row else (None, None)
