"""The sidebar's values as a RunConfig, and which controls are greyed out: presentation only.

Pure functions of a dict of widget values (the RunConfig field names), so they are tested without
a browser. What applies and what is refused is the engine's to say (engine/config/reasons.py
`reasons`); the engine's `prepare()` has the last word before a launch.
"""

from __future__ import annotations

import dataclasses
import math

from engine.config.fields import FIELDS, MLP_ARCHS, OPTIMIZERS, RunConfig
from engine.config.reasons import optimizer_knobs, reasons
from engine.errors import ConfigError

MODE_LABELS = {
    "manual": "manual",
    "autograd": "autograd",
    "custom_function": "custom Function",
    "nn": "nn",
    "optim": "nn + optim",
}
OPTIMIZER_KNOBS = {name: optimizer_knobs(name) for name in OPTIMIZERS}  # the optimizer's caption
COMPARE_MODES = ("manual", "autograd", "custom_function")

# a log-scale learning-rate slider: 1, 2, 5 per decade from 1e-8 to 1e6, the lr field's bound
LR_STEPS = [round(m * 10.0**e, 12) for e in range(-8, 7) for m in (1, 2, 5) if m * 10.0**e <= 1e6]


def values_config(v: dict) -> RunConfig:
    """The configuration the sidebar's values describe, each value as set (a greyed-out one too). The
    sidebar's "length" (steps, epochs or until stopped) is the three fields steps, epochs, until_stopped."""
    d = {k: val for k, val in v.items() if k in FIELDS}
    length = v.get("length", "steps")
    d["steps" if length == "epochs" else "epochs"] = 0
    d["until_stopped"] = length == "until stopped"
    return RunConfig(**d)


def disabled_reasons(v: dict, cuda: bool | None = None) -> dict[str, str]:
    """control -> why it is greyed out for the sidebar's values v (missing: it applies): the engine's own
    reasons (engine/config/reasons.py), plus the controls that are not one field: "csv" (its path and
    target) and "compare" (Compare modes). cuda: whether this machine has a CUDA device (None: torch is asked)."""
    why = {name: r.text for name, r in reasons(values_config(v), cuda).items() if r.greyed}
    if "csv_path" in why:
        why["csv"] = why["csv_path"]
    if v.get("mode", "manual") not in COMPARE_MODES or v.get("arch", "two_layer") not in MLP_ARCHS:
        why["compare"] = (
            "compare modes runs manual, autograd and custom Function, which take the MLP "
            "family only (arch two_layer or mlp) and no optimizer"
        )
    return why


def config_from_values(v: dict) -> RunConfig:
    """A RunConfig from sidebar values. Fields whose control does not apply keep their defaults,
    so a greyed-out value never reaches the engine."""
    lr = v.get("lr")  # the sidebar always has one; RunConfig's 0 ("the mode's default") is not offered
    if "lr" in v and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"the learning rate must be a positive number, got {lr}")
    cfg, default = values_config(v), RunConfig()
    greyed = [name for name, r in reasons(cfg).items() if r.greyed and name not in ("steps", "epochs")]
    return dataclasses.replace(cfg, **{name: getattr(default, name) for name in greyed})


def with_visdom(cfg: RunConfig, on: bool, host: str, port: int, env: str = "") -> RunConfig:
    """The sidebar's Visdom target in the config: a URL, or "off"; env "" lets the engine name it
    per run (liveprop_<name>-<run id>)."""
    url = f"http://{host.strip()}:{int(port)}" if on and host.strip() else "off"
    return dataclasses.replace(cfg, visdom=url, visdom_port=0, visdom_env=env.strip())


def compare_configs(cfg: RunConfig) -> list[RunConfig]:
    """The same configuration and seed as manual, autograd and custom Function."""
    return [dataclasses.replace(cfg, mode=m, optimizer="", name=f"compare {m}") for m in COMPARE_MODES]


def nearest_lr_step(lr: float) -> float:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        return LR_STEPS[0]
    return min(LR_STEPS, key=lambda s: abs(math.log10(s) - math.log10(lr)))


def eta_text(done: int, total: int | None, rate: float | None) -> str:
    if not total or not rate or rate <= 0 or done >= total:
        return "–"
    s = int((total - done) / rate)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
