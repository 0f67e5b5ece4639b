"""Which sidebar controls apply to a configuration, and why not; sidebar values to a RunConfig.

Pure functions of a dict of widget values (the RunConfig field names), so they are tested without
a browser. The engine's `prepare()` remains the judge of what may launch (config.py knows the valid
values); this module only decides what to grey out and what to say about it.
"""

from __future__ import annotations

import dataclasses
import math

from engine.config.fields import MLP_ARCHS, RAW_MODES, ConfigError, RunConfig

MODE_LABELS = {
    "manual": "manual",
    "autograd": "autograd",
    "custom_function": "custom Function",
    "nn": "nn",
    "optim": "nn + optim",
}
OPTIMIZER_KNOBS = {  # what torch.optim's constructors take
    "sgd": ("momentum", "nesterov", "weight_decay"),
    "adam": ("beta1", "beta2", "eps", "weight_decay"),
    "adamw": ("beta1", "beta2", "eps", "weight_decay"),
    "rmsprop": ("alpha", "momentum", "eps", "weight_decay"),
    "adagrad": ("eps", "weight_decay"),
}
KNOBS = ("momentum", "nesterov", "beta1", "beta2", "eps", "weight_decay", "alpha")
TABULAR_SETS = ("random", "teacher")
COMPARE_MODES = ("manual", "autograd", "custom_function")
FAST_DATA = ("random", "teacher", "digits", "csv")  # held in memory: the fast path's one fixed batch

# a log-scale learning-rate slider: 1, 2, 5 per decade from 1e-8 to 1e6, the lr field's bound
LR_STEPS = [round(m * 10.0**e, 12) for e in range(-8, 7) for m in (1, 2, 5) if m * 10.0**e <= 1e6]


def disabled_reasons(v: dict, cuda: bool | None = None) -> dict[str, str]:
    """field -> why that control does not apply to the configuration v (missing: it applies). cuda: whether this
    machine has a CUDA device, which the fast path needs (None: torch is asked)."""
    why = {}
    mode, arch, ds = v.get("mode", "manual"), v.get("arch", "two_layer"), v.get("dataset", "random")
    if mode != "optim":
        msg = (
            f"mode {MODE_LABELS.get(mode, mode)!r} updates the weights by hand (w -= lr * grad); "
            f"optimizers apply to mode 'nn + optim'"
        )
        why["optimizer"] = msg
        for k in KNOBS:
            why[k] = msg
    else:
        opt = v.get("optimizer") or "adam"
        for k in KNOBS:
            if k not in OPTIMIZER_KNOBS.get(opt, ()):
                why[k] = f"{opt} has no {k.replace('_', ' ')} setting; it takes {', '.join(OPTIMIZER_KNOBS[opt])}"
        if "nesterov" not in why and not v.get("momentum"):
            why["nesterov"] = "Nesterov needs momentum > 0"
    if arch != "mlp":
        why["depth"] = "depth applies to arch mlp (two_layer is the depth-2 case)"
    if arch != "torchvision":
        for k in ("tv_model", "pretrained", "freeze_backbone"):
            why[k] = "applies to torchvision models (arch torchvision)"
    if arch == "torchvision":
        why["hidden"] = "a torchvision model has its own widths"
    if ds not in TABULAR_SETS:
        for k in ("d_in", "d_out", "n_samples"):
            why[k] = f"dataset {ds!r} sets the input and output sizes"
    if ds != "csv":
        why["csv"] = "applies to dataset csv"
    if ds != "imagefolder":
        why["image_dir"] = "applies to dataset imagefolder"
    if ds not in ("mnist", "fashion_mnist", "cifar10"):
        why["data_root"] = "applies to the torchvision datasets (mnist, fashion_mnist, cifar10)"
    if v.get("length") == "epochs":
        why["steps"] = "the run is counted in epochs"
    elif v.get("length") == "until stopped":
        why["steps"] = why["epochs"] = "the run goes on until you press Stop"
    else:
        why["epochs"] = "the run is counted in steps"
    if mode in RAW_MODES:  # the engine refuses it in one line too (engine/config/fields.py validate)
        why["precision"] = (
            f"mode {MODE_LABELS.get(mode, mode)!r} runs the lecture's hand-written tensor code in its dtype; "
            "precision is for nn and nn + optim"
        )
    elif v.get("dtype") == "float64":
        why["precision"] = "dtype float64 keeps every op in float64; precision lowers float32 matmuls only"
    fast = _fast_reason(v, cuda)
    if fast:
        why["fast"] = fast
    if mode in RAW_MODES:  # engine/config/fields.py _check_compile
        why["compile"] = f"mode {MODE_LABELS.get(mode, mode)!r} runs the lecture's code as written; compile is for nn"
    elif (v.get("nproc") or 1) > 1:
        why["compile"] = "several processes train the model as written"
    if mode not in COMPARE_MODES or arch not in MLP_ARCHS:
        why["compare"] = (
            "compare modes runs manual, autograd and custom Function, which take the MLP "
            "family only (arch two_layer or mlp) and no optimizer"
        )
    return why


def _fast_reason(v: dict, cuda: bool | None) -> str | None:
    """Why the fast path (a CUDA graph of the whole step) cannot apply here, or None. The engine refuses the same
    in one line (engine/build/assemble.py _check_fast), and also a digits or CSV set larger than one batch."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    d = RunConfig()
    ds, n, batch = v.get("dataset", d.dataset), v.get("n_samples", d.n_samples), v.get("batch_size", d.batch_size)
    world = v.get("nproc", d.nproc) * v.get("nnodes", d.nnodes)
    if not cuda or v.get("device") == "cpu":
        return "CUDA graphs need a CUDA device" + ("; this machine has none" if not cuda else ", and device is cpu")
    if world > 1:
        return f"a CUDA graph holds one process's step; {world} processes train with the plain loop"
    if v.get("pace"):
        return "it replays many steps at once, which a pace cannot space out"
    if ds not in FAST_DATA or v.get("sampler", "none") != "none" or (ds in TABULAR_SETS and n > batch):
        return "a CUDA graph replays one fixed batch: the data must fit one batch in memory (no DataLoader, no sampler)"
    if v.get("compile"):
        return "fast and compile together are not checked yet: use one of them"
    if v.get("mode") == "optim" and v.get("optimizer") == "adagrad":
        return "torch's adagrad reads its step count on the host, so no CUDA graph holds its step"
    return None


def config_from_values(v: dict) -> RunConfig:
    """A RunConfig from sidebar values. Fields whose control does not apply keep their defaults,
    so a greyed-out value never reaches the engine."""
    lr = v.get("lr")  # the sidebar always has one; RunConfig's 0 ("the mode's default") is not offered
    if "lr" in v and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"the learning rate must be a positive number, got {lr}")
    why = disabled_reasons(v)
    names = {f.name for f in dataclasses.fields(RunConfig)}
    d = {k: val for k, val in v.items() if k in names and k not in why}
    if v.get("mode") != "optim":
        d["optimizer"] = ""
    if v.get("length") == "epochs":
        d["steps"] = 0
    else:
        d["epochs"] = 0
    d["until_stopped"] = v.get("length") == "until stopped"
    if v.get("dataset") == "csv":
        d["csv_path"], d["csv_target"] = v.get("csv_path", ""), v.get("csv_target", "")
    return RunConfig(**d)


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
