"""The sink's mirror of each Visdom window: what the server should show, and what it already has.

A line window holds one trace per name (raw and smoothed loss, or one per layer), each a min-max
decimated `Buckets` (engine/store/decimate.py) of at most max_points / (2 * traces) buckets, so the
window never has more than max_points points. A trace's points go to the server as they become
final: appended (update='append') while the server's copy is a prefix of the mirror, the whole
window (replace) after a compaction, a new trace or a failed request.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import asdict

from engine.loop.telemetry import Hist
from engine.sinks.ticks import log_ticks
from engine.store.decimate import Buckets

TEXT_WIN = "run"


class Series:
    """One trace: its buckets, and how many of them (from the first) the server has."""

    def __init__(self, buckets: Buckets | None = None):
        self.b = Buckets() if buckets is None else buckets
        self.sent = 0

    def extend(self, xs: list, ys: list, cap: int) -> bool:
        """Add points at later steps (None or non-finite: a gap); at most cap buckets are kept.
        True when a bucket the server has changed (the window must then be replaced)."""
        old = self.b
        self.b = old.append(Buckets.from_points(xs, ys), cap)
        if self.b.width != old.width:  # compacted: every bucket may have merged
            return True
        return 0 < self.sent == len(old) and self.b.s1[self.sent - 1] != old.s1[-1]  # its last bucket grew

    def ready(self, final: bool) -> int:
        """How many buckets can be sent: all at the end of the run, else all but a last one whose
        grid cell may still get steps (sending it would mean replacing it later)."""
        n = len(self.b)
        return n if final or (self.b.last_step + 1) % self.b.width == 0 else n - 1

    def points(self, start: int, stop: int) -> tuple[list, list]:
        """Points of buckets[start:stop] as JSON lists: None for a gap (JSON has no NaN)."""
        x, y = self.b.points(start, stop)
        return x.tolist(), [v if math.isfinite(v) else None for v in y.tolist()]

    def to_json(self) -> dict:
        x, y = self.points(0, len(self.b))
        return {"x": x, "y": y, "width": self.b.width}

    @classmethod
    def from_json(cls, d: dict) -> Series:
        """The buckets back from their points: a bucket's min and max point merge again in its grid cell."""
        points = Buckets.from_points(d["x"], d["y"])
        return cls(Buckets(width=d["width"]).append(points, cap=max(1, len(points))))


def _trace(name, xy):
    return {"x": xy[0], "y": xy[1], "name": name, "type": "scatter", "mode": "lines"}


