"""Datasets (torch.utils.data.Dataset) and the batches the trainer consumes.

    random        the lecture's x = torch.randn(N, D_in), y = torch.randn(N, D_out); with init lecture,
                  build.lecture_draws draws them instead, in the lecture's order before the weights
    teacher       regression against a fixed random teacher network, so the curve means something
    digits        scikit-learn's bundled 8x8 digits (1797 real images, 10 classes)
    csv           a user's CSV: numeric columns, one of them the target
    imagefolder   torchvision.datasets.ImageFolder
    mnist, fashion_mnist, cifar10   torchvision datasets, downloaded to data_root when the network allows
    moons, circles, spiral, xor, gaussians, sine, abs, step, poly   the playground sets (engine/build/playground.py)

Every dataset but random and teacher keeps a test split apart (cfg.holdout of its samples, at most MAX_HELD_OUT,
drawn with seed + 3; the torchvision sets take theirs from their own test split): `load` gives the rest,
`held_out(cfg)` the test split as two tensors, which the snapshots evaluate (engine/loop/learned.py).

`describe(cfg)` says a dataset's shapes without loading it (for validation and memory checks);
`load(cfg)` builds it; engine/build/batches.py turns it into device batches.
A file that cannot be read is refused with one line naming it (ConfigError): a CSV that is not UTF-8
or has a cell over the csv module's 128 KiB limit, an image PIL cannot open (load_image; prepare
probes a sample first).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Subset

from engine.build import playground
from engine.config.fields import GENERATED, IN_MEMORY, PLAYGROUND, PLAYGROUND_2D
from engine.errors import ConfigError

IMAGE_ARCHS = ("cnn", "torchvision")
TORCHVISION_SETS = {  # name: (torchvision class, (C, H, W), classes)
    "mnist": ("MNIST", (1, 28, 28), 10),
    "fashion_mnist": ("FashionMNIST", (1, 28, 28), 10),
    "cifar10": ("CIFAR10", (3, 32, 32), 10),
}


@dataclass
class DataSpec:
    in_shape: tuple  # one sample's shape, e.g. (1000,) or (1, 8, 8)
    out_dim: int  # regression outputs, or number of classes
    task: str  # "regression" | "classification"
    n: int | None = None  # samples, when known without loading


class TensorData(Dataset):
    """In-memory samples. __getitems__ lets the DataLoader fetch a whole batch in one indexing."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, idx):
        idx = torch.as_tensor(idx)
        return self.x[idx], self.y[idx]


class Part(Subset):
    """Some of a loaded dataset's samples (an image folder's training split), with their labels as `targets`,
    which the balanced sampler reads (engine/build/batches.py)."""

    @property
    def targets(self):
        return [self.dataset.targets[i] for i in self.indices]


MAX_HELD_OUT = 1000  # test samples at most: every snapshot evaluates them all


def held_count(n: int, cfg) -> int:
    """How many of a dataset's n samples are held out as its test split (none for random and teacher)."""
    return 0 if cfg.dataset in GENERATED else min(int(n * cfg.holdout), MAX_HELD_OUT, n - 1)


