"""One row of the report (bench/report.py): a figure as a ratio against its anchor, with both statistics.

A compared pair (engine against the bare loop, bf16 against fp32, ...) is measured interleaved, in one
process, the order alternating each round (A B, B A, A B, ...), so that machine noise and drift hit both
sides alike. A row then keeps every round's two values and reports two statistics, because they disagree
on a noisy machine (design.md: per-round ratios ranged 0.69-1.19 on an H200):

    median of per-round ratios    median(value_i / anchor_i): each round judged on its own
    ratio of the medians          median(value) / median(anchor): what a reader of two tables would compute

A single figure (memory growth, a refresh's milliseconds) has a fixed anchor, its target; each sample's
ratio is sample / anchor. A row that cannot be measured here says why (status "not measured" or
"skipped"), so that the report's shape is the same on every machine.
"""

from __future__ import annotations

import math
import statistics


def interleave(a, b, rounds: int) -> tuple[list[float], list[float]]:
    """a() and b() each measure once and return a number; `rounds` rounds, the order alternating."""
    got_a, got_b = [], []
    for r in range(rounds):
        for side in (a, b) if r % 2 == 0 else (b, a):
            (got_a if side is a else got_b).append(side())
    return got_a, got_b


def paired(group, name, unit, anchor, anchor_values, values, *, better="higher", target=None, note="") -> dict:
    """A compared pair: values[i] against anchor_values[i], measured in the same round."""
    ratios = [v / a if a else math.nan for v, a in zip(values, anchor_values)]
    row = _row(group, name, unit, anchor, anchor_values, values, ratios, better, target, note)
    row["kind"] = "pair"  # anchor_values[i] and values[i] measured in round i
    row["ratio_of_medians"] = _div(row["value_median"], row["anchor_median"])
    return _judged(row)


def single(group, name, unit, anchor, anchor_value, samples, *, better="lower", target=None, note="") -> dict:
    """Samples of one figure against a fixed anchor (a target, or a figure measured once)."""
    ratios = [s / anchor_value if anchor_value else math.nan for s in samples]
    row = _row(group, name, unit, anchor, [anchor_value], samples, ratios, better, target, note)
    row["kind"] = "single"  # samples against one fixed anchor_values[0]
    row["ratio_of_medians"] = _div(row["value_median"], anchor_value)
    return _judged(row)


def unmeasured(group, name, why, status="not measured") -> dict:
    """A row this machine cannot measure (yet), and why: "not measured" (the feature is missing or refuses
    here), "skipped" (a package or program this machine lacks) or "failed" (the bench itself broke)."""
    return {"group": group, "name": name, "status": status, "note": why}


def _row(group, name, unit, anchor, anchor_values, values, ratios, better, target, note) -> dict:
    finite = [r for r in ratios if math.isfinite(r)]
    return {
        "group": group,
        "name": name,
        "status": "measured",
        "unit": unit,
        "anchor": anchor,
        "better": better,  # "higher" | "lower": which way a ratio is good
        "rounds": len(values),
        "anchor_values": list(anchor_values),
        "values": list(values),
        "ratios": ratios,
        "anchor_median": statistics.median(anchor_values) if anchor_values else math.nan,
        "value_median": statistics.median(values) if values else math.nan,
        "median_ratio": statistics.median(finite) if finite else math.nan,
        "min_ratio": min(finite, default=math.nan),
        "max_ratio": max(finite, default=math.nan),
        "target": target,  # {"ratio": t, "floor": f} or None; a ratio on the row's "better" side meets it
        "note": note,
    }


def _div(a, b):
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def _judged(row: dict) -> dict:
    """verdict: "met" when both statistics reach the target; "floor" when both reach only the floor; "missed"."""
    t = row["target"]
    if not t:
        row["verdict"] = "n/a"
        return row
    ok = (lambda r, lim: r >= lim) if row["better"] == "higher" else (lambda r, lim: r <= lim)
    stats = (row["median_ratio"], row["ratio_of_medians"])
    if all(ok(s, t["ratio"]) for s in stats):
        row["verdict"] = "met"
    elif "floor" in t and all(ok(s, t["floor"]) for s in stats):
        row["verdict"] = "floor"
    else:
        row["verdict"] = "missed"
    return row


# -- the Markdown table --------------------------------------------------------------------------------


def _num(v, unit="") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if unit in ("ms", "s", "MB") or abs(v) < 100:
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:,.0f}"


def _target(row) -> str:
    t = row.get("target")
    if not t:
        return ""
    sign = ">=" if row["better"] == "higher" else "<="
    return f"{sign} {t['ratio']:g}" + (f" (floor {t['floor']:g})" if "floor" in t else "")


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| group | row | anchor | anchor value | value | unit | median of per-round ratios | ratio of the medians "
        "| rounds | per-round range | target | verdict |\n" + "| --- " * 12 + "|\n"
    )
    lines = []
    for r in rows:
        if r["status"] != "measured":
            lines.append(f"| {r['group']} | {r['name']} | {r['status']}: {r['note']} |" + " |" * 9)
            continue
        u = r["unit"]
        lines.append(
            f"| {r['group']} | {r['name']} | {r['anchor']} | {_num(r['anchor_median'], u)} "
            f"| {_num(r['value_median'], u)} "
            f"| {u} | {r['median_ratio']:.3f} | {r['ratio_of_medians']:.3f} | {r['rounds']} "
            f"| {r['min_ratio']:.2f} to {r['max_ratio']:.2f} | {_target(r)} | {r['verdict']} |"
        )
    notes = [f"- **{r['group']}, {r['name']}**: {r['note']}" for r in rows if r["status"] == "measured" and r["note"]]
    return head + "\n".join(lines) + ("\n\nNotes:\n" + "\n".join(notes) if notes else "") + "\n"