class LineWindow:
    """A line plot with one trace per name (a layer, or raw/smoothed loss)."""

    def __init__(self, win: str, title: str, ytype: str = "linear"):
        self.win, self.title, self.ytype = win, title, ytype
        self.gap, self.sent_at = 0.0, 0.0  # seconds between two sends; the last send
        self.traces: dict[str, Series] = {}
        self.replace = False  # the server's copy is stale or unknown: send it whole
        self.final = False  # the run ended: send the last, partly filled buckets too
        self.pending = 0  # telemetry points not yet delivered

    def add(self, name: str, xs: list, ys: list, max_points: int):
        if name not in self.traces:
            self.replace |= any(s.sent for s in self.traces.values())  # the server's window lacks it
            self.traces[name] = Series()
        cap = max(1, max_points // (2 * len(self.traces)))  # buckets: 2 points each at most
        self.replace |= self.traces[name].extend(xs, ys, cap)
        self.pending += len(xs)

    def changed(self) -> bool:  # an empty window is never sent
        return bool(self.traces) and (self.replace or any(s.ready(self.final) > s.sent for s in self.traces.values()))

    def message(self, env: str) -> tuple[str, dict]:
        layout = {
            "showlegend": True,
            "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
            "xaxis": {"title": {"text": "step"}},
            # 1e-6, not SI's "1µ" or a bare mantissa: the same labels as the dashboard's
            "yaxis": {"type": self.ytype, "exponentformat": "e", **(self._log_ticks() if self.ytype == "log" else {})},
        }
        msg = {"win": self.win, "eid": env, "layout": layout, "opts": {"title": self.title}}
        if self.replace:
            msg["data"] = [_trace(n, s.points(0, s.ready(self.final))) for n, s in self.traces.items()]
            return "events", msg
        # one trace entry per existing trace, in order; an empty one leaves that trace as it is
        msg["data"] = [_trace(n, s.points(s.sent, s.ready(self.final))) for n, s in self.traces.items()]
        return "update", {**msg, "append": True, "name": None}

    def _log_ticks(self) -> dict:
        """A few plain labels over every value the window shows (engine/sinks/ticks.py)."""
        return log_ticks([y for s in self.traces.values() for y in s.points(0, len(s.b))[1] if y is not None])

    def delivered(self):
        for s in self.traces.values():
            s.sent = s.ready(self.final)
        self.replace, self.pending = False, 0

    def to_json(self) -> dict:
        return {"win": self.win, "traces": {n: s.to_json() for n, s in self.traces.items()}}


class HistWindow:
    """The latest histogram of each layer, one small bar plot per layer in a grid."""

    def __init__(self, kind: str):
        self.kind, self.win = kind, f"hist_{kind}"
        self.gap, self.sent_at = 0.0, 0.0
        self.latest: dict[str, Hist] = {}
        self.replace = False

    def add(self, h: Hist):
        if h.layer not in self.latest or h.step >= self.latest[h.layer].step:
            self.latest[h.layer] = h
            self.replace = True

    @property
    def pending(self):
        return len(self.latest) if self.changed() else 0

    def changed(self) -> bool:
        return self.replace and bool(self.latest)

    def message(self, env: str) -> tuple[str, dict]:
        cols = min(3, len(self.latest))
        rows = math.ceil(len(self.latest) / cols)
        data, notes = [], []
        for i, (layer, h) in enumerate(self.latest.items()):
            ax = "" if i == 0 else str(i + 1)
            e = h.edges
            data.append(
                {
                    "type": "bar",
                    "name": layer,
                    "xaxis": "x" + ax,
                    "yaxis": "y" + ax,
                    "x": [(a + b) / 2 for a, b in zip(e, e[1:])],
                    "y": h.counts,
                    "width": (h.hi - h.lo) / len(h.counts) or None,
                    "marker": {"line": {"width": 0}},
                }
            )
            label = layer + (f" ({h.nonfinite} non-finite)" if h.nonfinite else "")
            notes.append(
                {
                    "text": html.escape(label),
                    "showarrow": False,
                    "font": {"size": 11},
                    "xref": f"x{ax} domain",
                    "yref": f"y{ax} domain",
                    "x": 0.5,
                    "y": 1.0,
                    "xanchor": "center",
                    "yanchor": "bottom",
                }
            )
        step = max(h.step for h in self.latest.values())
        layout = {
            "grid": {"rows": rows, "columns": cols, "pattern": "independent"},
            "showlegend": False,
            "annotations": notes,
            "bargap": 0,
            "margin": {"l": 40, "r": 10, "t": 30, "b": 30},
        }
        opts = {"title": f"{self.kind} histograms, step {step}", "width": 180 + 170 * cols, "height": 90 + 150 * rows}
        return "events", {"data": data, "win": self.win, "eid": env, "layout": layout, "opts": opts}

    def delivered(self):
        self.replace = False

    def to_json(self) -> dict:
        return {"hist": self.kind, "latest": [asdict(h) for h in self.latest.values()]}


class TextPane:
    """The run's status and config. Every value is HTML-escaped; no secret is ever in it."""

    def __init__(self, run_id: str, config: dict):
        self.win, self.run_id = TEXT_WIN, run_id
        self.gap, self.sent_at = 0.0, 0.0
        self.config = {k: v for k, v in config.items() if not re.search("password|secret|token", k, re.I)}
        self.status, self.replace, self.pending = "starting", True, 0

    def set_status(self, status: str):
        if status != self.status:
            self.status, self.replace = status, True

    def set_value(self, key: str, value):
        if self.config.get(key) != value:
            self.config[key], self.replace = value, True

    def changed(self) -> bool:
        return self.replace

    def message(self, env: str) -> tuple[str, dict]:
        esc = lambda v: html.escape(str(v), quote=True)  # noqa: E731
        rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in self.config.items())
        content = (
            f"<b>run</b> {esc(self.run_id)} &nbsp; <b>status</b> {esc(self.status)}"
            f"<table style='font-size:12px'>{rows}</table>"
        )
        return "events", {
            "data": [{"content": content, "type": "text"}],
            "win": self.win,
            "eid": env,
            "opts": {"title": "run"},
        }

    def delivered(self):
        self.replace = False

    def to_json(self) -> dict:
        return {"text": {"run": self.run_id, "config": self.config, "status": self.status}}
