"""python -m dashboard: the Streamlit dashboard and a local Visdom server, until Ctrl-C.

    python -m dashboard                      # http://127.0.0.1:8501, Visdom on http://127.0.0.1:8097
    LIVEPROP_PASSWORD=... python -m dashboard --host 0.0.0.0   # listen on every interface (exposed)

Both servers bind loopback unless asked otherwise. Off loopback neither has a login of its own, and
a visitor could start runs that read and write files, so an exposed dashboard needs
$LIVEPROP_PASSWORD (the environment, not a flag: argv shows in ps): the page asks for it, Visdom
requires a login with it (user $LIVEPROP_VISDOM_USERNAME, default "liveprop"), and runs may use
paths only under --data-root (exported as $LIVEPROP_DATA_ROOT; engine/config/reasons.py checks it). A
password set on loopback turns the same protection on there.

Ctrl-C (or SIGTERM) stops both; training runs keep going in the background (the engine owns them)
and the dashboard finds them again at its next start.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import engine
from engine.sinks.visdom import client as visdom_client
from engine.store.db import default_path

from . import gate, serve

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_DATA_ROOT = serve.ROOT / "data"  # RunConfig.data_root's default; relative paths are taken inside it
VISDOM_USER_VAR = visdom_client.ENV_VARS["username"]  # the runs' Visdom sink reads it too


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
    p.add_argument(
        "--data-root",
        help="runs may read and write only under this folder (env LIVEPROP_DATA_ROOT for the runs); "
        f"off loopback it defaults to {DEFAULT_DATA_ROOT}",
    )
    return p.parse_args(argv)


def refusal(args, password: str) -> str:
    """Why these settings must not start (one line), or ""."""
    if args.host not in LOOPBACK and not password:
        return (
            f"listening on {args.host} needs a password: set {gate.PASSWORD_VAR} in the environment "
            "(not on the command line, where ps shows it), or use --host 127.0.0.1"
        )
    if args.data_root and not os.path.isdir(args.data_root):
        return f"--data-root: {args.data_root} is not a folder"
    return ""


def data_root(args) -> str | None:
    """The folder runs are confined to: --data-root, or the default one off loopback (created)."""
    if args.data_root:
        return os.path.realpath(args.data_root)
    if args.host in LOOPBACK:
        return None
    DEFAULT_DATA_ROOT.mkdir(exist_ok=True)
    return os.path.realpath(DEFAULT_DATA_ROOT)


def streamlit_env(visdom, login, root: str | None) -> dict:
    """What the Streamlit server adds to our environment; the runs it launches inherit it all."""
    env = {}
    if visdom:
        env["LIVEPROP_VISDOM_URL"] = visdom.url
    if visdom and login:  # the runs' Visdom sink logs in with the digest: the password is in no environment
        env[VISDOM_USER_VAR], env[visdom_client.DIGEST_VAR] = login[0], visdom_client.password_digest(login[1])
    if root:
        env["LIVEPROP_DATA_ROOT"] = root
    return env


def start_visdom(host: str, port: int, login=None):
    """The local Visdom server, or None with the reason printed."""
    try:
        from engine.sinks.visdom import server as visdom_server
    except ImportError as e:
        print(f"Visdom server not started: {e}", file=sys.stderr)
        return None
    vhost = "127.0.0.1" if host in LOOPBACK else "0.0.0.0"  # visdom binds loopback or everything
    if vhost != "127.0.0.1":
        print("note: Visdom cannot bind one address; it listens on all interfaces", file=sys.stderr)
    try:
        return visdom_server.start(port=port, host=vhost, login=login)
    except Exception as e:  # the dashboard is still useful without it: say so, go on
        print(f"Visdom server not started: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def _interrupt(*_):
    raise KeyboardInterrupt  # SIGTERM stops both servers the way Ctrl-C does


def main(argv=None) -> int:
    args = parse(argv)
    # read once and dropped: no child inherits the plain text (the standby, Streamlit, the runs); those
    # that need it are given it (Streamlit a salted hash, the Visdom server the login through a pipe,
    # the runs' Visdom sink the digest that Visdom's login takes)
    password = os.environ.pop(gate.PASSWORD_VAR, "")
    if why := refusal(args, password):
        print(f"liveprop: error: {why}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(
            f"warning: listening on {args.host}: anyone who can reach this machine gets the password page, and "
            "with the password can start runs and read their data; the password is the only protection and "
            "travels in clear text: use TLS in front of it (a reverse proxy) or an SSH tunnel",
            file=sys.stderr,
        )
    signal.signal(signal.SIGTERM, _interrupt)
    engine.warm()  # a standby imports torch while the servers start, so the first Start is quick too
    login = (os.environ.get(VISDOM_USER_VAR) or "liveprop", password) if password else None
    visdom = None if args.no_visdom else start_visdom(args.host, args.visdom_port, login)
    env = streamlit_env(visdom, login, data_root(args))
    dash = None
    try:
        log = Path(default_path()).parent / "logs" / "dashboard.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        dash = serve.start(args.host, args.port, env=env, log=log, password=password)
        print(f"Liveprop dashboard: {dash.url}   (log: {log})", flush=True)
        if visdom:
            print(f"Visdom:             {visdom.url}" + (f"   (user {login[0]})" if login else ""), flush=True)
        if env.get("LIVEPROP_DATA_ROOT"):
            print(f"Runs may use paths under {env['LIVEPROP_DATA_ROOT']} only", flush=True)
        print("Ctrl-C stops both (training runs keep going in the background).", flush=True)
        code = dash.proc.wait()
        print(f"Streamlit exited with code {code}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        # the stop is under way: another Ctrl-C or SIGTERM would cut the clean-up short (each server is
        # given 5 s, then killed), and leave a server or the standby behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
