"""A small CNN on scikit-learn's 8x8 digits, in a loop of its own, watched by Liveprop.

Everything a real loop has: a DataLoader, AdamW, OneCycleLR, gradient clipping, autocast (bf16 on the CPU
or CUDA; fp16 on CUDA with a GradScaler), and a held-out accuracy at the end. Liveprop adds the lines marked
`# liveprop`: the dashboard shows the loss and the histograms, and Pause, Stop and Set lr reach the loop
(Stop ends it quietly; Set lr scales the OneCycle schedule, which goes on from the new rate). It prints the
learning rate it ended with.

    python examples/digits_cnn.py --epochs 20
"""

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import liveprop  # liveprop


def args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="OneCycleLR's max_lr")
    p.add_argument("--clip", type=float, default=1.0, help="gradient clipping: the largest total norm")
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16", help="fp16: CUDA only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="digits-cnn")
    return p.parse_args()


def data(batch_size: int, device: torch.device):
    """Train and test loaders: the digits scaled to [0, 1], 1,500 to train on, the rest held out."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x))
    train, test = order[:1500], order[1500:]
    loader = DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True)
    return loader, (x[test].to(device), y[test].to(device))


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 4, 4)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),  # (B, 32, 4, 4)
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )  # fmt: skip


def main():
    a = args()
    torch.manual_seed(a.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loader, (x_test, y_test) = data(a.batch_size, device)
    net = model().to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=a.lr, total_steps=a.epochs * len(loader))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # bf16 needs no scaling
    loss_fn = nn.CrossEntropyLoss()
    with liveprop.watch(net, optimizer, name=a.name, config=vars(a), total_steps=a.epochs * len(loader),  # liveprop
                        batch_size=a.batch_size) as run:  # fmt: skip
        for _ in range(a.epochs):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    loss = loss_fn(net(x), y)
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), a.clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                run.step(loss)  # liveprop
    with torch.no_grad():
        accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
    print(f"held-out accuracy {accuracy:.3f}")
    print(f"final lr {optimizer.param_groups[0]['lr']:.9g}")


if __name__ == "__main__":
    main()
