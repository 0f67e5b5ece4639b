"""Precision and the fast path: bf16 (and tf32) against fp32, and the engine's fast path against the bare loop.

Both sides of each pair are the engine as bench_engine runs it (default telemetry, a real store on its own
thread), interleaved in one process. The rows are driven by RunConfig: a knob the engine does not have yet
(a `fast` field), or one it refuses here (ConfigError, e.g. the fast path on the CPU), gives a row that says
so, and the row fills in once the engine has it. A precision whose first loss equals fp32's to the bit has
not taken effect in the mode: the row says that too, rather than timing fp32 twice.

    bf16 vs fp32   optim (Adam) on an MLP of depth 4: 4096 wide at batch 4096 on CUDA (the issue's target
                   is 3x; fp32 ran about 130 steps/s on an H100), 512 wide at batch 512 on the CPU
    fast vs bare   manual, autograd and nn + Adam at the lecture's size (target 4x, on CUDA)
    compile        torch.compile against eager: nn + Adam at the lecture's size, and the wide MLP

    python bench/bench_precision.py [--device cpu|cuda] [--rounds 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

import torch
from bench_engine import CASES, chunk_for, engine_runner, timed
from rows import interleave, paired, unmeasured

from engine.build import assemble as build
from engine.config.fields import RunConfig
from engine.errors import ConfigError

FAST_CASES = ("manual", "autograd", "optim (adam)")


def wide_mlp(device) -> dict:
    d, batch = (4096, 4096) if device == "cuda" else (512, 512)
    return dict(mode="optim", arch="mlp", d_in=d, hidden=d, d_out=d, depth=4, batch_size=batch, n_samples=batch)


def first_loss(overrides, device) -> float:
    mode, batches = build.build(build.prepare(RunConfig(**overrides, device=device, steps=1)))
    x, y = next(batches)
    return float(mode.forward_backward(x, y))


def compare(anchor_over, value_over, device, rounds, chunk_s, store_path):
    """(anchor steps/s per round, value steps/s per round, chunk) for two engine configs."""
    a, a_sink = engine_runner(anchor_over, device, store_path, 10**9)
    b, b_sink = engine_runner(value_over, device, store_path, 10**9)
    run_a, run_b = (lambda n: a.run(max_steps=n)), (lambda n: b.run(max_steps=n))
    try:
        run_a(3), run_b(3)  # warm up both (cuBLAS handles, autocast caches)
        chunk = chunk_for(run_a, device, chunk_s)
        return (*interleave(lambda: timed(run_a, chunk, device), lambda: timed(run_b, chunk, device), rounds), chunk)
    finally:
        a_sink.close()
        b_sink.close()


def precision_rows(device, rounds, chunk_s, store_path) -> list[dict]:
    group, base = "bf16 vs fp32", wide_mlp(device)
    shape = f"MLP {base['hidden']} wide, depth 4, batch {base['batch_size']}, Adam"
    wanted = [("bf16", "bf16 vs fp32")] + ([("tf32", "tf32 vs fp32")] if device == "cuda" else [])
    out = []
    for precision, name in wanted:
        row_name = f"{name}, {shape}"
        other = {**base, "precision": precision}
        try:
            same = first_loss(other, device) == first_loss({**base, "precision": "fp32"}, device)
        except (ConfigError, TypeError) as e:  # TypeError: a RunConfig without the field
            out.append(unmeasured(group, row_name, f"the engine refuses precision {precision} here: {e}"))
            continue
        if same and precision == "bf16":
            out.append(unmeasured(group, row_name, "precision bf16 has no effect yet: its first loss equals fp32's"))
            continue
        fp32, other_rates, chunk = compare({**base, "precision": "fp32"}, other, device, rounds, chunk_s, store_path)
        target = {"ratio": 3.0} if device == "cuda" and precision == "bf16" else None
        note = f"the engine with full telemetry on both sides, {chunk} steps per chunk"
        out.append(paired(group, row_name, "steps/s", "fp32", fp32, other_rates, target=target, note=note))
    return out


def compile_rows(device, rounds, chunk_s, store_path) -> list[dict]:
    """torch.compile against the eager model, the engine on both sides: the lecture's nn + Adam, and the
    wide MLP. The compiler's own time (seconds on the first step) is spent in the warm-up, outside the rounds."""
    group, out = "compile vs eager", []
    cases = {"optim (adam), the lecture's size": CASES["optim (adam)"][1], "MLP, Adam": wide_mlp(device)}
    for name, base in cases.items():
        if name == "MLP, Adam":
            name = f"MLP {base['hidden']} wide, depth 4, batch {base['batch_size']}, Adam"
        try:
            build.prepare(RunConfig(**base, compile=True, device=device))
        except (ConfigError, TypeError) as e:
            out.append(unmeasured(group, name, f"the engine refuses compile here: {e}"))
            continue
        eager, compiled, chunk = compare(base, {**base, "compile": True}, device, rounds, chunk_s, store_path)
        note = f"the engine with full telemetry on both sides, {chunk} steps per chunk"
        out.append(paired(group, name, "steps/s", "eager", eager, compiled, note=note))
    return out


def fast_rows(device, rounds, chunk_s, store_path) -> list[dict]:
    group = "fast path vs bare"
    if "fast" not in {f.name for f in dataclasses.fields(RunConfig)}:
        return [unmeasured(group, name, "no fast path yet (RunConfig has no `fast` field)") for name in FAST_CASES]
    out = []
    for name in FAST_CASES:
        over = {**CASES[name][1], "fast": True}
        try:
            build.prepare(RunConfig(**over, device=device))  # a refusal is one line
        except ConfigError as e:
            out.append(unmeasured(group, name, f"the fast path refuses here: {e}"))
            continue
        bare, fast, chunk = fast_case(name, over, device, rounds, chunk_s, store_path)
        note = f"{chunk} steps per chunk"
        out.append(paired(group, name, "steps/s", "bare lecture loop", bare, fast, target={"ratio": 4.0}, note=note))
    return out


def fast_case(name, over, device, rounds, chunk_s, store_path):
    """(bare steps/s per round, fast-path steps/s per round, chunk)."""
    bare = CASES[name][0](device)
    fast, sink = engine_runner(over, device, store_path, 10**9)
    run = lambda n: fast.run(max_steps=n)  # noqa: E731
    try:
        bare(50), run(50)
        chunk = chunk_for(bare, device, chunk_s)
        run(chunk)
        return (*interleave(lambda: timed(bare, chunk, device), lambda: timed(run, chunk, device), rounds), chunk)
    finally:
        sink.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--chunk-seconds", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "bench.db")
        for row in precision_rows(args.device, args.rounds, args.chunk_seconds, store) + fast_rows(
            args.device, args.rounds, args.chunk_seconds, store
        ):
            stat = "" if row["status"] != "measured" else f"{row['median_ratio']:.3f} / {row['ratio_of_medians']:.3f}"
            print(f"{row['group']:<18} {row['name']:<50} {stat or row['status'] + ': ' + row['note']}")


if __name__ == "__main__":
    main()
