"""The report: every bench figure as a ratio against its anchor, in bench/results/<machine>.json and .md.

    make bench                                   the whole report on this machine (12-14 minutes on 2 shared CPUs)
    python bench/report.py [--device cpu|cuda] [--rounds 12] [--quick] [--sections engine,store,...] [--out DIR]

Sections (each a bench/bench_*.py module, which also runs on its own):

    engine      engine vs bare loop per mode at the lecture size     bench_engine.py
    watch       liveprop.watch on a user's loop vs the same loop     bench_watch.py
    precision   bf16 (and tf32 on CUDA) vs fp32 on a wide MLP        bench_precision.py
    fast        the fast path vs the bare loop                       bench_precision.py
    visdom      the Visdom sink on vs off (a real server, loopback)  bench_visdom.py
    store       store rows/s with a dashboard reader polling         bench_store.py
    memory      worker RSS growth over a long run (target 50 MB)     bench_worker.py
    start       launch to the first stored loss point                bench_worker.py
    refresh     live panels' refresh on a 1,000,000-step run         bench_dashboard.py
    playground  a playground run's snapshot (the lens) on vs off     bench_playground.py

Pairs are measured interleaved in one run, the order alternating each round (bench/rows.py), and each row
reports the median of per-round ratios and the ratio of the medians. A section that needs what this
machine lacks (Visdom, Streamlit, Chromium: the GPU machine has none of them) gives "skipped" rows; one
whose feature is missing or refused here gives "not measured" rows; one that breaks gives a "failed" row
and the exit status 1. The files are rewritten after each section, so a run cut short keeps what it had.
A run of some sections only writes <machine>-<sections>.json and .md, and leaves the full report alone.

Environment knobs (make bench passes them through): BENCH_ROUNDS (default 12), BENCH_QUICK=1 (short chunks,
a short memory run and a small refresh run: a smoke test of the report, not figures), BENCH_CHUNK_S (seconds
per timed chunk, default 1.0), BENCH_MEMORY_S (seconds of the memory run, default 180), BENCH_START_ROUNDS
(launches per side for start to first point, default BENCH_ROUNDS), BENCH_SECTIONS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from rows import markdown_table, unmeasured

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = (
    "engine",
    "watch",
    "precision",
    "fast",
    "compile",
    "visdom",
    "store",
    "memory",
    "start",
    "refresh",
    "playground",
)
GROUPS = {  # a section's rows' group, for the row that says it was skipped or failed
    "engine": "engine vs bare",
    "watch": "watch vs bare",
    "precision": "bf16 vs fp32",
    "fast": "fast path vs bare",
    "visdom": "Visdom on vs off",
    "store": "store",
    "memory": "worker memory",
    "start": "start to first point",
    "refresh": "panel refresh",
    "playground": "playground snapshot",
}


def machine(device: str) -> str:
    """A short slug for the file names: cpu-2core, cuda-nvidia-h200."""
    if device == "cuda":
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def about(device: str) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    return {
        "machine": machine(device),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else cpu_name(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git": git("rev-parse", "--short", "HEAD"),
        "git_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_start": os.getloadavg()[0],
    }


def section_rows(name: str, args, tmp: str) -> list[dict]:
    """One section's rows. Imports happen here, so that a package this machine lacks skips only its section."""
    device, rounds, chunk_s = args.device, args.rounds, args.chunk_seconds
    store = os.path.join(tmp, f"{name}.db")
    if name == "engine":
        import bench_engine

        return bench_engine.report_rows(device, rounds, chunk_s, store)
    if name == "watch":
        import bench_watch

        return bench_watch.report_rows(device, rounds, chunk_s, store)
    if name in ("precision", "fast", "compile"):
        import bench_precision

        fn = {"precision": bench_precision.precision_rows, "fast": bench_precision.fast_rows}.get(
            name, bench_precision.compile_rows
        )
        return fn(device, rounds, chunk_s, store)
    if name == "visdom":
        import bench_visdom

        return bench_visdom.report_rows(device, rounds, 60 if args.quick else 0, tmp)
    if name == "store":
        import bench_store

        return bench_store.report_rows(rounds, chunk_s, tmp)
    if name == "memory":
        import bench_worker

        return bench_worker.memory_rows(device, args.memory_seconds, tmp)
    if name == "start":
        import bench_worker

        return bench_worker.start_rows(device, args.start_rounds, tmp)
    if name == "refresh":
        import bench_dashboard

        if args.quick:
            return bench_dashboard.report_rows(4.0, Path(tmp), steps=20_000)
        return bench_dashboard.report_rows(20.0, Path(tmp))
    if name == "playground":
        import bench_playground

        return bench_playground.report_rows(device, rounds, chunk_s, store)
    raise ValueError(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")


def run_section(name: str, args, tmp: str) -> list[dict]:
    t = time.perf_counter()
    try:
        rows = section_rows(name, args, tmp)
    except ImportError as e:  # Visdom, Streamlit, Playwright: absent on the GPU machine
        rows = [unmeasured(GROUPS[name], "every row", f"needs {e.name or e}, not installed here", status="skipped")]
    except Exception as e:
        traceback.print_exc()
        rows = [unmeasured(GROUPS.get(name, name), "every row", f"{type(e).__name__}: {e}", status="failed")]
    for r in rows:
        r["section"], r["section_s"] = name, round(time.perf_counter() - t, 1)
    return rows


def write(report: dict, out: Path) -> tuple[Path, Path]:
    """<machine>.json and .md; a run of some sections only writes <machine>-<sections>.*, beside the full one."""
    out.mkdir(parents=True, exist_ok=True)
    sections = report["sections"]
    stem = out / "-".join([report["about"]["machine"]] + ([] if set(sections) == set(SECTIONS) else sections))
    stem.with_suffix(".json").write_text(json.dumps(_finite(report), indent=1, allow_nan=False) + "\n")
    a = report["about"]
    md = (
        f"# Bench report: {a['machine']}\n\n"
        f"{a['device']}, {a['cpus']} CPUs, torch {a['torch']} ({a['torch_threads']} threads), Python {a['python']}, "
        f"commit {a['git']}{' with local changes' if a['git_changes'] else ''}, {a['date']}; "
        f"load average {a['load_average_start']:.1f} at the start"
        + (f", {a['load_average_end']:.1f} at the end" if "load_average_end" in a else "")
        + f". {report['rounds']} rounds per pair, interleaved (the order alternating each round), "
        f"{report['seconds']:.0f} s in all{' (quick: a smoke test, not figures)' if report['quick'] else ''}.\n\n"
        "Every figure is a ratio against its anchor: above 1 is faster for steps/s and rows/s, slower for "
        "seconds and milliseconds, more for MB (the `better` field of each row in the JSON says which way is "
        "good). A verdict is `met` when both statistics reach the target, `floor` when both reach only the "
        "floor.\n\n" + markdown_table(report["rows"])
    )
    stem.with_suffix(".md").write_text(md)
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def _finite(v):
    """NaN and infinity as null: strict JSON has neither."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def main(argv=None) -> int:
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", 12)))
    ap.add_argument("--quick", action="store_true", default=env("BENCH_QUICK", "") not in ("", "0"))
    ap.add_argument("--sections", default=env("BENCH_SECTIONS", ",".join(SECTIONS)))
    ap.add_argument("--chunk-seconds", type=float, default=None, help="seconds per timed chunk (default 1.0)")
    ap.add_argument("--memory-seconds", type=float, default=None, help="seconds of the memory run (default 180)")
    ap.add_argument("--start-rounds", type=int, default=None, help="launches per side (default --rounds)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.chunk_seconds = args.chunk_seconds or float(env("BENCH_CHUNK_S", 0.1 if args.quick else 1.0))
    args.memory_seconds = args.memory_seconds or float(env("BENCH_MEMORY_S", 8 if args.quick else 180))
    args.start_rounds = args.start_rounds or int(env("BENCH_START_ROUNDS", args.rounds))
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (one round each way)")
    sections = args.sections.split(",")
    report = {"about": about(args.device), "sections": sections, "rounds": args.rounds, "quick": args.quick}
    report.update(seconds=0.0, rows=[])
    t0 = time.perf_counter()
    print(f"bench report for {report['about']['machine']}: sections {args.sections}", flush=True)
    with tempfile.TemporaryDirectory(prefix="liveprop-report-") as tmp:
        for name in sections:
            rows = run_section(name, args, tmp)
            report["rows"] += rows
            report["seconds"] = time.perf_counter() - t0
            report["about"]["load_average_end"] = os.getloadavg()[0]
            paths = write(report, args.out)
            for r in rows:
                stat = (
                    f"{r['median_ratio']:.3f} / {r['ratio_of_medians']:.3f}  {r['verdict']}"
                    if r["status"] == "measured"
                    else f"{r['status']}: {r['note']}"
                )
                print(f"  [{r['section_s']:6.1f} s] {r['group']}: {r['name']}: {stat}", flush=True)
    print(f"wrote {paths[0]} and {paths[1]} in {report['seconds']:.0f} s")
    return 1 if any(r["status"] == "failed" for r in report["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
