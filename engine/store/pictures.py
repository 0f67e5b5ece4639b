"""The store's pictures: what a playground run learned at a snapshot (engine/loop/learned.py Picture), each as its
values in half floats (2 bytes a value: a 128 x 128 picture of the decision regions takes 32 KiB). A part of Store
(engine/store/db.py), kept in its own module.
"""

from __future__ import annotations

import numpy as np

from engine.store.schema import MAX_PICTURE_STEPS


class Pictures:
    db = None  # the Store's connection

    def _write_pictures(self, run_id: str, pictures) -> None:
        """Each picture's values as half floats; past MAX_PICTURE_STEPS snapshots, every other one but the first and
        the last is dropped, so that the kept ones span the run (the points shown under them stay)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO pictures VALUES (?,?,?,?)",
            [(run_id, p.step, p.name, np.asarray(p.values, dtype="<f2").tobytes()) for p in pictures],
        )
        kept = "run=? AND name NOT LIKE 'points/%'"
        steps = [
            r[0] for r in self.db.execute(f"SELECT DISTINCT step FROM pictures WHERE {kept} ORDER BY step", (run_id,))
        ]
        if len(steps) > MAX_PICTURE_STEPS:
            drop = steps[1:-1:2]
            self.db.execute(
                f"DELETE FROM pictures WHERE {kept} AND step IN ({','.join('?' * len(drop))})", (run_id, *drop)
            )

    def picture_steps(self, run_id: str, name: str) -> list[int]:
        """The steps that have a picture `name` (engine/loop/learned.py Picture), in order."""
        rows = self.db.execute("SELECT step FROM pictures WHERE run=? AND name=? ORDER BY step", (run_id, name))
        return [r[0] for r in rows]

    def pictures(self, run_id: str, step: int, prefix: str = "") -> dict[str, list[float]]:
        """The pictures of one step whose name starts with prefix: {name: values}."""
        rows = self.db.execute(
            "SELECT name, data FROM pictures WHERE run=? AND step=? AND substr(name, 1, ?)=?",
            (run_id, step, len(prefix), prefix),
        )
        return {name: np.frombuffer(data, dtype="<f2").astype(float).tolist() for name, data in rows}
