"""A run's rules (RunConfig.rule, `--rule`), checked against each flush, never inside a step.

    Rules(texts)                                  the rules, each with what it has seen so far
      .check(flush, lr) -> [(command, value, event)]   the rules this flush makes fire: the command a viewer
                                                  would send (set_lr at lr x F, pause) or None (a banner), and
                                                  the event "rule" (step, "rule", data) with the numbers
      .apply(flush, lr, control)                  check, with each event added to the flush and each command
                                                  put to the loop's control (engine/loop/control.py)

The commands go through the loop's control as a viewer's do: they apply at the next step boundary (on several
processes, rank 0 alone checks the rules and sends them on, as it sends a viewer's), and an lr change is
recorded as the event "lr_change", as a viewer's set_lr is, so that a fork replays it.

What each rule watches (the grammar is engine/config/steering.py):
    plateau:K   the mean of each flush's finite losses; it fires when K flushes in a row stay at or above the
                lowest mean before them
    spike:k     each layer's gradient norm at the telemetry steps ("grad_norm/LAYER"), against the median of
                that layer's last WINDOW norms; it judges once MIN_SEEN norms are known
    ratio:A:B:K each flush's last update ratio of each layer ("update_ratio/LAYER"); it fires when K flushes
                in a row that bring ratios have one outside [A, B]
A rule that fired starts counting again.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict, deque

from engine.config.steering import Rule, number_text, parse_rule

WINDOW = 64  # gradient norms per layer the running median is taken over
MIN_SEEN = 5  # norms a layer needs before a spike is judged
REASON = "rule"  # a rule's pause's reason, as a viewer's is "command"


class Watch:
    """One rule and what it has seen."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.count = 0  # flushes in a row that meet the condition (plateau, ratio)
        self.lowest = math.inf  # plateau: the lowest flush mean so far
        self.norms = defaultdict(lambda: deque(maxlen=WINDOW))  # spike: layer -> its last norms
        # observe(flush) -> (step, numbers) when the rule fires, else None
        self.observe = {"plateau": self._plateau, "spike": self._spike, "ratio": self._ratio}[rule.kind]

    def _plateau(self, f):
        finite = [v for v in f.losses if math.isfinite(v)]
        if not finite:
            return None
        mean = sum(finite) / len(finite)
        if mean < self.lowest:
            self.lowest, self.count = mean, 0
            return None
        self.count += 1
        if self.count < self.rule.flushes:
            return None
        self.count = 0
        why = f"the loss has not fallen below {self.lowest:.4g} for {self.rule.flushes} flushes (now {mean:.4g})"
        return f.last_step, {"why": why, "loss": mean, "lowest": self.lowest, "flushes": self.rule.flushes}

    def _spike(self, f):
        spikes = []  # (step, -times the median, layer, norm, median)
        for step, key, value in f.scalars:
            if not key.startswith("grad_norm/") or not math.isfinite(value):
                continue
            layer = key[len("grad_norm/") :]
            seen = self.norms[layer]
            median = statistics.median(seen) if len(seen) >= MIN_SEEN else math.inf
            if value > self.rule.over * median:
                spikes.append((step, -value / median, layer, value, median))
            seen.append(value)
        if not spikes:
            return None
        step, minus, layer, value, median = min(spikes)  # the first step with a spike, and its largest there
        why = (
            f"the gradient norm of {layer} is {value:.4g}, {-minus:.3g} x its running median {median:.4g} "
            f"(the rule: over {number_text(self.rule.over)} x)"
        )
        return step, {"why": why, "layer": layer, "norm": value, "median": median, "times": -minus}

    def _ratio(self, f):
        last = {key[len("update_ratio/") :]: v for _, key, v in f.scalars if key.startswith("update_ratio/")}
        if not last:
            return None
        lo, hi = self.rule.lo, self.rule.hi
        outside = {layer: v for layer, v in last.items() if not lo <= v <= hi}  # a nan is outside too
        self.count = self.count + 1 if outside else 0
        if self.count < self.rule.flushes:
            return None
        self.count = 0
        layer, value = next(iter(outside.items()))
        why = (
            f"the update ratio of {layer} is {value:.3g}, outside [{number_text(lo)}, {number_text(hi)}] "
            f"for {self.rule.flushes} flushes" + (f" ({len(outside) - 1} more layers too)" if len(outside) > 1 else "")
        )
        return f.last_step, {"why": why, "layer": layer, "ratio": value, "layers": sorted(outside)}


class Rules:
    def __init__(self, texts=()):
        self.watches = [Watch(parse_rule(t)) for t in texts]

    def __bool__(self) -> bool:
        return bool(self.watches)

    def check(self, f, lr: float) -> list[tuple[str | None, object, tuple[int, str, dict]]]:
        """What the flush f makes fire. lr: the rate now; two rules that change it in one flush compound."""
        out = []
        for w in self.watches:
            fired = w.observe(f)
            if fired is None:
                continue
            step, data = fired
            data = {"rule": str(w.rule), "effect": w.rule.effect, **data}
            if w.rule.effect == "lr":
                data["old"], data["new"] = lr, lr * w.rule.factor
                lr = data["new"]
                out.append(("set_lr", lr, (step, "rule", data)))
            else:
                out.append(("pause" if w.rule.effect == "pause" else None, REASON, (step, "rule", data)))
        return out

    def apply(self, f, lr: float, control) -> None:
        """check, with each event added to f and each command put to control (applied at the next step boundary)."""
        for command, value, event in self.check(f, lr):
            f.events.append(event)
            if command is not None:
                control.put(None, command, value)
