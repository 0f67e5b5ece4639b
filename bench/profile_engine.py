"""Where the engine's time goes against the bare lecture loop: cProfile, torch.profiler and timed parts.

For each mode (manual and optim at the lecture's size by default), the engine as bench_engine runs it
(default telemetry, a real store sink on its own thread) and the bare loop:

    1. steps/s of both, interleaved, and the engine's time per step beyond the bare loop's;
    2. cProfile of the engine's loop (Python functions by their own time, per step);
    3. torch.profiler of both loops (operators by their own CPU time, per step), and the operators the
       engine runs that the bare loop does not;
    4. the trainer's parts timed alone, then spread over the steps at the rates they run at: the divergence
       copy Trainer._weights (each flush), Telemetry.flush, a snapshot (before_update + after_update),
       the finite-loss look (every guard.LOOK_EVERY steps), record_loss + flush_due (every step), next(batches);
    5. the trainer's whole loop around a mode that does no work, and torch.optim.Adam's variants;
    6. (--in-loop) engine / bare for loops that add the trainer's pieces one at a time around the mode, at
       --threads threads (1 by default there: a 2-core shared box is too noisy at 2).

bench/results/profile-cpu.md has what was found on the CPU with it.

    python bench/profile_engine.py [--device cpu|cuda] [--cases manual,optim (adam)] [--steps 3000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import statistics
import tempfile
import time

import torch
from bench_engine import CASES, D_in, D_out, H, N, engine_runner, sync, timed
from rows import interleave

from engine.build import assemble as build
from engine.config.fields import RunConfig
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer


def per_call_us(fn, n=200):
    """Median microseconds of one call of fn, over n calls (after 5 to warm up)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def rates(name, device, steps, store_path, rounds=6):
    bare = CASES[name][0](device)
    trainer, sink = engine_runner(CASES[name][1], device, store_path, 10**9)
    engine = lambda n: trainer.run(max_steps=n)  # noqa: E731
    bare(200), engine(steps)
    b, e = interleave(lambda: timed(bare, steps, device), lambda: timed(engine, steps, device), rounds)
    sink.close()
    return statistics.median(b), statistics.median(e)


def python_profile(name, device, steps, store_path, top=14):
    trainer, sink = engine_runner(CASES[name][1], device, store_path, 10**9)
    trainer.run(max_steps=steps)  # warm
    prof = cProfile.Profile()
    prof.enable()
    trainer.run(max_steps=steps)
    sync(device)
    prof.disable()
    sink.close()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    return "\n".join(lines[-(top + 1) :])


def op_profile(fn, steps, device, top=12):
    """{op: self CPU us per step} over `steps` steps of fn, and the table's text."""
    fn(50)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        fn(steps)
        sync(device)
    ops = {e.key: e.self_cpu_time_total / steps for e in prof.key_averages()}
    return ops, prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def engine_op_profile(name, device, steps, store_path):
    trainer, sink = engine_runner(CASES[name][1], device, store_path, 10**9)
    trainer.run(max_steps=steps)
    try:
        return op_profile(lambda n: trainer.run(max_steps=n), steps, device)
    finally:
        sink.close()


class NullMode:
    """A mode that does no work: a loop with it costs only the trainer's and the telemetry's own Python."""

    lr = 1e-6
    optimizer = model = None

    def __init__(self, device):
        self.params = {"w1": torch.randn(D_in, H, device=device), "w2": torch.randn(H, D_out, device=device)}
        self.loss = torch.ones((), device=device)

    def forward_backward(self, x, y):
        return self.loss

    def update(self):
        pass

    def zero_grad(self):
        pass

    def named_params(self):
        return list(self.params.items())

    def named_grads(self):
        return list(self.params.items())

    def reference_grads(self, x, y):
        return None


class OneBatch:
    """The same (x, y) every step, as engine/build/batches.py Batches gives the one full batch (no position)."""

    def __init__(self, x, y):
        self.batch = (x, y)

    def __next__(self):
        return self.batch

    def position(self):
        return None


