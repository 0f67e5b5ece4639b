"""The batches the trainer consumes: Batches gives (x, y) on the device forever, and says where it is,
so that a resumed run goes on with the same batch (engine/loop/checkpoint.py).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler, WeightedRandomSampler

from engine.build.data import TensorData, _whole_batch
from engine.errors import ConfigError


def _adapt(x, y, cfg, spec, device, dtype, channels):
    x = x.to(device, dtype, non_blocking=True)
    if channels and x.dim() == 4 and x.shape[1] != channels:  # grayscale into a 3-channel network
        x = x.expand(-1, channels, -1, -1)
    y = y.to(device, non_blocking=True)
    if spec.task == "regression":
        y = y.to(dtype)
    return x, y


class Batches:
    """(x, y) on the device, forever: next(batches). position() and seek() put a resumed run at the same
    batch of the same epoch (engine/loop/checkpoint.py).

    A dataset in memory that fits in one batch (the lecture's case) moves to the device once and is
    returned as is, every step: full-batch gradient descent, no loader on the hot path. Anything else
    goes through a DataLoader. It draws its order from its own generator (seeded seed + 2), so an epoch's
    order follows from that generator's state at the epoch's start.

    On several processes (ranks, engine/loop/distributed.py) each takes its share of every batch: rows
    rank, rank + world, ... of the full batch, or of each global batch of a SharedOrder. Every rank's
    generator, seeded alike, draws the same orders, and so does one process: the same global batches
    for every world size.
    """

    def __init__(self, dataset, spec, cfg, device, dtype, channels=None, ranks=None):
        self.adapt = lambda x, y: _adapt(x, y, cfg, spec, device, dtype, channels)
        self.whole = None
        if isinstance(dataset, TensorData) and len(dataset) <= cfg.batch_size and cfg.sampler == "none":
            x, y = (dataset.x, dataset.y) if ranks is None else (ranks.shard(dataset.x), ranks.shard(dataset.y))
            self.whole = self.adapt(x, y)
            return
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)
        sampler = _sampler(dataset, spec, cfg, self.generator)
        if sampler is None:  # sampler none or sequential: one order for every world size
            rank, world = (ranks.rank, ranks.world) if ranks else (0, 1)
            shuffled = cfg.shuffle and cfg.sampler == "none"
            epoch = RandomSampler(dataset, generator=self.generator) if shuffled else SequentialSampler(dataset)
            order = dict(batch_sampler=SharedOrder(epoch, cfg.batch_size, rank, world))
        else:
            order = dict(sampler=sampler, batch_size=cfg.batch_size)
        self.loader = DataLoader(
            dataset,
            **order,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
            collate_fn=_whole_batch if isinstance(dataset, TensorData) else None,
            persistent_workers=cfg.num_workers > 0,
            generator=self.generator,
        )
        self.epoch, self.index, self._it, self._epoch_start = 0, 0, None, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.whole is not None:
            return self.whole
        while True:
            if self._it is None:
                self._epoch_start = self.generator.get_state()
                self._it = iter(self.loader)
            try:
                x, y = next(self._it)
                break
            except StopIteration:
                self._it, self.epoch, self.index = None, self.epoch + 1, 0
            except ConfigError as e:  # from a loader worker process, it comes wrapped in the worker's traceback
                raise ConfigError(_last_line(str(e))) from None
        self.index += 1
        return self.adapt(x, y)

    def position(self) -> dict | None:
        """None for the one full batch; else the epoch, the batches taken in it, and its generator state."""
        if self.whole is not None:
            return None
        start = self._epoch_start if self._it is not None else self.generator.get_state()
        return {"epoch": self.epoch, "index": self.index if self._it is not None else 0, "rng": start}

    def seek(self, position: dict) -> None:
        """Where position() was taken: the epoch's order again, and its first `index` batches skipped."""
        self.generator.set_state(position["rng"])
        self.epoch, self.index, self._it = position["epoch"], 0, None
        for _ in range(position["index"]):
            next(self)


class SharedOrder(Sampler):
    """One rank's batches of an epoch: the epoch's order (a RandomSampler's permutation, drawn from the
    run's generator, or a SequentialSampler's 0 .. n - 1), cut into global batches of batch_size, and rows
    rank, rank + world, ... of each. One process (rank 0 of 1) takes the global batches whole. A last
    global batch that does not split evenly loses its last rows (fewer than world), so that every rank
    takes as many."""

    def __init__(self, order: Sampler, batch_size: int, rank: int, world: int):
        self.order, self.batch_size, self.rank, self.world = order, batch_size, rank, world

    def __iter__(self):
        order = list(self.order)  # the epoch's order, drawn at its start: ints that torch's sampler made
        for start in range(0, len(order), self.batch_size):
            end = min(start + self.batch_size, len(order))
            end -= (end - start) % self.world
            if end > start:
                yield order[start + self.rank : end : self.world]


def _sampler(dataset, spec, cfg, generator):
    """The sampler that draws for one process (random, balanced); None for none and sequential (SharedOrder)."""
    if cfg.sampler == "random":
        return RandomSampler(dataset, replacement=True, generator=generator)
    if cfg.sampler == "balanced":
        if spec.task != "classification":
            raise ConfigError("sampler 'balanced' needs a classification dataset")
        labels = torch.as_tensor(dataset.y if isinstance(dataset, TensorData) else dataset.targets)
        weights = (1.0 / torch.bincount(labels).double())[labels]
        return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
    return None


def _last_line(message: str) -> str:
    """A ConfigError's own line, from the traceback a DataLoader worker process wraps it in (its last line,
    "engine.config.fields.ConfigError: ..."); a message of one line is returned as is."""
    line = message.splitlines()[-1] if message.strip() else message
    return line.removeprefix(f"{ConfigError.__module__}.{ConfigError.__qualname__}: ")
