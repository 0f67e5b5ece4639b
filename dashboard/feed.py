"""What a browser session keeps per watched run: cursors and bounded buffers, filled incrementally.

A RunFeed is created empty. The first sync of a series reads it already bucketed by the store
(Store.bucketed: at most CAP buckets, whatever the run's length); every later sync reads only
rows after the cursor and appends them, compacting when the buffer passes CAP. Every read goes
through the `db` passed in, an engine.store.db.Store. The dashboard keeps RunFeeds in
st.session_state (a few runs at most, see pages_common.feed); this module knows nothing of Streamlit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .series import CAP, HIST_CAP, Buckets, HistBuffer, sample_steps

EVENT_CAP = 500  # events kept per run (the newest)
NEW_ROWS_LIMIT = 50 * CAP  # more new rows than this since the last refresh: re-read bucketed


@dataclass
class RunFeed:
    run: str
    series: dict = field(default_factory=dict)  # key -> Buckets
    cursors: dict = field(default_factory=dict)  # key -> last step read
    hists: dict = field(default_factory=dict)  # (kind, layer) -> HistBuffer
    events: list = field(default_factory=list)
    event_cursor: int = 0
    keys: list = field(default_factory=list)
    layers: dict = field(default_factory=dict)  # kind -> [layer]

    # -- scalars ---------------------------------------------------------------------------

    def sync_keys(self, db) -> list[str]:
        self.keys = db.scalar_keys(self.run)
        return self.keys

    def sync(self, db, key: str, cap: int = CAP) -> Buckets:
        """Bring one series up to date and return it."""
        if key not in self.series:
            return self._load(db, key, cap)
        new = db.scalars(self.run, key, self.cursors[key], limit=NEW_ROWS_LIMIT + 1)
        if len(new) > NEW_ROWS_LIMIT:  # fell far behind: cheaper to re-bucket
            return self._load(db, key, cap)
        if new:
            steps, values = zip(*new)
            self.series[key] = self.series[key].append(Buckets.from_points(steps, values), cap)
            self.cursors[key] = steps[-1]
        return self.series[key]

    def _load(self, db, key, cap):
        b = Buckets.from_rows(db.bucketed(self.run, key, cap))
        self.series[key] = b
        self.cursors[key] = b.last_step
        return b

    def sync_prefix(self, db, prefix: str, cap: int = CAP) -> dict[str, Buckets]:
        """Every series whose key starts with prefix, by the rest of its key (e.g. layer name)."""
        return {k[len(prefix) :]: self.sync(db, k, cap) for k in self.keys if k.startswith(prefix)}

    # -- histograms ------------------------------------------------------------------------

    def sync_layers(self, db, kind: str) -> list[str]:
        layers = db.hist_layers(self.run, kind)
        # weights before biases (w1, 0.weight, ... then b1, 0.bias), each in model order
        self.layers[kind] = sorted(layers, key=lambda n: (n.startswith("b") or n.endswith("bias"), _natural(n)))
        return self.layers[kind]

    def sync_hist(self, db, kind: str, layer: str, cap: int = HIST_CAP) -> HistBuffer:
        buf = self.hists.setdefault((kind, layer), HistBuffer(cap=cap))
        steps = db.hist_steps(self.run, kind, layer, buf.cursor)
        if steps:
            want = sample_steps(steps, cap)
            buf.extend(db.histograms(self.run, kind, layer, steps=want))
        return buf

    def sync_nonfinite(self, db, cap: int = CAP) -> dict[str, Buckets]:
        """Non-finite counts per kind (weight, grad), summed over layers, per snapshot step."""
        out = {}
        for kind in ("weight", "grad"):
            total = None
            for layer in self.layers.get(kind) or self.sync_layers(db, kind):
                key = f"nonfinite/{kind}/{layer}"
                cur = self.cursors.get(key, -1)
                rows = db.nonfinite(self.run, kind, layer, cur)
                if rows:
                    steps, values = zip(*rows)
                    prev = self.series.get(key, Buckets())
                    self.series[key] = prev.append(Buckets.from_points(steps, values), cap)
                    self.cursors[key] = steps[-1]
                b = self.series.get(key)
                if b is not None:
                    total = b if total is None else _sum_aligned(total, b)
            if total is not None:
                out[kind] = total
        return out

    # -- events ----------------------------------------------------------------------------

    def sync_events(self, db) -> list[dict]:
        new = db.events(self.run, self.event_cursor, limit=500)
        while new:
            self.events.extend(new)
            self.event_cursor = new[-1]["id"]
            new = db.events(self.run, self.event_cursor, limit=500) if len(new) >= 500 else []
        if len(self.events) > EVENT_CAP:
            keep = [e for e in self.events if e["kind"] in ("divergence", "error")][-20:]
            self.events = keep + [e for e in self.events[-EVENT_CAP:] if e not in keep]
        return self.events

    def events_of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind]


def _natural(name: str) -> list:
    """Sort key: numbers inside a name compare as numbers (layer10 after layer2)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _sum_aligned(a: Buckets, b: Buckets) -> Buckets:
    """Per-step sum of two series sampled at the same steps (per-layer non-finite counts)."""
    if len(a) != len(b) or (a.s0 != b.s0).any():
        return a if a.steps_covered >= b.steps_covered else b
    return Buckets(a.s0, a.s1, a.vmin + b.vmin, a.vmax + b.vmax, a.smin, a.smax, a.vsum + b.vsum, a.n)
