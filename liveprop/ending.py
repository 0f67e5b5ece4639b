"""How a watched run ends: the two exceptions that reach the user's loop (the only ones liveprop ever raises into
it), and the status a run ends with."""

from __future__ import annotations

import traceback


class Stopped(KeyboardInterrupt):
    """A viewer stopped the run (the dashboard's Stop, `python -m engine stop RUN`, liveprop.stop): raised by
    run.step at the next step. A loop that handles Ctrl-C handles it too; `with liveprop.watch(...)` ends
    quietly on it, and the run is marked stopped."""


class NonFinite(FloatingPointError):
    """The loss or a gradient went NaN or inf, and watch was given on_nonfinite="raise"."""


def ending(exc: BaseException | None, stopping: bool = False) -> tuple[str, str | None]:
    """(status, error) of a run that ends with exc (None: it ran to its end): stopped on Stop and Ctrl-C,
    diverged on NonFinite, else failed with the exception's last line, as a traceback ends."""
    if exc is None:
        return ("stopped" if stopping else "finished"), None
    if isinstance(exc, KeyboardInterrupt):
        return "stopped", None
    line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return ("diverged" if isinstance(exc, NonFinite) else "failed"), line
