"""The grammar of a run's scheduled actions (RunConfig.at, --at) and rules (RunConfig.rule, --rule).

    parse_action("300:lr=1e-7") -> Action(300, "lr", 1e-07)     STEP:ACTION, ACTION one of ACTIONS
    parse_rule("spike:10:pause") -> Rule("spike", ...)          one of RULES, ending in an effect of EFFECTS

Each refusal is one ConfigError line naming the field (engine/config/reasons.py asks here). What the trainer
does with them is engine/loop/plan.py (actions) and engine/loop/rules.py (rules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.config.load import shown
from engine.errors import ConfigError

MAX_STEP = 10**12  # as RunConfig.steps
MAX_LR = 1e6  # as RunConfig.lr
MAX_ENTRIES = 1000  # scheduled actions or rules in one run
ACTIONS = ("lr", "checkpoint", "pause", "stop")  # the order they apply in at one step: a checkpoint holds the lr
EFFECTS = ("lr", "pause", "banner")


def number_text(x: float) -> str:
    """A number as the grammar writes it: short (1e-07, 0.5, 10), and read back to the same float."""
    text = f"{x:g}"
    return text if float(text) == x else repr(x)


@dataclass(frozen=True)
class Action:
    step: int  # applied before this step runs: a run at this step has done them
    kind: str  # one of ACTIONS
    value: float | None = None  # the rate of "lr"

    def __str__(self) -> str:
        return f"{self.step}:{self.kind}" + (f"={number_text(self.value)}" if self.kind == "lr" else "")


@dataclass(frozen=True)
class Rule:
    kind: str  # "plateau", "spike" or "ratio"
    effect: str  # one of EFFECTS
    factor: float | None = None  # lr*F's F
    flushes: int = 0  # plateau, ratio: K flushes in a row
    over: float = 0.0  # spike: k, the multiple of the running median
    lo: float = 0.0  # ratio: A
    hi: float = 0.0  # ratio: B

    def __str__(self) -> str:
        args = {
            "plateau": [self.flushes],
            "spike": [number_text(self.over)],
            "ratio": [number_text(self.lo), number_text(self.hi), self.flushes],
        }[self.kind]
        effect = f"lr*{number_text(self.factor)}" if self.effect == "lr" else self.effect
        return ":".join([self.kind, *map(str, args), effect])


def _number(text: str, lo: float, hi: float, whole: bool = False) -> float | None:
    """text as a number in [lo, hi] (a whole one if asked), else None."""
    try:
        x = int(text) if whole else float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) and lo <= x <= hi else None


def parse_action(text: str) -> Action:
    """STEP:ACTION, or ConfigError with one line."""
    step, _, what = text.strip().partition(":")
    n = _number(step.strip(), 0, MAX_STEP, whole=True)
    kind, _, value = what.strip().partition("=")
    kind, value = kind.strip(), value.strip()
    if n is None:
        raise ConfigError(f"at: {shown(text)} does not start with a step from 0 to {MAX_STEP} (STEP:ACTION)")
    if kind == "lr":
        lr = _number(value, 0, MAX_LR)
        if not lr:
            raise ConfigError(f"at: {shown(text)}: lr=X takes a learning rate above 0, at most 1e6")
        return Action(int(n), "lr", lr)
    if kind not in ACTIONS or value or "=" in what:
        raise ConfigError(f"at: {shown(text)}: the action is one of lr=X, pause, stop, checkpoint (STEP:ACTION)")
    return Action(int(n), kind)


def parse_rule(text: str) -> Rule:
    """One of the rules RULE_HELP describes, or ConfigError with one line."""
    kind, *args = [part.strip() for part in text.strip().split(":")]
    shapes = {"plateau": "plateau:K:EFFECT", "spike": "spike:k:EFFECT", "ratio": "ratio:A:B:K:EFFECT"}
    if kind not in shapes:
        raise ConfigError(f"rule: {shown(text)} is none of {', '.join(shapes.values())}")
    if len(args) != shapes[kind].count(":"):
        raise ConfigError(f"rule: {shown(text)} is not {shapes[kind]}")
    *args, effect = args
    factor = _number(effect[3:], 0, MAX_LR) if effect.startswith("lr*") else None
    if effect not in EFFECTS[1:] and not factor:
        raise ConfigError(
            f"rule: {shown(text)} ends in {shown(effect)}; the effect is lr*F (F above 0), pause or banner"
        )
    effect = "lr" if factor else effect
    if kind == "plateau":
        k = _number(args[0], 1, 10**6, whole=True)
        if k is None:
            raise ConfigError(f"rule: {shown(text)}: K is a whole number of flushes from 1 to 1000000")
        return Rule(kind, effect, factor, flushes=int(k))
    if kind == "spike":
        over = _number(args[0], 1, 1e6)
        if over is None or over == 1:
            raise ConfigError(f"rule: {shown(text)}: k is a multiple of the running median, above 1, at most 1e6")
        return Rule(kind, effect, factor, over=over)
    lo, hi, k = _number(args[0], 0, 1e6), _number(args[1], 0, 1e6), _number(args[2], 1, 10**6, whole=True)
    if lo is None or hi is None or lo >= hi or k is None:
        raise ConfigError(f"rule: {shown(text)}: needs 0 <= A < B <= 1e6 and K a whole number of flushes from 1")
    return Rule(kind, effect, factor, flushes=int(k), lo=lo, hi=hi)


PARSERS = {"at": parse_action, "rule": parse_rule}


def entries_problem(name: str, value) -> str | None:
    """Why a list field's value (at, rule) is refused, in one line; None when every entry parses."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        return f"{name} must be a list of text entries, got {shown(value)}"
    if len(value) > MAX_ENTRIES:
        return f"{name} has {len(value)} entries; at most {MAX_ENTRIES} are allowed"
    for entry in value:
        if not isinstance(entry, str):
            return f"{name}: each entry is text, got {shown(entry)}"
        try:
            PARSERS[name](entry)
        except ConfigError as e:
            return str(e)
    return None


def canonical(name: str, value) -> tuple[str, ...]:
    """The entries as the grammar writes them back (a scheduled action's rate as number_text says)."""
    return tuple(str(PARSERS[name](entry)) for entry in value)
