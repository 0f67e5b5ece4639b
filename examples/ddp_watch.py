"""A small regression trained with DistributedDataParallel, watched by Liveprop: under torchrun each process
trains on its share of every batch, rank 0 records the run, and every rank applies the dashboard's Pause, Stop
and Set lr at the same step. On one process (plain python) it is the same loop without DDP, and records the
same losses. Each rank prints its rate at every step, as one line of JSON at the end.

    torchrun --standalone --nproc-per-node 2 examples/ddp_watch.py
    python examples/ddp_watch.py
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn

import liveprop  # liveprop

D_in, H = 8, 16


def args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32, help="the whole batch, shared by the processes")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--pace", type=float, default=0.0, help="seconds to sleep after each step, to steer by hand")
    p.add_argument("--name", default="ddp-watch")
    return p.parse_args()


def main():
    a = args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    torch.manual_seed(0)  # the same starting weights on every rank
    net = nn.Sequential(nn.Linear(D_in, H), nn.Tanh(), nn.Linear(H, 1))
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.steps * a.batch_size, D_in, generator=g)
    y = x.sum(1, keepdim=True).sin()
    optimizer = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    rates = []
    with liveprop.watch(model, optimizer, name=a.name, config=vars(a), total_steps=a.steps) as run:  # liveprop
        for step in range(a.steps):
            batch = slice(step * a.batch_size, (step + 1) * a.batch_size)
            xb, yb = x[batch][rank::world], y[batch][rank::world]  # this rank's rows of the batch
            loss = nn.functional.mse_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.step(loss)  # liveprop
            rates.append(optimizer.param_groups[0]["lr"])
            time.sleep(a.pace)
    print(json.dumps({"rank": rank, "world": world, "lr": rates}), flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
