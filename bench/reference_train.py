"""The usual way to train this net, for bench.process to time as a whole process.

    python bench/reference_train.py --root DIR [--epochs 2] [--batch-size 128] [--holdout 5000]

torchvision's MNIST (DIR/MNIST/raw), per-sample ToTensor + Normalize, a
DataLoader, the seed's SGD (lr 0.01, momentum 0.9) and Net with dropout 0.1,
float32; --holdout training images (the train stage's data.holdout_size)
validated after each epoch, the rest trained on. Only Net comes from this
project. bench.bench times the same loop (train_epoch) in its own process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stages.model import MEAN, STD, Net  # noqa: E402


def mnist(root: Path) -> datasets.MNIST:
    """torchvision's MNIST training set under root/MNIST/raw, with the usual per-sample transforms."""
    return datasets.MNIST(root, train=True, download=False,
                          transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))]))


def train_epoch(model: Net, optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device) -> int:
    """One epoch as the usual loop writes it, counting correct predictions as it goes; returns that count."""
    model.train()
    correct = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        out = model(x)
        F.cross_entropy(out, y).backward()
        optimizer.step()
        correct += (out.argmax(1) == y).sum().item()
    return correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--holdout", type=int, default=5000)
    args = parser.parse_args()

    torch.manual_seed(0)
    dataset = mnist(args.root)
    train_set, val_set = random_split(dataset, [len(dataset) - args.holdout, args.holdout])
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=1000)
    model = Net(dropout=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for epoch in range(1, args.epochs + 1):
        train_correct = train_epoch(model, optimizer, train_loader, torch.device("cpu"))
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x).argmax(1) == y).sum().item()
        print(f"epoch {epoch}: training accuracy {train_correct / len(train_set):.2%}, "
              f"validation accuracy {correct / len(val_set):.2%}", flush=True)


if __name__ == "__main__":
    main()
