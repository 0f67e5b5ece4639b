"""The CLI: python -m engine (or liveprop) {train, runs, metrics, pause, resume, stop, set-lr, fork, export, join, ...}.

Every RunConfig field has a flag (--batch-size, --lr, ...), generated from the dataclass, with its
help from the field's metadata (engine/config/fields.py help_for). Bad input gets one line on stderr and
exit status 2; nothing is launched and nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

from engine import sinks
from engine.config.fields import RunConfig, help_for
from engine.config.load import from_dict, load_file
from engine.config.reasons import reasons
from engine.errors import ConfigError, LivepropError, RunStateError
from engine.loop import distributed
from engine.runs import api as runs
from engine.runs import standby, worker
from engine.runs.progress import Progress, watch
from engine.store import metrics as export
from engine.store.db import opened

DRY_RUN = dict(
    steps=3, d_in=8, hidden=4, d_out=2, n_samples=8, batch_size=8, telemetry_every=1, image_size=8, flush_every=2
)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints usage too)
        # argparse shows a stray argument as given: a newline or an undecodable byte (\udc80) in it is escaped
        message = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
        sys.stderr.write(f"liveprop: error: {message}\n")
        sys.exit(2)


def add_config_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("run configuration (engine/config/fields.py)")
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f"{help_for(f.name)} (default {f.default!r})".replace("%", "%%")  # argparse formats help with %
        if isinstance(f.default, bool):
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif isinstance(f.default, tuple):  # at, rule: the flag once per entry
            metavar = "STEP:ACTION" if f.name == "at" else "RULE"
            g.add_argument(flag, dest=f.name, action="append", default=None, metavar=metavar, help=text)
        else:
            g.add_argument(
                flag,
                dest=f.name,
                type=type(f.default),
                default=None,
                metavar=type(f.default).__name__.upper(),
                help=text,
            )
    g.add_argument(
        "--no-visdom",
        dest="visdom",
        action="store_const",
        const="off",
        help="no Visdom streaming, even when $LIVEPROP_VISDOM_URL is set",
    )
    p.add_argument("--config", help="a TOML or JSON file of settings; flags override it")
    p.add_argument("--dry-run", action="store_true", help="a tiny configuration, as a smoke test")


def config_from_args(args) -> RunConfig:
    d = load_file(args.config) if args.config else {}
    if args.dry_run:
        d.update(DRY_RUN)
    for f in dataclasses.fields(RunConfig):
        v = getattr(args, f.name)
        if v is not None:
            d[f.name] = v
    cfg = from_dict(d)
    if "lr" in d and cfg.lr == 0:  # RunConfig's lr 0 means "the mode's default"; a given 0 is a mistake
        raise ConfigError(
            "learning rate must be a positive finite number, got 0 (leave --lr out for the mode's default)"
        )
    return cfg


def cmd_train(args):
    cfg = config_from_args(args)
    run_id, p = runs.create_run(cfg, args.store)
    print(f"device: {p.device_note}", file=sys.stderr)
    if args.detach:
        # the run is written; the worker starts it
        print(run_id)
        runs.spawn_worker(run_id, args.store)
        return 0
    length = f"{p.total_steps} steps" if p.total_steps else "until stopped"
    print(f"run {run_id}: {p.cfg.mode} / {p.cfg.arch} / {p.cfg.dataset}, {length}", file=sys.stderr)
    if p.cfg.world > 1:
        status = watch(run_id, args.store, Progress(p.total_steps))
    else:
        status = worker.run_worker(run_id, args.store, callbacks={"on_flush": [Progress(p.total_steps)]})
    sys.stderr.write("\n")
    run = runs.get_run(run_id, args.store)
    print(
        f"{status}: final loss {export.final_loss(run_id, args.store)}"
        + (f" ({run['error']})" if run["error"] else ""),
        file=sys.stderr,
    )
    for kind, info in sinks.last_status(run_id, args.store).items():
        print(sinks.describe(kind, info), file=sys.stderr)
    print(run_id)
    return 0 if status in ("finished", "stopped") else 1


def cmd_runs(args):
    with opened(args.store) as s:
        rows = runs.list_runs(s)
        for r in rows:  # the rate now, which set-lr (from here or the dashboard) changes while it trains
            r["current_lr"] = runs.current_lr(r["id"], s)
        if args.format == "json":
            print(json.dumps(rows, indent=1, default=str))
            return 0
        losses = [export.final_loss(r["id"], s) for r in rows]
    print(f"{'run':<23} {'status':<9} {'mode':<15} {'arch':<14} {'optimizer':<9} {'lr':>8} {'step':>9} {'loss':>10}")
    for r, loss in zip(rows, losses):
        c = r["config"]
        print(
            f"{r['id']:<23} {r['status']:<9} {c['mode']:<15} {c['arch']:<14} {c['optimizer'] or '-':<9} "
            f"{r['current_lr']:>8.1e} {r['step']:>4}/{r['total_steps'] or '?':<4} "
            f"{'-' if loss is None else format(loss, '.4g'):>10}"
        )
    return 0


def cmd_metrics(args):
    if runs.get_run(args.run, args.store) is None:
        raise RunStateError(f"no run {args.run!r}")
    sys.stdout.write(export.metrics(args.run, args.format, args.store))
    return 0


CONTROL_HELP = {
    "pause": "pause a run",
    "resume": "resume a paused run, or continue an ended one from its checkpoint (in place)",
    "stop": "stop a run (with a checkpoint)",
}


def cmd_control(args):
    if args.command == "resume" and _ended(args.run, args.store):  # from its checkpoint, in place
        step = runs.resume_run(args.run, args.steps, args.store)
        print(f"resumed {args.run} from step {step} in a background worker (`runs` shows it)")
        return 0
    if getattr(args, "steps", None):
        raise RunStateError("--steps applies to resuming an ended run; this one is still active")
    fn = {"pause": runs.pause, "resume": runs.resume, "stop": runs.stop}[args.command]
    cid = fn(args.run, store=args.store)
    return _report_ack(cid, args)


def _ended(run_id: str, store) -> bool:
    run = runs.get_run(run_id, store)
    return run is not None and run["status"] not in runs.ACTIVE


def cmd_set_lr(args):
    cid = runs.set_lr(args.run, args.lr, store=args.store)
    return _report_ack(cid, args)


def _report_ack(cid, args):
    ack = runs.wait_ack(cid, args.store, timeout=args.wait)
    if ack is None:
        print(f"sent; the worker has not acknowledged it within {args.wait:g} s", file=sys.stderr)
        return 1
    if ack["result"].startswith("ignored"):  # refused up front in runs.py, unless the status changed since
        print(f"liveprop: error: the worker {ack['result'].replace(': ', ' ', 1)}", file=sys.stderr)
        return 1
    print(f"{ack['command']}: {ack['result']}")
    return 0


def cmd_fork(args):
    if args.dry_run:
        raise ConfigError("--dry-run makes a new tiny run; a fork keeps its parent's model and data")
    changes = load_file(args.config) if args.config else {}
    for f in dataclasses.fields(RunConfig):
        if getattr(args, f.name) is not None:
            changes[f.name] = getattr(args, f.name)
    child = runs.fork(args.run, args.step, changes, args.store)
    print(f"forked {args.run} at step {runs.get_run(child, args.store)['step']}: {child}", file=sys.stderr)
    print(child)
    return 0


def cmd_export(args):
    from engine.tools.to_onnx import to_onnx

    info = to_onnx(args.run, args.onnx, args.store)
    print(f"{info['file']}: onnxruntime on {info['batch']} of the run's inputs differs from PyTorch by at most "
          f"{info['max_abs_diff']:.3g}")  # fmt: skip
    return 0


def cmd_landscape(args):
    from engine.runs import landscape

    done = landscape.run_job(args.run, args.grid, args.store)
    print(f"landscape of {args.run} at step {done['step']}: {done['done']}/{done['total']} points on {done['device']}")
    return 0


def cmd_delete(args):
    if not runs.delete_run(args.run, args.store):
        raise RunStateError(f"no run {args.run!r}")
    print(f"deleted {args.run}")
    return 0


def cmd_join(args):
    """This machine's share of a run on several machines: torchrun, in the foreground, at the run's
    rendezvous, with the run's nproc, nnodes and device as given here. Its processes get the run's config
    from rank 0 and open no store, so no store is shared between machines (SQLite's log needs one host)."""
    if args.nnodes < 2:
        raise ConfigError(f"--nnodes {args.nnodes}: a run on one machine has nothing to join")
    cfg = {"nproc": args.nproc, "nnodes": args.nnodes, "rdzv_endpoint": args.rdzv_endpoint, "device": args.device}
    problems = [r.text for name, r in reasons(RunConfig(**cfg)).items() if r.blocks and name in cfg]
    if problems:
        raise ConfigError(problems[0])
    return subprocess.call(distributed.command(args.run, "", cfg), cwd=runs.PROJECT)


def cmd_worker(args):
    try:
        status = worker.run_worker(args.run, args.store, device=args.device)
    except distributed.PeerFailed as e:  # a rank other than 0, whose peer failed: rank 0 reports the run
        print(f"liveprop: {e}", file=sys.stderr)
        return 1
    return 0 if status in ("finished", "stopped") else 1


def cmd_standby(args):
    return standby.serve(args.store, args.idle)


def main(argv=None):
    """The CLI's exit status. A reader that closes the pipe early (`| head`) ends any command quietly,
    with 141 as a shell gives a process that SIGPIPE ended (Python ignores that signal)."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
    except BrokenPipeError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())  # what is left in stdout's buffer goes nowhere at exit
        os.close(null)
        return 141


def _main(argv):
    p = Parser(prog="python -m engine", description="Liveprop's training engine")
    p.add_argument("--store", default=None, help="run store path (default $LIVEPROP_STORE or runs/liveprop.db)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train in the foreground with a progress bar; prints the run id")
    add_config_flags(t)
    t.add_argument("--detach", action="store_true", help="start a background worker instead")
    t.set_defaults(fn=cmd_train)

    r = sub.add_parser("runs", help="a table of runs")
    r.add_argument("--format", choices=["table", "json"], default="table")
    r.set_defaults(fn=cmd_runs)

    m = sub.add_parser("metrics", help="the full series of a run (not downsampled)")
    m.add_argument("run")
    m.add_argument("--format", choices=["csv", "json"], default="csv")
    m.set_defaults(fn=cmd_metrics)

    for name in ("pause", "resume", "stop"):
        c = sub.add_parser(name, help=CONTROL_HELP[name])
        c.add_argument("run")
        c.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the acknowledgement")
        c.set_defaults(fn=cmd_control, command=name)
        if name == "resume":
            c.add_argument("--steps", type=int, default=None, help="an ended run: train to this step")
    s = sub.add_parser("set-lr", help="change a run's learning rate while it trains")
    s.add_argument("run")
    s.add_argument("lr", type=float)
    s.add_argument("--wait", type=float, default=10.0)
    s.set_defaults(fn=cmd_set_lr)

    f = sub.add_parser("fork", help="a new run at exactly step K of a run, with a new lr or optimizer")
    f.add_argument("run")
    f.add_argument(
        "--step",
        type=int,
        required=True,
        help="fork at exactly this step: the parent's steps from its nearest checkpoint are replayed",
    )
    add_config_flags(f)
    f.set_defaults(fn=cmd_fork)

    e = sub.add_parser("export", help="export a run's model to ONNX and check it with onnxruntime")
    e.add_argument("run")
    e.add_argument("--onnx", required=True, metavar="FILE", help="where to write the .onnx file")
    e.set_defaults(fn=cmd_export)

    ls = sub.add_parser("landscape", help="the loss landscape of a paused or ended run, around its latest checkpoint")
    ls.add_argument("run")
    ls.add_argument("--grid", type=int, default=21, help="points a side of the 2-D slice (3 to 41; default 21)")
    ls.set_defaults(fn=cmd_landscape)

    d = sub.add_parser("delete", help="delete a run, its metrics and its files (stopping it first if active)")
    d.add_argument("run")
    d.set_defaults(fn=cmd_delete)

    j = sub.add_parser("join", help="another machine's processes for a run on several machines (nnodes > 1)")
    j.add_argument("run")
    j.add_argument("--rdzv-endpoint", required=True, help="the run's rendezvous, HOST:PORT (its rdzv_endpoint)")
    j.add_argument("--nnodes", type=int, default=2, help="machines of the run, as launched (default 2)")
    j.add_argument("--nproc", type=int, default=1, help="processes on this machine, as the run's nproc (default 1)")
    j.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="the run's device")
    j.set_defaults(fn=cmd_join)

    w = sub.add_parser("worker", help="(internal) the background worker for a run")
    w.add_argument("run")
    w.add_argument("--device", default="auto", help=argparse.SUPPRESS)
    w.set_defaults(fn=cmd_worker)

    sb = sub.add_parser("standby", help="(internal) a warm worker that waits for the store's next run")
    sb.add_argument(
        "--idle", type=float, default=None, help="seconds to wait unclaimed (default $LIVEPROP_STANDBY_IDLE or 600)"
    )
    sb.set_defaults(fn=cmd_standby)

    # --store is accepted after the subcommand too
    for sp in (t, r, m, s, f, e, ls, d, j, w, sb, *[sub.choices[n] for n in ("pause", "resume", "stop")]):
        sp.add_argument("--store", default=argparse.SUPPRESS)

    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except LivepropError as e:
        sys.stderr.write(f"liveprop: error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
