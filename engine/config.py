"""RunConfig: every knob of a run, its default, and the one place that validates them.

The CLI builds its flags from these fields, the dashboard its widgets, and the store keeps the
config as JSON. `validate()` turns a config into a *resolved* config (every "auto" decided) or
raises ConfigError with one clear line. Nothing is launched or written before it passes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

MODES = ("manual", "autograd", "custom_function", "nn", "optim")
RAW_MODES = ("manual", "autograd", "custom_function")  # raw tensors, MLP family only
MLP_ARCHS = ("two_layer", "mlp")
ARCHS = MLP_ARCHS + ("parallel_block", "cnn", "torchvision")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
LOSSES = ("sse", "mse", "cross_entropy")
DATASETS = ("random", "teacher", "digits", "csv", "imagefolder", "mnist", "fashion_mnist", "cifar10")
SAMPLERS = ("none", "random", "sequential", "balanced")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
ON_DIVERGENCE = ("pause", "stop", "ignore")


class ConfigError(ValueError):
    """Bad input. The message is one line meant for a person."""


# The comments below are a table, one line per knob: the formatter leaves them aligned.
# fmt: off
@dataclass
class RunConfig:
    # what to train
    mode: str = "manual"            # one of MODES; see engine/modes/
    arch: str = "two_layer"         # one of ARCHS
    tv_model: str = "resnet18"      # torchvision model name, when arch == "torchvision"
    pretrained: str = ""            # "" | path to a state_dict file | "torchvision" (weights API, needs network)
    freeze_backbone: bool = False   # torchvision: train only the new head
    d_in: int = 1000                # D_in, input features (tabular data); the lecture's sizes
    hidden: int = 100               # H, hidden width
    d_out: int = 10                 # D_out, outputs (regression targets); classes come from the data
    depth: int = 2                  # mlp: number of Linear layers
    bias: bool = True               # Linear layers carry a bias (the lecture's raw-tensor net has none)
    init: str = "auto"              # auto | randn (the lecture's torch.randn weights) | torch (nn.Linear's init)
    loss: str = "auto"              # auto | sse (lecture) | mse | cross_entropy
    # how to train
    optimizer: str = ""             # optim mode only; "" means adam there
    lr: float = 0.0                 # 0 means the lecture's rate for the mode (1e-6 raw, 1e-2 nn, 1e-4 optim)
    momentum: float = 0.0           # sgd, rmsprop
    nesterov: bool = False          # sgd
    beta1: float = 0.9              # adam, adamw
    beta2: float = 0.999            # adam, adamw
    eps: float = 1e-8               # adam, adamw, rmsprop, adagrad
    weight_decay: float = 0.0       # every optimizer
    alpha: float = 0.99             # rmsprop smoothing
    steps: int = 500                # the lecture's loop length; 0 means use epochs
    epochs: int = 0                 # used when steps == 0
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda
    dtype: str = "float32"          # float64 for the gradient-equivalence checks
    # data
    dataset: str = "random"         # one of DATASETS
    n_samples: int = 64             # random/teacher: dataset size (64 = the lecture's one full batch)
    batch_size: int = 64            # N
    shuffle: bool = True
    sampler: str = "none"           # none | random (with replacement) | sequential | balanced (by class)
    num_workers: int = 0
    csv_path: str = ""              # dataset == "csv"
    csv_target: str = ""            # the target column's name
    task: str = "auto"              # auto | regression | classification (csv)
    image_dir: str = ""             # dataset == "imagefolder"
    image_size: int = 32            # imagefolder resize
    data_root: str = "data"         # torchvision downloads go here
    # telemetry and run control
    telemetry_every: int = 0        # K: histograms, norms, ratios, gradient check every K steps;
                                    # 0 = auto: about once per telemetry_seconds of training
    telemetry_seconds: float = 1.0
    hist_bins: int = 64
    flush_seconds: float = 0.5      # host transfers: every flush_seconds,
    flush_every: int = 2000         # or every flush_every steps, whichever comes first
    on_divergence: str = "pause"    # pause | stop | ignore, when the loss goes non-finite
    name: str = ""                  # a label for the run
    # remote sinks (engine/sinks/). No password here: the store keeps this config as JSON
    visdom: str = ""                # Visdom server URL, e.g. http://127.0.0.1:8097;
                                    # "" = $LIVEPROP_VISDOM_URL or off; "off" = off
    visdom_port: int = 0            # overrides the URL's port (0: the URL's, else 8097)
    visdom_base_url: str = ""       # the server's -base_url, e.g. /visdom
    visdom_env: str = ""            # "" = liveprop_<name>-<run id>
    visdom_username: str = ""       # for -enable_login; the password is read from $LIVEPROP_VISDOM_PASSWORD only
    tensorboard_dir: str = ""       # write TensorBoard event files under DIR/<run>; "" = off
# fmt: on


# ---------------------------------------------------------------------------------------------
# loading


def from_dict(d: dict) -> RunConfig:
    known = {f.name: f for f in fields(RunConfig)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(known)}")
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = _coerce(k, v, type(getattr(RunConfig(), k)))
    return RunConfig(**kwargs)


def _coerce(key, value, typ):
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        return typ(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a valid {typ.__name__}") from None


def load_file(path: str) -> dict:
    """Read a TOML or JSON config file into a dict (never executed, never unpickled)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if path.endswith(".json"):
            d = json.loads(raw)
        else:
            d = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} does not parse: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    return d


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# validation


