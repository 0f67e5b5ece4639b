"""python -m dashboard: the Streamlit dashboard and a local Visdom server, until Ctrl-C.

    python -m dashboard                      # http://127.0.0.1:8501, Visdom on http://127.0.0.1:8097
    LIVEPROP_HOST=0.0.0.0 python -m dashboard   # or --host: listen on other interfaces too

Both servers bind loopback unless asked otherwise. Ctrl-C (or SIGTERM) stops both; training runs
keep going in the background (the engine owns them) and the dashboard finds them again at its
next start.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import engine
from engine.store import default_path

from . import serve

LOOPBACK = ("127.0.0.1", "localhost")


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__.split("\n")[0])
    p.add_argument(
        "--host",
        default=os.environ.get("LIVEPROP_HOST", serve.DEFAULT_HOST),
        help="address to listen on (env LIVEPROP_HOST; default 127.0.0.1, loopback only)",
    )
    p.add_argument("--port", type=int, default=serve.DEFAULT_PORT, help="dashboard port (default 8501)")
    p.add_argument("--visdom-port", type=int, default=8097, help="Visdom port (default 8097; 0 picks a free one)")
    p.add_argument("--no-visdom", action="store_true", help="do not start the Visdom server")
    return p.parse_args(argv)


def start_visdom(host: str, port: int):
    """The local Visdom server, or None with the reason printed."""
    try:
        from engine import visdom_server
    except ImportError as e:
        print(f"Visdom server not started: {e}", file=sys.stderr)
        return None
    vhost = "127.0.0.1" if host in LOOPBACK else "0.0.0.0"  # visdom binds loopback or everything
    if vhost != "127.0.0.1":
        print("note: Visdom cannot bind one address; it listens on all interfaces", file=sys.stderr)
    try:
        return visdom_server.start(port=port, host=vhost)
    except Exception as e:  # the dashboard is still useful without it: say so, go on
        print(f"Visdom server not started: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def _interrupt(*_):
    raise KeyboardInterrupt  # SIGTERM stops both servers the way Ctrl-C does


def main(argv=None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    engine.warm()  # a standby imports torch while the servers start, so the first Start is quick too
    visdom = None if args.no_visdom else start_visdom(args.host, args.visdom_port)
    env = {"LIVEPROP_VISDOM_URL": visdom.url} if visdom else {}
    dash = None
    try:
        log = Path(default_path()).parent / "logs" / "dashboard.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        dash = serve.start(args.host, args.port, env=env, log=log)
        print(f"Liveprop dashboard: {dash.url}   (log: {log})", flush=True)
        if visdom:
            print(f"Visdom:             {visdom.url}", flush=True)
        print("Ctrl-C stops both (training runs keep going in the background).", flush=True)
        code = dash.proc.wait()
        print(f"Streamlit exited with code {code}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
        return 0
    finally:
        if dash:
            dash.stop()
        if visdom:
            visdom.stop()
        engine.retire_standby()  # no torch-loaded process outlives the dashboard (runs do: the engine owns them)


if __name__ == "__main__":
    sys.exit(main())
