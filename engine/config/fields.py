"""RunConfig: every knob of a run, its default, what it means, its allowed values, and where it applies.

The CLI builds its flags from these fields, the dashboard its widgets, and the store keeps the
config as JSON. Each field's facts live once, in its metadata (knob below): --help and the
dashboard's help say the same thing (help_for); where a field applies (`where`) feeds
engine/config/reasons.py, the one judge of a config, which the sidebar greys out from and
validate() refuses from; `path` marks the fields that name files; `kept` the fields a fork keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

MODES = ("manual", "autograd", "custom_function", "nn", "optim")
RAW_MODES = ("manual", "autograd", "custom_function")  # raw tensors, MLP family only
MLP_ARCHS = ("two_layer", "mlp")
ARCHS = MLP_ARCHS + ("parallel_block", "cnn", "torchvision")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
LOSSES = ("sse", "mse", "cross_entropy")
PLAYGROUND_2D = ("moons", "circles", "spiral", "xor", "gaussians")  # two classes of points in the plane
PLAYGROUND_1D = ("sine", "abs", "step", "poly")  # a curve y(x) to fit
PLAYGROUND = PLAYGROUND_2D + PLAYGROUND_1D  # drawn from the seed (engine/build/playground.py)
DATASETS = ("random", "teacher", "digits", "csv", "imagefolder", "mnist", "fashion_mnist", "cifar10") + PLAYGROUND
SAMPLERS = ("none", "random", "sequential", "balanced")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "tf32", "bf16")
ON_DIVERGENCE = ("pause", "stop", "ignore")
INITS = ("auto", "lecture", "randn", "torch")
LOSSES_AUTO = ("auto",) + LOSSES
TASKS = ("auto", "regression", "classification")
GENERATED = ("random", "teacher")  # drawn here from the seed, n_samples of d_in features
IN_MEMORY = (
    GENERATED + ("digits", "csv") + PLAYGROUND
)  # held as tensors (engine/build/data.py TensorData), the rest loaded


def knob(
    default,
    help: str,
    choices: tuple = (),
    bounds: tuple = (),
    excluded=None,
    where: dict | None = None,
    strict: bool = False,
    path: tuple | None = None,
    kept: bool = False,
):
    """A RunConfig field: its default, one line on what it means, and its allowed values: the choices
    of a choice, the (lowest, highest) of a number, both allowed unless one is `excluded`. The CLI's
    --help and the dashboard's widgets read them through help_for and choices_for.

    where: {other field: the values with which this one applies}, every one of them; elsewhere the field
    does not apply. strict: a value other than the default where the field does not apply is refused
    (else it is ignored). path: the field names a file or folder, except for these values. kept: the
    field is part of the model or the data, which a fork keeps."""
    meta = {"help": help, "choices": choices, "bounds": bounds, "excluded": excluded}
    return field(default=default, metadata=meta | {"where": where or {}, "strict": strict, "path": path, "kept": kept})


# Where fields apply (knob's `where`)
OPTIM = {"mode": ("optim",)}
TORCHVISION = {"arch": ("torchvision",)}
TABULAR = {"dataset": GENERATED}
CSV = {"dataset": ("csv",)}
IMAGEFOLDER = {"dataset": ("imagefolder",)}
DOWNLOADED = {"dataset": ("mnist", "fashion_mnist", "cifar10")}
NN = {"mode": ("nn", "optim")}
PLAYGROUNDS = {"dataset": PLAYGROUND}
HELD_OUT = {"dataset": tuple(d for d in DATASETS if d not in GENERATED)}


AT_HELP = (
    "scheduled actions, each STEP:ACTION, applied before step STEP runs (repeat --at for more): lr=X sets the "
    "learning rate, pause and stop, checkpoint writes one; e.g. --at 300:lr=1e-7 --at 500:pause"
)
RULE_HELP = (
    "rules checked at each flush (repeat --rule for more): plateau:K:EFFECT when the loss has not fallen below "
    "its lowest for K flushes; spike:k:EFFECT when a layer's gradient norm is over k times its running median; "
    "ratio:A:B:K:EFFECT when a layer's update ratio is outside [A, B] for K flushes; EFFECT is lr*F (the "
    "learning rate times F), pause or banner (a line on the Train page); e.g. --rule spike:10:pause "
    "--rule plateau:5:lr*0.5 --rule ratio:1e-4:1e-2:3:banner"
)


# Bounds keep every number inside what Python, torch, int64 and SQLite can hold, so that a config
# that passes validate() never crashes the worker; what is allowed but does not fit in memory is
# refused by the memory check (engine/build/assemble.py).
SIZE = (1, 2**30)  # a (SIZE, SIZE) weight still has a byte count torch can compute, even in float64
# epochs up to 10**6: times the steps of an epoch (up to n_samples, 10**12) it is still an int64 the store keeps
MAX_PACE = 1e6  # steps per second: beyond it a cap means nothing
MAX_SECONDS = 3600.0  # between flushes and telemetry steps: an hour is already no live view
MAX_TEXT = 4096  # characters in a string field: Linux's PATH_MAX


# A table, one line per knob: the formatter leaves it aligned.
# fmt: off
@dataclass
class RunConfig:
    # what to train
    mode: str = knob("manual",           "the training loop, one file each in engine/modes/", MODES,
                                         kept=True)
    arch: str = knob("two_layer",        "the network", ARCHS,
                                         kept=True)
    tv_model: str = knob("resnet18",     "torchvision model name, when arch is torchvision",
                                         where=TORCHVISION, kept=True)
    pretrained: str = knob("",           '"" | path to a state_dict file | "torchvision" (weights API, needs network)',
                                         where=TORCHVISION, strict=True, path=("", "torchvision"), kept=True)
    freeze_backbone: bool = knob(False,  "torchvision: train only the new head",
                                         where=TORCHVISION, strict=True, kept=True)
    d_in: int = knob(1000,               "D_in, input features (tabular data); the lecture's sizes", bounds=SIZE,
                                         where=TABULAR, kept=True)
    hidden: int = knob(100,              "H, hidden width", bounds=SIZE,
                                         where={"arch": MLP_ARCHS + ("parallel_block", "cnn")}, kept=True)
    d_out: int = knob(10,                "D_out, outputs (regression targets); classes come from the data",
                                         bounds=SIZE,
                                         where=TABULAR, kept=True)
    depth: int = knob(2,                 "mlp: number of Linear layers", bounds=(1, 64),
                                         where={"arch": ("mlp",)}, kept=True)
    bias: bool = knob(True,              "Linear layers carry a bias (the lecture's raw-tensor net has none)",
                                         kept=True)
    init: str = knob("auto",             "lecture: the lecture's own draws after torch.manual_seed(seed): x, y, then "
                                         "w1, w2 (raw modes, no biases) or its nn.Sequential (nn, optim, with biases), "
                                         "for two_layer on one full batch of random data; "
                                         "randn: torch.randn weights; torch: nn.Linear's init; "
                                         "auto: lecture where it fits (nn, optim: with bias), "
                                         "else randn for a raw mode on two_layer, else torch", INITS,
                                         kept=True)
    loss: str = knob("auto",             "sse: the lecture's sum of squares; "
                                         "auto: cross_entropy for classes, else sse (raw modes) or mse", LOSSES_AUTO,
                                         kept=True)
    # how to train
    optimizer: str = knob("",            'mode optim only; "" means adam there', OPTIMIZERS,
                                         where=OPTIM, strict=True)
    lr: float = knob(0.0,                "0 means the lecture's rate for the mode (1e-6 raw, 1e-2 nn, 1e-4 optim)",
                                         bounds=(0, 1e6))
    momentum: float = knob(0.0,          "momentum, for sgd and rmsprop", bounds=(0, 1),
                                         where=OPTIM | {"optimizer": ("sgd", "rmsprop")})
    nesterov: bool = knob(False,         "Nesterov momentum, for sgd (needs momentum > 0)",
                                         where=OPTIM | {"optimizer": ("sgd",)}, strict=True)
    beta1: float = knob(0.9,             "adam, adamw: decay of the gradient's running mean", bounds=(0, 1), excluded=1,
                                         where=OPTIM | {"optimizer": ("adam", "adamw")})
    beta2: float = knob(0.999,           "adam, adamw: decay of the squared gradient's running mean",
                                         bounds=(0, 1), excluded=1,
                                         where=OPTIM | {"optimizer": ("adam", "adamw")})
    eps: float = knob(1e-8,              "adam, adamw, rmsprop, adagrad: added to the denominator",
                                         bounds=(0, 1), excluded=0,
                                         where=OPTIM | {"optimizer": ("adam", "adamw", "rmsprop", "adagrad")})
    weight_decay: float = knob(0.0,      "L2 penalty, for every optimizer", bounds=(0, 1e3),
                                         where=OPTIM)
    alpha: float = knob(0.99,            "rmsprop: smoothing constant", bounds=(0, 1), excluded=1,
                                         where=OPTIM | {"optimizer": ("rmsprop",)})
    steps: int = knob(500,               "the lecture's loop length; 0 means use epochs", bounds=(0, 10**12))
    epochs: int = knob(0,                "used when steps is 0", bounds=(0, 10**6))
    until_stopped: bool = knob(False,    "train until Stop (or Ctrl-C); steps and epochs are not used")
    pace: float = knob(0.0,              "at most this many steps per second, so a class can watch; 0 = full speed",
                                         bounds=(0, MAX_PACE))
    seed: int = knob(0,                  "torch.manual_seed for the weights; the data draws from seed + 1, "
                                         "except with init lecture, which draws x and y first, as the lecture does",
                                         bounds=(0, 2**63 - 2),
                                         kept=True)
    device: str = knob("auto",           "auto picks cuda when there is one, and says so", DEVICES,
                                         kept=True)
    dtype: str = knob("float32",         "float64 for the gradient-equivalence checks", DTYPES,
                                         kept=True)
    precision: str = knob("fp32",        "modes nn and optim; tf32: float32 matmuls and convolutions in TensorFloat-32 "
                                         "on CUDA (no effect on the CPU); bf16: forward pass and loss under autocast "
                                         "to bfloat16, on CUDA or the CPU", PRECISIONS,
                                         where=NN | {"dtype": ("float32",)}, strict=True)
    fast: bool = knob(False,             "capture the whole step as a CUDA graph and replay many steps per Python "
                                         "iteration (engine/loop/fast.py); CUDA, one full batch in memory, one process")
    compile: bool = knob(False,          "nn, optim: the model through torch.compile (the first step waits for "
                                         "the compiler: seconds to a minute)",
                                         where=NN | {"nproc": (1,), "nnodes": (1,)}, strict=True)
    nproc: int = knob(1,                 "processes on this machine (torchrun --nproc-per-node), data-parallel: each "
                                         "takes its share of the batch; gloo on the CPU, nccl on CUDA",
                                         bounds=(1, 256))
    nnodes: int = knob(1,                "machines (torchrun --nnodes); the others run `python -m engine join RUN`",
                                         bounds=(1, 1024))
    rdzv_endpoint: str = knob("",        "nnodes > 1: host:port of the c10d rendezvous (torchrun --rdzv-endpoint)")
    deterministic: bool = knob(False,    "torch's deterministic algorithms only: two runs are bit-identical; "
                                         "an op without one fails the run, named")
    # data
    dataset: str = knob("random",        "random: the lecture's torch.randn x and y; "
                                         "teacher: regression against a fixed random network; "
                                         "moons ... poly: the playground sets (engine/build/playground.py)", DATASETS,
                                         kept=True)
    n_samples: int = knob(64,            "random/teacher: dataset size (64 = the lecture's one full batch)",
                                         bounds=(1, 10**12),
                                         where=TABULAR, kept=True)
    points: int = knob(500,              "playground sets: points drawn, training and test together", bounds=(2, 10**7),
                                         where=PLAYGROUNDS, kept=True)
    noise: float = knob(0.1,             "playground sets: the spread added to each point (2D) or target (1D)",
                                         bounds=(0, 10), where=PLAYGROUNDS, kept=True)
    holdout: float = knob(0.2,           "the share of the samples held out as a test split, at most 1000 of them "
                                         "(the torchvision sets: of their own test split), whose loss and accuracy "
                                         "are measured at every snapshot; 0 = none", bounds=(0, 0.9),
                                         where=HELD_OUT, kept=True)
    batch_size: int = knob(64,           "N, samples per step", bounds=SIZE,
                                         kept=True)
    shuffle: bool = knob(True,           "reshuffle the data every epoch (without a sampler)",
                                         kept=True)
    sampler: str = knob("none",          "how batches are drawn: random with replacement, balanced by class", SAMPLERS,
                                         kept=True)
    num_workers: int = knob(0,           "DataLoader worker processes; 0 loads in the training process",
                                         bounds=(0, 64),
                                         kept=True)
    csv_path: str = knob("",             "dataset csv: the file",
                                         where=CSV, path=("",), kept=True)
    csv_target: str = knob("",           "dataset csv: the target column's name",
                                         where=CSV, kept=True)
    task: str = knob("auto",             "csv: what the target column is; "
                                         "auto: classes when whole numbers with at most 20 values", TASKS,
                                         where=CSV, kept=True)
    image_dir: str = knob("",            "dataset imagefolder: the folder, one subfolder per class",
                                         where=IMAGEFOLDER, path=("",), kept=True)
    image_size: int = knob(32,           "imagefolder: images are resized to this many pixels a side",
                                         bounds=(1, 4096),
                                         where=IMAGEFOLDER, kept=True)
    data_root: str = knob("data",        "torchvision datasets are downloaded here",
                                         where=DOWNLOADED, path=(), kept=True)
    # telemetry and run control
    telemetry_every: int = knob(0,       "K: histograms, norms, ratios, gradient check every K steps; "
                                         "0 = auto, about once per telemetry_seconds of training", bounds=(0, 10**12))
    telemetry_seconds: float = knob(1.0, "with telemetry_every 0: seconds of training between telemetry steps",
                                         bounds=(0, MAX_SECONDS), excluded=0)
    hist_bins: int = knob(64,            "bins per histogram", bounds=(1, 4096))
    flush_seconds: float = knob(0.5,     "host transfers: at most this many seconds apart (or flush_every steps)",
                                         bounds=(0, MAX_SECONDS), excluded=0)
    flush_every: int = knob(2000,        "host transfers: at most this many steps apart (or flush_seconds)",
                                         bounds=(1, 10**12))
    checkpoint_seconds: float = knob(60.0, "a resumable checkpoint this often, and at the end; 0 = only at the end",
                                         bounds=(0.0, 86400.0))
    on_divergence: str = knob("pause",   "what to do when the loss goes non-finite", ON_DIVERGENCE)
    at: tuple = knob((),                 AT_HELP)
    rule: tuple = knob((),               RULE_HELP)
    name: str = knob("",                 "a label for the run")
    # remote sinks (engine/sinks/). No password here: the store keeps this config as JSON
    visdom: str = knob("",               'Visdom server URL, e.g. http://127.0.0.1:8097; '
                                         '"" = $LIVEPROP_VISDOM_URL or off; "off" = off')
    visdom_port: int = knob(0,           "overrides the URL's port (0: the URL's, else 8097)", bounds=(0, 65535))
    visdom_base_url: str = knob("",      "the server's -base_url, e.g. /visdom")
    visdom_env: str = knob("",           '"" = liveprop_<name>-<run id>')
    visdom_username: str = knob("",      "for -enable_login; the password is read from $LIVEPROP_VISDOM_PASSWORD only")
    visdom_timeout: float = knob(0.0,    "seconds each request to Visdom may take; 0 = $LIVEPROP_VISDOM_TIMEOUT or 5",
                                         bounds=(0, MAX_SECONDS))
    tensorboard_dir: str = knob("",      'write TensorBoard event files under DIR/<run>; "" = off',
                                         path=("",))

    @property
    def world(self) -> int:
        """Processes that train the run together: nproc on each of nnodes machines."""
        return self.nproc * self.nnodes


# fmt: on


def help_for(name: str) -> str:
    """One line on a RunConfig field for people, the same in CLI --help and the dashboard's widgets:
    what it means, then its allowed values: a choice's choices, a number's bounds."""
    meta = FIELDS[name].metadata
    return (
        meta["help"]
        + (f"; one of: {', '.join(meta['choices'])}" if meta["choices"] else "")
        + (f"; {range_text(name)}" if meta["bounds"] else "")
    )


def choices_for(name: str) -> tuple:
    """A choice field's allowed values; () for a free one."""
    return FIELDS[name].metadata["choices"]


def range_text(name: str) -> str:
    """A number field's bounds as --help and its refusal say them: "between 0 and 1, 1 excluded"."""
    meta, form = FIELDS[name].metadata, "g" if isinstance(FIELDS[name].default, float) else "d"
    (lo, hi), excluded = meta["bounds"], meta["excluded"]
    return f"between {lo:{form}} and {hi:{form}}" + ("" if excluded is None else f", {excluded:{form}} excluded")


FIELDS = {f.name: f for f in fields(RunConfig)}


def default_lr(mode: str) -> float:
    """The lecture's learning rates (its raw loops use sum-of-squares loss and randn weights)."""
    return {"manual": 1e-6, "autograd": 1e-6, "custom_function": 1e-6, "nn": 1e-2, "optim": 1e-4}[mode]


PATHS = {name: f.metadata["path"] for name, f in FIELDS.items() if f.metadata["path"] is not None}
KEPT_BY_FORK = tuple(name for name, f in FIELDS.items() if f.metadata["kept"])