def loop_us(device, steps=50_000):
    """us per step of the trainer's loop around a mode that does nothing (snapshots and flushes included)."""
    x, y = torch.randn(N, D_in, device=device), torch.randn(N, D_out, device=device)
    trainer = Trainer(NullMode(device), OneBatch(x, y), Telemetry(device=torch.device(device), batch_size=N), None)
    trainer.run(max_steps=steps // 2)
    return statistics.median(1e6 / timed(lambda n: trainer.run(max_steps=n), steps, device) for _ in range(5))


def adam_variants(device, rounds=8):
    """The bare lecture nn + Adam loop's us per step with torch.optim.Adam's default, foreach and fused."""

    def make(**kw):
        x, y = torch.randn(N, D_in, device=device), torch.randn(N, D_out, device=device)
        model = torch.nn.Sequential(torch.nn.Linear(D_in, H), torch.nn.ReLU(), torch.nn.Linear(H, D_out)).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, **kw)

        def run(n):
            for _ in range(n):
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
                opt.zero_grad()

        run(50)
        return run

    runs = {"default": make(), "foreach": make(foreach=True), "fused": make(fused=True)}
    got = {k: [] for k in runs}
    for r in range(rounds):
        for k in list(runs)[:: 1 if r % 2 == 0 else -1]:
            got[k].append(1e6 / timed(runs[k], 500, device))
    return {k: statistics.median(v) for k, v in got.items()}


def in_loop(name, device, rounds=12, steps=1000):
    """Engine / bare, both statistics, for loops that add the trainer's pieces one at a time around the mode
    (each interleaved with the bare loop): where the gap comes from, measured in the loop, not part by part."""

    def fresh():
        return build.build(build.prepare(RunConfig(**CASES[name][1], device=device, steps=10**9)))

    def around(record):
        """The mode with next(batches), and record(loss) after each step."""
        mode, batches = fresh()

        def run(n):
            for _ in range(n):
                x, y = next(batches)
                loss = mode.forward_backward(x, y)
                mode.update()
                mode.zero_grad()
                record(loss)

        return run

    kept, floats, tel = [], [], Telemetry(device=torch.device(device), batch_size=N)

    def keep(loss):  # what record_loss does: the 0-dim tensor, until the flush
        kept.append(loss)
        if len(kept) >= 2000:
            kept.clear()

    def as_float(loss):  # a float instead, checked with math.isfinite every 4 steps (the CPU only)
        floats.append(loss.item())
        if len(floats) % 4 == 0 and not all(map(math.isfinite, floats[-4:])):
            raise FloatingPointError
        if len(floats) >= 2000:
            floats.clear()

    def telemetry(loss):
        tel.record_loss(0, loss)
        if tel.flush_due():
            tel.flush()

    mode, batches = fresh()
    trainer = Trainer(mode, batches, Telemetry(device=torch.device(device), batch_size=N), None)
    loops = {
        "the mode with next(batches)": around(lambda loss: None),
        "+ keep each loss tensor until the flush": around(keep),
        "+ record_loss, flush_due (the look), flush": around(telemetry),
        "Trainer.run": lambda n: trainer.run(max_steps=n),
        "lean: loss.item() floats, math.isfinite": around(as_float),
    }
    bare = CASES[name][0](device)
    out = {}
    for label, loop in loops.items():
        bare(200), loop(2000)
        b, e = interleave(lambda: timed(bare, steps, device), lambda: timed(loop, steps, device), rounds)  # noqa: B023
        out[label] = (statistics.median([y / x for x, y in zip(b, e)]), statistics.median(e) / statistics.median(b))
    return out