def _choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"unknown {key} {value!r}; choose one of: {', '.join(allowed)}")


def _positive(key, value):
    if not value > 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def default_lr(mode: str) -> float:
    """The lecture's learning rates (its raw loops use sum-of-squares loss and randn weights)."""
    return {"manual": 1e-6, "autograd": 1e-6, "custom_function": 1e-6, "nn": 1e-2, "optim": 1e-4}[mode]


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field and return a copy with every "auto" resolved. Raises ConfigError."""
    c = dataclasses.replace(cfg)
    _choice("mode", c.mode, MODES)
    _choice("arch", c.arch, ARCHS)
    _choice("dataset", c.dataset, DATASETS)
    _choice("sampler", c.sampler, SAMPLERS)
    _choice("device", c.device, DEVICES)
    _choice("dtype", c.dtype, DTYPES)
    _choice("on_divergence", c.on_divergence, ON_DIVERGENCE)
    _choice("init", c.init, ("auto", "randn", "torch"))
    _choice("loss", c.loss, ("auto",) + LOSSES)
    _choice("task", c.task, ("auto", "regression", "classification"))

    if c.mode in RAW_MODES and c.arch not in MLP_ARCHS:
        raise ConfigError(
            f"mode {c.mode!r} works on raw weight tensors, so it takes arch "
            f"{' or '.join(MLP_ARCHS)}; use mode nn or optim for {c.arch!r}"
        )
    if c.mode != "optim" and c.optimizer:
        raise ConfigError(
            f"an optimizer applies only to mode 'optim'; mode {c.mode!r} updates the weights by hand (w -= lr * grad)"
        )
    if c.mode == "optim":
        c.optimizer = c.optimizer or "adam"
        _choice("optimizer", c.optimizer, OPTIMIZERS)
    if c.nesterov and (c.optimizer != "sgd" or c.momentum <= 0):
        raise ConfigError("nesterov needs optimizer sgd with momentum > 0")

    if c.lr == 0:
        c.lr = default_lr(c.mode)
    if not math.isfinite(c.lr) or c.lr <= 0:
        raise ConfigError(f"learning rate must be a positive finite number, got {c.lr}")
    for k in ("momentum", "weight_decay"):
        v = getattr(c, k)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{k} must be a finite number >= 0, got {v}")
    for k in ("beta1", "beta2", "alpha"):
        v = getattr(c, k)
        if not 0 <= v < 1:
            raise ConfigError(f"{k} must be in [0, 1), got {v}")
    _positive("eps", c.eps)

    for k in ("batch_size", "d_in", "hidden", "d_out", "depth", "n_samples", "hist_bins", "flush_every", "image_size"):
        v = getattr(c, k)
        if v < 1:
            raise ConfigError(f"{k} must be at least 1, got {v}")
    if c.arch == "mlp" and c.depth < 1:
        raise ConfigError("mlp depth must be at least 1")
    if c.steps < 0 or c.epochs < 0 or (c.steps == 0 and c.epochs == 0):
        raise ConfigError("give a positive number of steps, or steps = 0 and a positive number of epochs")
    if c.num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {c.num_workers}")
    _positive("flush_seconds", c.flush_seconds)
    _positive("telemetry_seconds", c.telemetry_seconds)
    if c.telemetry_every < 0:
        raise ConfigError(f"telemetry_every must be >= 0 (0 = about once a second), got {c.telemetry_every}")

    if c.dataset == "csv":
        if not c.csv_path:
            raise ConfigError("dataset csv needs csv_path (--csv-path FILE)")
        if not os.path.isfile(c.csv_path):
            raise ConfigError(f"CSV file not found: {c.csv_path}")
        if not c.csv_target:
            raise ConfigError("dataset csv needs csv_target, the name of the target column")
    if c.dataset == "imagefolder" and not os.path.isdir(c.image_dir):
        raise ConfigError(f"image folder not found: {c.image_dir!r} (--image-dir DIR)")
    if c.pretrained and c.pretrained != "torchvision":
        if c.arch != "torchvision":
            raise ConfigError("pretrained weights apply to arch torchvision")
        if not os.path.isfile(c.pretrained):
            raise ConfigError(f"pretrained weights file not found: {c.pretrained}")
    if c.freeze_backbone and c.arch != "torchvision":
        raise ConfigError("freeze_backbone applies to arch torchvision")

    _check_visdom(c)
    if c.init == "auto":  # the lecture's raw loops use torch.randn weights with lr 1e-6
        c.init = "randn" if (c.mode in RAW_MODES and c.arch == "two_layer") else "torch"
    return c


def _check_visdom(c):
    if c.visdom and c.visdom.lower() != "off":
        try:
            u = urlsplit(c.visdom if "://" in c.visdom else "http://" + c.visdom)
            _ = u.port  # parsing the port raises ValueError for a bad one
        except ValueError:
            u = None
        if u is not None and u.password is not None:  # never echo it: this line may be logged
            raise ConfigError(
                "visdom: put no password in the URL (the config is stored); set LIVEPROP_VISDOM_PASSWORD instead"
            )
        if u is None or u.scheme not in ("http", "https") or not u.hostname:
            shown = repr(c.visdom) if "@" not in c.visdom else "the URL"
            raise ConfigError(f"visdom: {shown} is not a server URL like http://127.0.0.1:8097")
    if not 0 <= c.visdom_port <= 65535:
        raise ConfigError(f"visdom_port must be in 0..65535, got {c.visdom_port}")
