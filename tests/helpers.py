"""What several test modules share: tiny generated IDX data, params edits by dotted key, file hashes."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import torch
import yaml

from stages import config, idx
from stages.train import Result, train

REPO = Path(__file__).resolve().parent.parent


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n learnable 28x28 'digits': class c is a bright square of side 4 + 2c, shifted up to 2 px, on noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.randint(0, 40, (n, 28, 28), generator=g, dtype=torch.uint8)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    for i, (c, (dy, dx)) in enumerate(zip(labels.tolist(), shifts.tolist(), strict=True)):
        side = 4 + 2 * c
        top, left = 14 - side // 2 + dy, 14 - side // 2 + dx
        images[i, max(top, 0):top + side, max(left, 0):left + side] = 255
    return images, labels.to(torch.uint8)


def write_dataset(directory: Path, n_train: int = 600, n_test: int = 200, gz: bool = False) -> dict[str, str]:
    """Write the four IDX files (optionally gzipped) into directory; return their uncompressed MD5s."""
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_images(n_train, seed=1)
    test_x, test_y = make_images(n_test, seed=2)
    tensors = {"train-images-idx3-ubyte": train_x, "train-labels-idx1-ubyte": train_y,
               "t10k-images-idx3-ubyte": test_x, "t10k-labels-idx1-ubyte": test_y}
    md5 = {}
    for name, tensor in tensors.items():
        data = idx.encode(tensor)
        md5[name] = idx.md5(data)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return md5


def default_train() -> config.Train:
    """The train section of the shipped params.yaml."""
    return config.load(REPO / "params.yaml").train


def fit(tiny: dict[str, torch.Tensor], **overrides: Any) -> Result:
    """stages.train.train on the `tiny` fixture's data: the shipped recipe at batch 32, fp32, with overrides."""
    cfg = default_train().model_copy(update={"batch_size": 32, "lr": 0.05, "precision": "fp32", **overrides})
    return train(**tiny, cfg=cfg, dropout=0.0)


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """raw (parsed params.yaml) with `a.b.c` set to value, in place; returns raw."""
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


def set_param(root: Path, dotted: str, value: Any) -> None:
    """Edit root/params.yaml as `dvc exp run -S dotted=value` would."""
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(set_key(yaml.safe_load(path.read_text()), dotted, value), sort_keys=False))


def file_hashes(root: Path, *folders: str) -> dict[str, str]:
    """MD5 of every file under root (or under the named folders of it), by relative path."""
    tops = [root / f for f in folders] or [root]
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for top in tops for p in sorted(top.rglob("*")) if p.is_file()}