def parts(name, device, store_path):
    """Microseconds per call of the trainer's parts, and how often each runs."""
    trainer, sink = engine_runner(CASES[name][1], device, store_path, 10**9)
    trainer.run(max_steps=3000)  # past the first telemetry estimates
    tel, mode = trainer.tel, trainer.mode
    x, y = next(trainer.batches)
    loss = mode.forward_backward(x, y)
    out = {"Trainer._weights (divergence copy, each flush)": per_call_us(trainer._weights)}

    def snapshot():
        tel.before_update(trainer.step, mode, x, y, mode.lr)
        tel.after_update(trainer.step, mode)

    out["snapshot: before_update + after_update"] = per_call_us(snapshot, 50)
    tel.flush()

    def flush_2000():
        for i in range(2000):
            tel.record_loss(i, loss)
        tel.flush()

    out["Telemetry.flush of 2,000 losses (record_loss included)"] = per_call_us(flush_2000, 20)

    def look():
        for i in range(tel.watch.every):
            tel.record_loss(i, loss)
        tel.watch.look(tel._losses)

    out[f"the finite look, every {tel.watch.every} steps (with its record_loss)"] = per_call_us(look, 500)
    tel.flush()
    out["record_loss + flush_due (each step)"] = per_call_us(lambda: (tel.record_loss(0, loss), tel.flush_due()), 2000)
    tel.flush()
    out["next(batches) (each step)"] = per_call_us(lambda: next(trainer.batches), 2000)
    out["forward_backward + update + zero_grad"] = per_call_us(
        lambda: (mode.forward_backward(x, y), mode.update(), mode.zero_grad()), 500
    )
    rate = tel._rate  # steps/s at the last flush
    snap_gap = tel._snapshot_gap()
    sink.close()
    return out, rate, snap_gap, tel.flush_every, tel.flush_seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", default="manual,optim (adam)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--in-loop", action="store_true", help="only part 6")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's; 1 with --in-loop)")
    args = ap.parse_args()
    if args.threads or args.in_loop:
        torch.set_num_threads(args.threads or 1)
    if args.in_loop:
        for name in args.cases.split(","):
            print(f"{name}, {torch.get_num_threads()} thread(s): engine / bare, median of ratios, ratio of medians")
            for label, (med, rom) in in_loop(name, args.device).items():
                print(f"  {label:<46} {med:.3f} {rom:.3f}", flush=True)
        return
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    print(f"the trainer's loop around a mode that does nothing: {loop_us(args.device):.2f} us per step")
    adam = adam_variants(args.device)
    print("bare nn + Adam, us per step: " + ", ".join(f"{k} {v:.0f}" for k, v in adam.items()))
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "profile.db")
        for name in args.cases.split(","):
            print(f"\n==================== {name}")
            b, e = rates(name, args.device, args.steps, store)
            print(f"bare {b:,.0f} steps/s ({1e6 / b:.1f} us/step), engine {e:,.0f} steps/s ({1e6 / e:.1f} us/step): ")
            print(f"  the engine spends {1e6 / e - 1e6 / b:+.1f} us per step beyond the bare loop (ratio {e / b:.3f})")

            got, rate, gap, flush_every, flush_s = parts(name, args.device, store)
            flushes_per_step = max(1 / flush_every, 1 / (rate * flush_s)) if rate else 1 / flush_every
            print(f"\nparts (rate at the last flush {rate:,.0f} steps/s; a snapshot every {gap} steps; a flush every")
            print(f"  {1 / flushes_per_step:,.0f} steps): us per call, and us per step spread over the steps")
            every = {
                "Trainer._weights (divergence copy, each flush)": 1 / flushes_per_step,
                "snapshot: before_update + after_update": gap,
                "Telemetry.flush of 2,000 losses (record_loss included)": 2000,
            }
            for part, us in got.items():
                n = every.get(part) or (int(part.split("every ")[1].split()[0]) if "every " in part else 1)
                print(f"  {part:<62} {us:>10.1f} us/call {us / n:>8.2f} us/step")

            print("\ncProfile of the engine's loop (own time):")
            print(python_profile(name, args.device, args.steps, store))

            ops_b, table_b = op_profile(CASES[name][0](args.device), args.steps, args.device)
            ops_e, table_e = engine_op_profile(name, args.device, args.steps, store)
            print("\ntorch.profiler, bare loop:\n" + table_b)
            print("torch.profiler, engine loop:\n" + table_e)
            diff = sorted(((ops_e.get(k, 0) - ops_b.get(k, 0), k) for k in set(ops_b) | set(ops_e)), reverse=True)
            print("operators by the engine's extra self CPU us per step (engine - bare):")
            for d, k in diff[:12]:
                print(f"  {k:<40} {d:+8.2f}   (bare {ops_b.get(k, 0):7.2f}, engine {ops_e.get(k, 0):7.2f})")
            for d, k in diff[-4:]:
                print(f"  {k:<40} {d:+8.2f}   (bare {ops_b.get(k, 0):7.2f}, engine {ops_e.get(k, 0):7.2f})")


if __name__ == "__main__":
    main()
