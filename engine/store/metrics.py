"""Full-resolution export of a run's metrics (the store keeps every step; nothing is downsampled)."""

from __future__ import annotations

import csv
import io
import json

from engine.store.db import opened


def series(run_id: str, store=None) -> dict[str, list[tuple[int, float | None]]]:
    with opened(store) as s:
        return {k: s.scalars(run_id, k) for k in sorted(s.scalar_keys(run_id))}


def metrics(run_id: str, fmt: str = "csv", store=None) -> str:
    """csv: one row per step, one column per metric (empty where not measured at that step).
    json: {"run": id, "series": {key: [[step, value], ...]}}."""
    data = series(run_id, store)
    if fmt == "json":
        return json.dumps({"run": run_id, "series": data}) + "\n"
    keys = list(data)
    rows: dict[int, dict] = {}
    for k, points in data.items():
        for step, v in points:
            rows.setdefault(step, {})[k] = v
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["step"] + keys)
    for step in sorted(rows):
        w.writerow([step] + [_fmt(rows[step].get(k, "")) for k in keys])
    return out.getvalue()


def _fmt(v):
    return "nan" if v is None else repr(v) if isinstance(v, float) else v


def final_loss(run_id: str, store=None) -> float | None:
    with opened(store) as s:
        return s.last_value(run_id, "loss")[1]
