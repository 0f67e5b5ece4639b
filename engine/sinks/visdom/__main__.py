"""python -m engine.sinks.visdom SPOOL: send a spooled run to a Visdom server; exit 1 unless delivered."""

import argparse
import os
import sys

from engine.sinks.visdom.client import DIGEST_VAR, ENV_VARS, PASSWORD_VAR, VisdomSettings
from engine.sinks.visdom.sink import replay

ap = argparse.ArgumentParser(prog="python -m engine.sinks.visdom", description=replay.__doc__)
ap.add_argument("spool", help="the run's spool, runs/visdom/RUN.jsonl")
ap.add_argument("--visdom", default=os.environ.get(ENV_VARS["url"], "http://127.0.0.1:8097"), metavar="URL")
ap.add_argument("--env", default="main", help="default: the run's env")
a = ap.parse_args()
settings = VisdomSettings(
    url=a.visdom,
    env=a.env,
    base_url=os.environ.get(ENV_VARS["base_url"], ""),
    username=os.environ.get(ENV_VARS["username"], ""),
    password=os.environ.get(PASSWORD_VAR, ""),
    password_sha256=os.environ.get(DIGEST_VAR, ""),
)
result = replay(a.spool, settings)
print(f"visdom: {result}")
sys.exit(0 if result == "connected" else 1)