def _split(n: int, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices of n samples, each in the samples' order: the test's are the first held_count(n) of a
    permutation drawn from seed + 3."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 3))
    k = held_count(n, cfg)
    return order[k:].sort().values, order[:k].sort().values


def _whole_batch(batch):  # collate_fn for TensorData: __getitems__ already made the batch
    return batch


# ---------------------------------------------------------------------------------------------
# CSV


def _rows(path: str) -> list[list[str]]:
    """The CSV's cells, read as UTF-8. A byte-order mark (Excel's "CSV UTF-8") is dropped, so the first
    column's name is what the file shows, and --csv-target can name it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                return list(reader)
            except csv.Error as e:  # e.g. "field larger than field limit (131072)": a cell over 128 KiB
                raise ConfigError(f"{path} line {reader.line_num}: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path} is not UTF-8 text; save the CSV as UTF-8 (not latin-1 or another encoding)"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None


def _shown(name: str) -> str:
    """A column's name as a message shows it: quoted when it holds a line break or another unprintable character,
    so that the message stays one line."""
    return name if name.isprintable() else repr(name)


def read_csv(path: str, target: str, task: str):
    """Parse a numeric CSV with a header. Every bad cell is reported by line and column."""
    rows = _rows(path)
    if not any(rows[1:]):  # no rows, or only blank lines after the header
        raise ConfigError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise ConfigError(f"{path}: no column named {target!r}; columns are: {', '.join(map(_shown, header))}")
    values = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ConfigError(f"{path} line {lineno}: {len(row)} cells, the header has {len(header)}")
        try:
            values.append([float(v) for v in row])
        except ValueError:
            col = next(i for i, v in enumerate(row) if not _is_number(v))
            raise ConfigError(f"{path} line {lineno}, column {header[col]!r}: {row[col]!r} is not a number") from None
    data = torch.tensor(values, dtype=torch.float64)
    if not torch.isfinite(data).all():
        raise ConfigError(f"{path}: contains nan or inf cells")
    if data.abs().max() > torch.finfo(torch.float32).max:  # the model trains in float32: it would be inf
        raise ConfigError(f"{path}: a cell is beyond float32's range (about 3.4e38)")
    t = header.index(target)
    y = data[:, t]
    x = torch.cat([data[:, :t], data[:, t + 1 :]], dim=1)
    if x.shape[1] == 0:
        raise ConfigError(f"{path}: no feature columns besides the target")
    if task == "auto":
        whole = bool((y == y.round()).all())
        task = "classification" if whole and len(y.unique()) <= 20 else "regression"
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12) if len(x) > 1 else x  # standardized features
    if task == "classification":
        classes, y = y.unique(return_inverse=True)
        return x.float(), y.long(), task, len(classes)
    return x.float(), y.float()[:, None], task, 1


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# describe and load


def describe(cfg) -> DataSpec:
    """Shapes and task of cfg's dataset, loading only what is small (CSV, digits)."""
    image = cfg.arch in IMAGE_ARCHS
    if cfg.dataset in ("random", "teacher"):
        if image:
            raise ConfigError(f"dataset {cfg.dataset!r} is tabular; arch {cfg.arch!r} needs images")
        return DataSpec((cfg.d_in,), cfg.d_out, "regression", cfg.n_samples)
    if cfg.dataset in PLAYGROUND:
        if image:
            raise ConfigError(
                f"dataset {cfg.dataset!r} is points, not images; use arch two_layer, mlp or parallel_block"
            )
        plane = cfg.dataset in PLAYGROUND_2D
        n = cfg.points - held_count(cfg.points, cfg)
        return DataSpec((2,) if plane else (1,), 2 if plane else 1, "classification" if plane else "regression", n)
    if cfg.dataset == "digits":
        return DataSpec((1, 8, 8) if image else (64,), 10, "classification", 1797 - held_count(1797, cfg))
    if cfg.dataset == "csv":
        if image:
            raise ConfigError(f"a CSV is tabular; arch {cfg.arch!r} needs images")
        x, _, task, out = read_csv(cfg.csv_path, cfg.csv_target, cfg.task)
        return DataSpec((x.shape[1],), out, task, len(x) - held_count(len(x), cfg))
    if cfg.dataset == "imagefolder":
        classes = [d for d in os.listdir(cfg.image_dir) if os.path.isdir(os.path.join(cfg.image_dir, d))]
        if not classes:
            raise ConfigError(f"{cfg.image_dir}: an image folder needs one sub-folder per class")
        shape = (3, cfg.image_size, cfg.image_size)
        return DataSpec(shape if image else (math.prod(shape),), len(classes), "classification")
    _, shape, classes = TORCHVISION_SETS[cfg.dataset]
    return DataSpec(shape if image else (math.prod(shape),), classes, "classification")


def _tensors(cfg, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """An in-memory dataset's x and y, all of its samples."""
    g = torch.Generator().manual_seed(cfg.seed + 1)  # data does not depend on the model's draws
    if cfg.dataset == "random":
        x = torch.randn(cfg.n_samples, cfg.d_in, generator=g)
        return x, torch.randn(cfg.n_samples, cfg.d_out, generator=g)
    if cfg.dataset == "teacher":
        x = torch.randn(cfg.n_samples, cfg.d_in, generator=g)
        w1 = torch.randn(cfg.d_in, cfg.hidden, generator=g) / math.sqrt(cfg.d_in)
        w2 = torch.randn(cfg.hidden, cfg.d_out, generator=g) / math.sqrt(cfg.hidden)
        return x, torch.tanh(x @ w1) @ w2
    if cfg.dataset in PLAYGROUND:
        return playground.draw(cfg.dataset, cfg.points, cfg.noise, cfg.seed + 1)
    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32) / 16.0
        return x.reshape(len(x), *spec.in_shape), torch.tensor(d.target)
    x, y, _, _ = read_csv(cfg.csv_path, cfg.csv_target, cfg.task)
    return x, y


def _images(cfg, spec, train: bool = True) -> Dataset:
    import torchvision.transforms as T

    flat = [T.Lambda(lambda t: t.flatten())] if len(spec.in_shape) == 1 else []
    if cfg.dataset == "imagefolder":
        import torchvision

        tf = T.Compose([T.Resize((cfg.image_size, cfg.image_size)), T.ToTensor(), *flat])
        return torchvision.datasets.ImageFolder(cfg.image_dir, transform=tf, loader=load_image)
    return _torchvision_set(cfg, T.Compose([T.ToTensor(), *flat]), train)


def load(cfg) -> tuple[Dataset, DataSpec]:
    """The samples trained on, without the held-out test split."""
    spec = describe(cfg)
    if cfg.dataset in IN_MEMORY:
        x, y = _tensors(cfg, spec)
        train, _ = _split(len(x), cfg)
        return TensorData(x[train], y[train]), spec
    images = _images(cfg, spec)
    if cfg.dataset == "imagefolder" and held_count(len(images), cfg):
        return Part(images, _split(len(images), cfg)[0].tolist()), spec
    return images, spec


def held_out(cfg) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The test split (x, y) on the host, the same samples every time for a config; None without one."""
    if cfg.dataset in GENERATED:
        return None
    spec = describe(cfg)
    if cfg.dataset in IN_MEMORY:
        x, y = _tensors(cfg, spec)
        _, test = _split(len(x), cfg)
    elif cfg.dataset == "imagefolder":
        images = _images(cfg, spec)
        _, test = _split(len(images), cfg)
    elif cfg.holdout:  # a torchvision set: a sample of its own test split
        images = _images(cfg, spec, train=False)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed + 3))
        test = order[: min(int(len(images) * cfg.holdout), MAX_HELD_OUT)]
    else:
        return None
    if not len(test):
        return None
    if cfg.dataset in IN_MEMORY:
        return x[test], y[test]
    pairs = [images[i] for i in test.tolist()]
    return torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def load_image(path: str):
    """ImageFolder's loader, as RGB. A file PIL cannot read fails the run with one line naming it: prepare
    probes only a sample of the folder (engine/build/checks.py), so a bad file elsewhere is found here."""
    from PIL import Image

    try:
        with open(path, "rb") as f, Image.open(f) as im:
            return im.convert("RGB")
    except Exception as e:  # PIL's UnidentifiedImageError, OSError (truncated), DecompressionBombError, ...
        raise ConfigError(unreadable_image(path, e)) from None


def unreadable_image(path: str, e: Exception) -> str:
    why = "an empty file" if os.path.isfile(path) and os.path.getsize(path) == 0 else type(e).__name__
    return f"image folder: {path} cannot be read as an image ({why}); remove or replace it"


def download_error(cfg, why: str) -> ConfigError:
    cls_name = TORCHVISION_SETS[cfg.dataset][0]
    return ConfigError(
        f"could not download {cls_name} into {os.path.abspath(cfg.data_root)} "
        f"({why}); download it on a machine with internet and copy the "
        f"{cls_name} folder into --data-root, or use --dataset digits, which ships "
        f"with scikit-learn"
    )


def _torchvision_set(cfg, transform, train: bool = True):
    import torchvision

    cls_name = TORCHVISION_SETS[cfg.dataset][0]
    try:
        return getattr(torchvision.datasets, cls_name)(cfg.data_root, train=train, download=True, transform=transform)
    except Exception as e:  # no network: urllib's URLError, or torchvision's RuntimeError
        raise download_error(cfg, type(e).__name__) from None


def steps_per_epoch(n: int, cfg) -> int:
    return max(1, math.ceil(n / cfg.batch_size))
