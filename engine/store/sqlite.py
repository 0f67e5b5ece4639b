"""How the store uses SQLite: a write that finds the disk full, and a transaction that takes the write lock
at once (BEGIN IMMEDIATE, so two writers queue instead of failing half-way)."""

from __future__ import annotations

import functools
import sqlite3

from engine.errors import DiskFull


def writes(method):
    """A write of the store: SQLite's "database or disk is full" becomes DiskFull, one line."""

    @functools.wraps(method)
    def write(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            if getattr(e, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            raise DiskFull(f"the disk holding the run store {self.path} is full") from None

    return write


class Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        if not exc_type:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite may have rolled back already (a full disk does)
            self.db.execute("ROLLBACK")
