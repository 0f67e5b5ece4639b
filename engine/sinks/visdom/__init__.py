"""Stream a run to a Visdom server without ever slowing or blocking training.

What goes where: one env per run (liveprop_<name>-<run id> unless overridden), with stable
window names, so a resumed run or a reloaded page draws into the same windows:
    run                       a text pane: status and config, HTML-escaped (Visdom renders HTML)
    loss                      raw and smoothed (EMA) loss per step
    lr, grad_norm, update_ratio   learning rate; per-layer gradient norms and ||dw|| / ||w||
    hist_weight, hist_grad    the latest histograms, one small plot per layer

How, and the facts about Visdom behind it:
- The training thread only calls on_flush / on_status, which put_nowait onto a bounded queue.
  When it is full the points are counted as dropped; the training thread never waits.
- The sink's thread keeps a mirror of every window, bounded by min-max decimation (engine/store/decimate.py):
  at most `max_points` per window, spikes kept. The server's cost per append grows with a window's
  size, and Visdom's page slows down at about 2,000 points per trace. Full resolution stays in the store.
- Every `interval` seconds it syncs: one request per changed window (its new points with
  update='append'), never one per step. Per-layer windows go at most every 2 intervals, the
  histograms every 3: each request costs some Python, under the training process's GIL.
  One append through the visdom client costs two HTTP round trips (about 6 ms on loopback), and
  that client posts with no timeout and prints and drops the data on an error; so this sink talks to
  Visdom's HTTP API with requests and a timeout on every request (client.py).
- Server down, refusing or stalled: the mirror is the buffer. A failed request marks its window
  for a full replace, so a timed-out request that the server did apply is not duplicated, and a
  server that restarted empty gets the whole series back. A cheap probe (does the text pane still
  exist?) notices a restart between two syncs. Retries back off up to 5 s. While disconnected,
  and at close if anything is undelivered, the mirror is spilled to a JSON-lines spool file;
  `python -m engine.sinks.visdom SPOOL` (or a later sink for the same run) replays it.
- status(): "connected", "buffering N" or "dropped N" (N points), plus the last error's text.
- The password comes from the environment only (client.py). It is never stored, logged or shown.

client.py: settings and the HTTP client; windows.py: the mirror; sink.py: the sink and replay.
"""

from engine.sinks.visdom.client import VisdomSettings, env_name, settings_for
from engine.sinks.visdom.sink import VisdomSink, replay

__all__ = ["VisdomSettings", "VisdomSink", "env_name", "replay", "settings_for"]
